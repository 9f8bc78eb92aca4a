"""Models, images and settings for the Python API: the CLI's config dataclasses, no new names.

`load` builds the same denoiser as `model=<name>` on the command line (models.registry), and
`from_pipeline` wraps a diffusers Stable Diffusion pipeline that is already in memory.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from infodecomp.data.images import load_image
from infodecomp.data.records import ImageRef
from infodecomp.experiments.config import EstimatorConfig, ModelConfig, RunConfig
from infodecomp.models import capabilities
from infodecomp.models.device import DTYPES, resolve_device, resolve_dtype
from infodecomp.models.presets import PRESETS, AdapterOptions
from infodecomp.models.registry import load_model, model_source

# Keyword options of `load`: every `model.<option>` of the command line but name and path.
MODEL_OPTIONS: tuple[str, ...] = tuple(
    f.name for f in fields(ModelConfig) if f.name not in ("name", "path")
)
CAPABILITIES = (
    capabilities.ImageModel,
    capabilities.AttentionCapture,
    capabilities.DaamInversion,
    capabilities.ProbabilityFlow,
    capabilities.ExactLikelihood,
)

# What the API accepts as one image: a PIL image, a file path, a tensor [3, H, W] (ShapesWorld
# data-space tensors for the oracles; RGB in [-1, 1] for image models) or an H x W x 3 uint8
# array.
ImageLike = Image.Image | str | os.PathLike | torch.Tensor | np.ndarray


@dataclass(eq=False)
class Model:
    """A loaded model: the engine's denoiser and the settings it was built with.

    Attributes:
        denoiser: what the engine evaluates (`estimators.protocol.Denoiser`); what else it can do
            is told by the protocols of `models.capabilities` (see `capabilities`).
        config: the command line's `model` config (`experiments.config.ModelConfig`): preset
            name, path (hub id or folder), revision and adapter options.
        device: where the denoiser runs.
        dtype: weights dtype name ("float32", "float16" or "bfloat16"); estimates are float64.
    """

    denoiser: Any
    config: ModelConfig
    device: torch.device
    dtype: str

    @property
    def name(self) -> str:
        """The preset name, or the folder / hub id for `local`."""
        return (
            self.config.path
            if self.config.name == "local" and self.config.path
            else self.config.name
        )

    @property
    def source(self) -> dict[str, Any]:
        """Where the weights come from (preset, family, hub id or folder, revision), as meta.json
        records it."""
        return model_source(self.config)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """Names of the capability protocols (models.capabilities) the denoiser implements."""
        return tuple(p.__name__ for p in CAPABILITIES if isinstance(self.denoiser, p))

    @property
    def image_size(self) -> int | None:
        """Pixels per side the model resizes images to (None: it takes data-space tensors)."""
        size = getattr(self.denoiser, "image_size", None)
        return int(size) if isinstance(self.denoiser, capabilities.ImageModel) else size

    def __repr__(self) -> str:
        caps = ", ".join(self.capabilities) or "none"
        return (
            f"Model({self.name!r}, device={self.device}, dtype={self.dtype}, capabilities: {caps})"
        )


def _dtype_name(dtype: str | torch.dtype) -> str:
    """ "float32" | "float16" | "bfloat16" for a name or a torch dtype (a ValueError otherwise)."""
    tdtype = resolve_dtype(dtype)
    for name, d in DTYPES.items():
        if d == tdtype:
            return name
    raise ValueError(f"dtype {dtype} is not one of {list(DTYPES)}")


def load(
    model: str | os.PathLike | ModelConfig = "shapes-oracle",
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    **options: Any,
) -> Model:
    """Loads a model the command line knows, as `model=<name>` does.

    Args:
        model: a preset name ("shapes-oracle", "gaussian-oracle", "tiny-sd", "sd-2.1-base",
            "sd-2.1", "sd-1.5", "sd21-random"; see infodecomp.models.presets.PRESETS), a
            Hugging Face hub id or a folder written by `save_pretrained` (both loaded as
            `model=local model.path=<model>`), or a `ModelConfig`.
        device: "auto" (cuda, else mps, else cpu) or a torch device (`run.device`).
        dtype: weights dtype, "float32" | "float16" | "bfloat16" (`run.dtype`).
        **options: any other `model.<option>` of the command line: `revision`, `sigma0`
            (ShapesWorld oracle noise) and the adapter options `time_rule`, `latent`, `resize`,
            `image_size`, `compile`, `attn_processor` (models.presets.AdapterOptions).

    Returns:
        The loaded `Model`.

    Raises:
        TypeError: an option that is not a `model.<option>`.
        ValueError: an unknown preset or an option value outside its allowed set.
    """
    unknown = sorted(set(options) - set(MODEL_OPTIONS))
    if unknown:
        raise TypeError(f"load(): unknown options {unknown}; choose from {list(MODEL_OPTIONS)}")
    if isinstance(model, ModelConfig):
        cfg = replace(model, **options)
    elif str(model) in PRESETS:
        cfg = ModelConfig.of(str(model), **options)
    else:
        cfg = ModelConfig(name="local", path=os.fspath(model), **options)
    name = _dtype_name(dtype)
    dev = resolve_device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but CUDA is not available")
    return Model(load_model(cfg, dev, resolve_dtype(name)), cfg, dev, name)


def from_pipeline(pipe: Any, **options: Any) -> Model:
    """Wraps a loaded diffusers Stable Diffusion 1.x / 2.x pipeline (no copy of the weights).

    The pipeline's unet, vae, text_encoder, tokenizer and scheduler config become a
    `models.sd.StableDiffusionDenoiser` on the pipeline's device and dtype. The parts are put
    in eval mode without gradients and the UNet gets infodecomp's attention processor (the
    outputs are unchanged), so the pipeline keeps generating images as before.

    Args:
        pipe: e.g. `StableDiffusionPipeline.from_pretrained(..., torch_dtype=torch.float16)`.
        **options: adapter options (`time_rule`, `latent`, `resize`, `image_size`, `compile`,
            `attn_processor`; models.presets.AdapterOptions).

    Returns:
        The wrapped `Model`.

    Raises:
        TypeError: the pipeline lacks a part of the Stable Diffusion family.
    """
    from infodecomp.models.dynamics.schedule import DiscreteSchedule
    from infodecomp.models.families.sd import StableDiffusionDenoiser

    adapter = {f.name for f in fields(AdapterOptions)}
    unknown = sorted(set(options) - adapter)
    if unknown:
        raise TypeError(
            f"from_pipeline(): unknown options {unknown}; choose from {sorted(adapter)}"
        )
    parts = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
    lacking = [p for p in parts if getattr(pipe, p, None) is None]
    if lacking or getattr(pipe, "text_encoder_2", None) is not None:
        why = f"it lacks {', '.join(lacking)}" if lacking else "it has a second text encoder"
        raise TypeError(
            f"from_pipeline() wraps Stable Diffusion 1.x / 2.x pipelines (unet, vae, "
            f"text_encoder, tokenizer, scheduler); {type(pipe).__name__} does not fit: {why}"
        )
    device, tdtype = pipe.unet.device, pipe.unet.dtype
    opts = AdapterOptions(**options).check()
    denoiser = StableDiffusionDenoiser(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        schedule=DiscreteSchedule.from_config(dict(pipe.scheduler.config)),
        device=device,
        dtype=tdtype,
        options=opts,
    )
    path = getattr(getattr(pipe, "config", None), "_name_or_path", None) or None
    cfg = ModelConfig(name="local", path=path, **options)
    return Model(denoiser, cfg, device, _dtype_name(tdtype))


def as_model(model: Model | Any) -> Model:
    """A `Model`, or a bare denoiser (anything with encode_images / encode_conditions /
    eps_hat) wrapped as one."""
    if isinstance(model, Model):
        return model
    needed = ("encode_images", "encode_conditions", "eps_hat")
    if not all(callable(getattr(model, n, None)) for n in needed):
        raise TypeError(
            f"expected an infodecomp.api.Model (from load() or from_pipeline()) or a denoiser, "
            f"got {type(model).__name__}"
        )
    device = torch.device(getattr(model, "device", "cpu"))
    dtype = getattr(model, "dtype", None)
    dtype = dtype if isinstance(dtype, torch.dtype) else torch.float32
    return Model(model, ModelConfig(name=type(model).__name__), device, _dtype_name(dtype))


def settings(
    estimator: EstimatorConfig | None,
    run: RunConfig | None,
    *,
    n_samples: int | None = None,
    seed: int | None = None,
) -> tuple[EstimatorConfig, RunConfig]:
    """The command line's `estimator` and `run` configs, with the n_samples / seed shortcuts
    applied (they win over the configs)."""
    est = estimator or EstimatorConfig()
    rcfg = run or RunConfig()
    if n_samples is not None:
        est = replace(est, n_samples=int(n_samples))
    if seed is not None:
        rcfg = replace(rcfg, seed=int(seed))
    return est, rcfg


def _one_image(image: Any) -> tuple[Any, str | None]:
    """One image as the denoisers take it (PIL image or float tensor [3, H, W]) and its path."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(ImageRef(os.fspath(image))), os.fspath(image)
    if isinstance(image, Image.Image):
        return image, None
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4):
            return Image.fromarray(image).convert("RGB"), None
        image = torch.from_numpy(np.ascontiguousarray(image))
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or not image.is_floating_point():
            raise ValueError(
                f"image tensors must be float [C, H, W], got {image.dtype} {tuple(image.shape)}"
            )
        return image.detach().float().cpu(), None
    raise TypeError(
        "images must be PIL images, file paths, float tensors [C, H, W] or H x W x 3 uint8 "
        f"arrays, got {type(image).__name__}"
    )


def as_images(images: ImageLike | Sequence[ImageLike]) -> tuple[list[Any], list[str | None]]:
    """One image or many (a list, or a tensor [N, C, H, W]) -> (images, their paths or None)."""
    if isinstance(images, torch.Tensor):
        batch = [images] if images.dim() == 3 else list(images)
    elif isinstance(images, (str, os.PathLike, np.ndarray, Image.Image)):
        batch = [images]
    else:
        batch = list(images)
    if not batch:
        raise ValueError("no images given")
    pairs = [_one_image(im) for im in batch]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def check_for_model(model: Model, images: list[Any]) -> None:
    """A one-line error when images do not fit the model: models without the ImageModel
    capability (the oracles) take data-space tensors only."""
    if isinstance(model.denoiser, capabilities.ImageModel):
        return
    if any(not isinstance(im, torch.Tensor) for im in images):
        raise TypeError(
            f"{model.name} takes data-space tensors (for the ShapesWorld oracle [3, 16, 16], "
            "e.g. the images of infodecomp.data), not PIL images or files"
        )


def content_key(image: Any) -> str:
    """A key that seeds an image's (logsnr, eps) draws from its pixels alone (a PIL image or a
    tensor as `as_images` returns them), so its estimates do not depend on its position in the
    input or on the batching."""
    h = hashlib.blake2b(digest_size=8)
    if isinstance(image, torch.Tensor):
        data = image.detach().float().cpu().contiguous().numpy()
        h.update(f"tensor{data.shape}".encode())
        h.update(data.tobytes())
    else:
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()

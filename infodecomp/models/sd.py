"""Stable Diffusion (any diffusers checkpoint) as a Denoiser on the variance-preserving channel.

A DDPM UNet trained on x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps sees exactly our
z = sqrt(sigmoid(logsnr)) x + sqrt(sigmoid(-logsnr)) eps when abar_t = sigmoid(logsnr); z is
fed as is and only the timestep is looked up from logsnr (models/schedule.py).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.attention import (
    CrossAttentionRecorder,
    attention_information_maps,
    capture_cross_attention,
    daam_maps,
)
from infodecomp.models.device import resolve_device, resolve_dtype
from infodecomp.models.preprocess import RESIZE_MODES, mask_transform, to_model_input, upsample_map
from infodecomp.models.schedule import TIME_RULES, DiscreteSchedule, v_to_eps
from infodecomp.models.tokens import word_token_indices

PRESETS = {
    "sd-2.1-base": "stabilityai/stable-diffusion-2-1-base",
    "sd-2.1": "stabilityai/stable-diffusion-2-1",
    "sd-1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}
# Parts of a saved pipeline the adapter loads, and a file that proves each is there.
REQUIRED_PARTS = {
    "model_index.json": ("model_index.json",),
    "unet": ("unet/config.json",),
    "vae": ("vae/config.json",),
    "text_encoder": ("text_encoder/config.json",),
    "tokenizer": ("tokenizer/vocab.json", "tokenizer/tokenizer.json"),
    "scheduler": ("scheduler/scheduler_config.json",),
}


class ModelFolderError(FileNotFoundError):
    """A local model folder is missing or lacks parts of a diffusers pipeline."""


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1


def resolve_model_path(path: str | Path) -> str | Path:
    """A preset name, a hub id (returned as is) or a checked local folder (returned as a Path).

    Raises:
        ModelFolderError: a local folder is missing or lacks pipeline parts.
    """
    text = str(path)
    if text in PRESETS:
        return PRESETS[text]
    local = Path(text).expanduser()
    if not (isinstance(path, Path) or local.exists() or _looks_local(text)):
        return text
    fix = (
        "save a complete pipeline there with StableDiffusionPipeline.save_pretrained(folder), "
        f"or give a hub id (e.g. {PRESETS['sd-2.1-base']}) or a preset ({', '.join(PRESETS)})"
    )
    if not local.is_dir():
        raise ModelFolderError(f"model folder {local} does not exist; {fix}")
    missing = [
        k for k, files in REQUIRED_PARTS.items() if not any((local / f).is_file() for f in files)
    ]
    for part in ("unet", "vae", "text_encoder"):
        weights = [*(local / part).glob("*.safetensors"), *(local / part).glob("*.bin")]
        if part not in missing and not weights:
            missing.append(f"{part} weights")
    if missing:
        raise ModelFolderError(f"model folder {local} lacks {', '.join(missing)}; {fix}")
    return local


class StableDiffusionDenoiser:
    """Denoiser protocol over a diffusers Stable Diffusion checkpoint (UNet, VAE, CLIP text).

    Build it with `from_pretrained`. Conditions are prompts ("" is the unconditional); images are
    PIL images or [3, H, W] float tensors in [-1, 1]. eps_hat always returns float32.
    """

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        schedule: DiscreteSchedule,
        *,
        device: torch.device,
        dtype: torch.dtype,
        time_rule: str = "nearest",
        latent: str = "mean",
        resize: str = "squash",
        image_size: int | None = None,
        compile: bool = False,
        seed: int = 0,
        vae_batch: int = 8,
    ) -> None:
        if time_rule not in TIME_RULES:
            raise ValueError(f"time_rule '{time_rule}' is not one of: {', '.join(TIME_RULES)}")
        if latent not in ("mean", "sample"):
            raise ValueError(f"latent '{latent}' is not one of: mean, sample")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize '{resize}' is not one of: {', '.join(RESIZE_MODES)}")
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.schedule, self.device, self.dtype = schedule, device, dtype
        self.time_rule, self.latent, self.resize = time_rule, latent, resize
        self.seed, self.vae_batch = seed, vae_batch
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.image_size = int(image_size or unet.config.sample_size * self.vae_scale_factor)
        if self.image_size % self.vae_scale_factor:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the VAE factor {self.vae_scale_factor}"
            )
        self.latent_size = (self.image_size // self.vae_scale_factor,) * 2
        self.token_count = int(tokenizer.model_max_length)
        self.channels_last = device.type == "cuda"
        for m in (unet, vae, text_encoder):
            m.to(device=device).eval().requires_grad_(False)
            if m.dtype != dtype:  # from_pretrained already loads in the dtype; cast only the rest
                m.to(dtype=dtype)
        if self.channels_last:
            unet.to(memory_format=torch.channels_last)
        self._unet_call = torch.compile(unet) if compile else unet
        self._tracing = False
        self._prompt_cache: dict[str, torch.Tensor] = {}
        self._latent_cache: dict[Hashable, torch.Tensor] = {}
        self.prompt_encodes = 0
        self.image_encodes = 0

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "float32",
        time_rule: str = "nearest",
        latent: str = "mean",
        resize: str = "squash",
        image_size: int | None = None,
        compile: bool = False,
        attention: str = "sdpa",
        seed: int = 0,
    ) -> StableDiffusionDenoiser:
        """Loads a pipeline's components from a preset name, hub id or local folder.

        Args:
            path: a key of PRESETS, a hub id, or a folder written by `save_pretrained`.
            device: "auto" (cuda > mps > cpu) or a torch device.
            dtype: weights dtype of UNet, VAE and text encoder; outputs stay float32.
            time_rule: "nearest" integer timestep (published) or "continuous" fractional one.
            latent: "mean" of the VAE posterior (deterministic) or a seeded "sample" (published).
            resize: "squash" to image_size x image_size (published) or "center-crop" first.
            image_size: pixels per side; default unet sample_size x VAE factor (512 for SD 2.1 base).
            compile: torch.compile the UNet (eps_hat only; attention capture uses the plain UNet).
            attention: "sdpa" (AttnProcessor2_0) or "eager" (AttnProcessor).
            seed: seeds the VAE posterior samples when latent="sample".
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
        from transformers import CLIPTextModel, CLIPTokenizer

        src = resolve_model_path(path)
        if attention not in ("sdpa", "eager"):
            raise ValueError(f"attention '{attention}' is not one of: sdpa, eager")
        tdtype, dev = resolve_dtype(dtype), resolve_device(device)
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=tdtype)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", torch_dtype=tdtype)
        text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", dtype=tdtype)
        tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
        unet.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
        schedule = DiscreteSchedule.from_config(_scheduler_config(src))
        opts = dict(time_rule=time_rule, latent=latent, resize=resize, image_size=image_size)
        return cls(
            unet, vae, text_encoder, tokenizer, schedule, device=dev, dtype=tdtype, compile=compile, seed=seed, **opts
        )  # fmt: skip

    # --- Denoiser protocol -------------------------------------------------------------------

    @torch.no_grad()
    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise [B, 4, h, w] float32 for z [B, 4, h, w], logsnr [B], cond [B, 77, D].

        v-prediction models are converted with eps = a v + s z, (a, s) from the continuous
        logsnr that built z (exact for that z; see schedule.v_to_eps).
        """
        self.schedule.warn_out_of_range(logsnr)
        t = self.schedule.timestep(logsnr, self.time_rule).to(
            self.device, torch.float32, non_blocking=True
        )  # [B]
        zin = z.to(self.device, self.dtype)  # [B, 4, h, w]
        if self.channels_last:
            zin = zin.contiguous(memory_format=torch.channels_last)
        unet = self.unet if self._tracing else self._unet_call
        out = unet(
            zin, t, encoder_hidden_states=cond.to(self.device, self.dtype), return_dict=False
        )[0]
        if self.schedule.prediction_type == "v_prediction":
            return v_to_eps(out, z.to(self.device), logsnr.to(self.device))  # [B, 4, h, w]
        return out.float().contiguous()  # [B, 4, h, w]

    @torch.no_grad()
    def encode_conditions(self, conditions: Sequence[Hashable]) -> torch.Tensor:
        """Prompts -> CLIP encodings [K, 77, D], each distinct prompt encoded once per adapter."""
        bad = [c for c in conditions if not isinstance(c, str)]
        if bad:
            raise TypeError(f"Stable Diffusion conditions are prompt strings, got {bad[:3]!r}")
        todo = [p for p in dict.fromkeys(conditions) if p not in self._prompt_cache]
        for start in range(0, len(todo), 64):
            chunk = todo[start : start + 64]
            pad = dict(padding="max_length", max_length=self.token_count, truncation=True)
            ids = self.tokenizer(chunk, return_tensors="pt", **pad).input_ids  # [k, 77]
            for p in chunk:  # CLIP drops what does not fit; say so rather than hide it
                if len(self.tokenizer.tokenize(p)) + 2 > self.token_count:
                    warnings.warn(
                        f"prompt truncated to {self.token_count} tokens: {p!r}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            enc = self.text_encoder(ids.to(self.device))[0]  # [k, 77, D]
            for i, p in enumerate(chunk):
                self._prompt_cache[p] = enc[i]
            self.prompt_encodes += len(chunk)
        return torch.stack([self._prompt_cache[p] for p in conditions])  # [K, 77, D]

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[Any], keys: Sequence[Hashable] | None = None
    ) -> torch.Tensor:
        """Images -> scaled VAE latents [N, 4, h, w] float32 (on CPU), cached per key if keys are given.

        Preprocessing: `resize` ("squash": bicubic to image_size x image_size, no crop, as
        published; "center-crop": central square first), pixels mapped to [-1, 1], VAE
        posterior mean (or a sample seeded by (seed, key or position)), times scaling_factor.
        """
        if keys is not None and len(keys) != len(images):
            raise ValueError(
                f"got {len(keys)} keys for {len(images)} images; give one key per image or none"
            )
        todo = [i for i in range(len(images)) if keys is None or keys[i] not in self._latent_cache]
        fresh: dict[int, torch.Tensor] = {}
        for start in range(0, len(todo), self.vae_batch):
            idx = todo[start : start + self.vae_batch]
            px = torch.stack(
                [to_model_input(images[i], self.image_size, self.resize) for i in idx]
            )  # [b, 3, S, S]
            dist = self.vae.encode(px.to(self.device, self.dtype)).latent_dist
            lat = dist.mean.float()  # [b, 4, h, w]
            if self.latent == "sample":
                gens = [_key_gen(self.seed, keys[i] if keys else i) for i in idx]
                noise = torch.stack(
                    [torch.randn(lat.shape[1:], generator=g) for g in gens]
                )  # [b, 4, h, w]
                lat = lat + dist.std.float() * noise.to(lat.device)
            shift = getattr(self.vae.config, "shift_factor", None) or 0.0
            lat = (lat - shift) * self.vae.config.scaling_factor
            self.image_encodes += len(idx)
            for j, i in enumerate(idx):
                fresh[i] = lat[j].cpu()
                if keys is not None:
                    self._latent_cache[keys[i]] = fresh[i]
        rows = [fresh[i] if i in fresh else self._latent_cache[keys[i]] for i in range(len(images))]  # type: ignore[index]
        return torch.stack(rows)  # [N, 4, h, w]

    # --- images, masks, maps -----------------------------------------------------------------

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, 4, h, w] -> images [N, 3, H, W] in [0, 1], float32 on CPU."""
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        lat = (
            latents.to(self.device, self.dtype) / self.vae.config.scaling_factor + shift
        )  # [N, 4, h, w]
        out = self.vae.decode(lat, return_dict=False)[0]  # [N, 3, H, W] in [-1, 1]
        return ((out.float() + 1) / 2).clamp(0, 1).cpu()  # [N, 3, H, W]

    def mask_transform(
        self, mask: torch.Tensor, size: int | tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Resizes a ground-truth mask [H, W] the way images are resized; see `mask_transform`."""
        return mask_transform(mask, size or self.latent_size, self.resize)

    def mask_to_latent(
        self, mask: torch.Tensor, size: int | tuple[int, int] | None = None
    ) -> torch.Tensor:
        """A mask [H, W] on the latent grid (or `size`) as float 0 / 1 [h, w]."""
        return self.mask_transform(mask, size).float()

    @staticmethod
    def upsample_map(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Bilinear upsampling of a map [h, w] to `size`; returned unchanged when already that size."""
        return upsample_map(heat, size)

    # --- attention ---------------------------------------------------------------------------

    @contextmanager
    def trace(
        self, skip_lowest: bool = True, aggregation: str = "daam", pool_rows: bool = False
    ) -> Iterator[CrossAttentionRecorder]:
        """Captures cross-attention (attention.capture_cross_attention) of eps_hat calls inside."""
        with capture_cross_attention(
            self.unet, self.token_count, self.latent_size, skip_lowest, aggregation, pool_rows
        ) as rec:
            self._tracing = True
            try:
                yield rec
            finally:
                self._tracing = False

    def attention_maps(
        self,
        latent: torch.Tensor,
        prompt: str,
        logsnr: torch.Tensor,
        eps: torch.Tensor,
        max_batch: int = 64,
        aggregation: str = "daam",
    ) -> torch.Tensor:
        """Attention+Information maps [T, h, w]; see attention.attention_information_maps."""
        return attention_information_maps(
            self, latent, prompt, logsnr, eps, max_batch, aggregation=aggregation
        )

    def daam_maps(
        self, latent: torch.Tensor, prompt: str, n_steps: int = 50, aggregation: str = "daam"
    ) -> torch.Tensor:
        """DAAM maps [T, h, w] of a real image latent [4, h, w]; see attention.daam_maps."""
        return daam_maps(self, latent, prompt, n_steps, aggregation=aggregation)

    def word_map(
        self, maps: torch.Tensor, caption: str, word: str, occurrence: int | None = None
    ) -> torch.Tensor:
        """Mean of `maps` [T, h, w] over the word's token indices in the caption -> [h, w]."""
        return maps[word_token_indices(self.tokenizer, caption, word, occurrence)].mean(0)


def _scheduler_config(src: str | Path) -> dict[str, Any]:
    if isinstance(src, Path):
        return json.loads((src / "scheduler" / "scheduler_config.json").read_text())
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(src, subfolder="scheduler"))


def _key_gen(seed: int, key: Hashable) -> torch.Generator:
    from infodecomp.estimators.engine import item_generator

    return item_generator(seed, ("vae-sample", key))

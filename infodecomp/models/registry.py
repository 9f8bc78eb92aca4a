"""Model names -> denoisers. A plain dict registry; Stable Diffusion loads lazily."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from infodecomp.estimators.protocol import Denoiser

HUB_PRESETS = {
    "sd-2.1-base": "stabilityai/stable-diffusion-2-1-base",
    "sd-2.1": "stabilityai/stable-diffusion-2-1",
    "sd-1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}


def _shapes(cfg: Any, device: torch.device, dtype: torch.dtype) -> Denoiser:
    from infodecomp.models.oracles import ShapesOracle

    return ShapesOracle(sigma0=cfg.sigma0, device="cpu")


def _gaussian(cfg: Any, device: torch.device, dtype: torch.dtype) -> Denoiser:
    from infodecomp.models.oracles import GaussianOracle

    return GaussianOracle()


def _adapter_options(cfg: Any, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The Stable Diffusion adapter's keyword options from a model config."""
    return {
        "device": device,
        "dtype": dtype,
        "time_rule": cfg.time_rule,
        "latent": cfg.latent,
        "resize": cfg.resize,
        "image_size": cfg.image_size,
        "compile": cfg.compile,
    }


def _stable_diffusion(path: str | None) -> Callable[[Any, torch.device, torch.dtype], Denoiser]:
    def build(cfg: Any, device: torch.device, dtype: torch.dtype) -> Denoiser:
        from infodecomp.models.sd import StableDiffusionDenoiser

        source = cfg.path or path
        if source is None:
            from infodecomp.models.tiny_sd import tiny_sd_path

            source = str(tiny_sd_path())
        return StableDiffusionDenoiser.from_pretrained(
            source, **_adapter_options(cfg, device, dtype)
        )

    return build


def _sd21_random(cfg: Any, device: torch.device, dtype: torch.dtype) -> Denoiser:
    """The exact SD 2.1 base architecture with random weights (benchmarks, shape checks; no download)."""
    import tempfile
    from pathlib import Path

    from infodecomp.models.schedule import DiscreteSchedule
    from infodecomp.models.sd import StableDiffusionDenoiser
    from infodecomp.models.sd21_arch import SCHEDULER_CONFIG, build_sd21_base_random
    from infodecomp.models.tiny_sd import build_clip_tokenizer

    parts = build_sd21_base_random(device, dtype)
    tokenizer = build_clip_tokenizer(Path(tempfile.mkdtemp(prefix="infodecomp-clip-")))
    return StableDiffusionDenoiser(
        parts["unet"],
        parts["vae"],
        parts["text_encoder"],
        tokenizer,
        DiscreteSchedule.from_config(SCHEDULER_CONFIG),
        **_adapter_options(cfg, device, dtype),
    )


MODELS: dict[str, Callable[[Any, torch.device, torch.dtype], Denoiser]] = {
    "shapes-oracle": _shapes,
    "gaussian-oracle": _gaussian,
    "tiny-sd": _stable_diffusion(None),
    "local": _stable_diffusion(None),
    "sd21-random": _sd21_random,
    **{name: _stable_diffusion(hub) for name, hub in HUB_PRESETS.items()},
}


def is_oracle(name: str) -> bool:
    return name in ("shapes-oracle", "gaussian-oracle")


def load_model(cfg: Any, device: torch.device, dtype: torch.dtype) -> Denoiser:
    """Builds the denoiser named by cfg.name (or from cfg.path for any diffusers SD checkpoint)."""
    if cfg.name not in MODELS:
        import difflib

        close = difflib.get_close_matches(cfg.name, MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"model={cfg.name} is not a known model ({', '.join(MODELS)}).{hint} "
            "For another diffusers checkpoint use model=local model.path=<folder or hub id>."
        )
    if cfg.name == "local" and not cfg.path:
        raise ValueError("model=local needs model.path=<diffusers folder or hub id>")
    return MODELS[cfg.name](cfg, device, dtype)

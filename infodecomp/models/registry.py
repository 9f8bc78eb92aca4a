"""`model=<name>` -> a Denoiser: presets (models.presets) resolved through one family table (or a
preset's "<module>:<Class>" family, loaded with that class's from_pretrained).

A family is a function (model config, device, dtype, preset) -> Denoiser; diffusers families
load lazily, so the oracles and the tables never import diffusers.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from infodecomp.estimators.protocol import Denoiser
from infodecomp.models.presets import PRESETS, AdapterOptions, Preset

Family = Callable[[Any, torch.device, torch.dtype, Preset], Denoiser]


def _exact_options(cfg: Any, owner: str) -> None:
    """The exact oracles act on none of the adapter options: any set away from its default is
    refused in one line (model.dtype aside, which bench sets on every model it times)."""
    from infodecomp.models.families.pipeline import refuse_options

    opts = replace(AdapterOptions.from_config(cfg), dtype=None)
    refuse_options(opts, frozenset(), owner, universal=frozenset())


def _shapes(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
    from infodecomp.models.oracles.exact import ShapesOracle

    _exact_options(cfg, "the ShapesWorld oracle")
    return ShapesOracle(sigma0=cfg.sigma0, device="cpu")


def _gaussian(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
    from infodecomp.models.oracles.exact import GaussianOracle

    _exact_options(cfg, "the Gaussian oracle")
    return GaussianOracle()


def _converted(kind: str, base: Family) -> Family:
    """An exact oracle seen through a v-prediction or rectified-flow parametrisation."""

    def build(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
        from infodecomp.models.oracles.converted import ConvertedOracle

        return ConvertedOracle(base(cfg, device, dtype, preset), kind)  # type: ignore[return-value]

    return build


def _diffusers(class_path: str) -> Family:
    """A family loaded with `<class>.from_pretrained(model.path or the preset's hub id)`."""

    def build(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
        import importlib

        module, name = class_path.split(":")
        cls = getattr(importlib.import_module(module), name)
        source = cfg.path or preset.source
        if source is None:
            raise ValueError(f"model={cfg.name} needs model.path=<diffusers folder or hub id>")
        revision = (
            cfg.revision if cfg.revision is not None else (None if cfg.path else preset.revision)
        )
        return cls.from_pretrained(
            source, _options(cfg, preset), device=device, dtype=dtype, revision=revision
        )

    return build


def _tiny_sd(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
    from infodecomp.models.families.sd import StableDiffusionDenoiser
    from infodecomp.models.tiny.sd import tiny_sd_path

    source = cfg.path or str(tiny_sd_path())
    return StableDiffusionDenoiser.from_pretrained(
        source, _options(cfg, preset), device=device, dtype=dtype
    )


def _tiny(family: str, class_path: str) -> Family:
    """A tiny random-weight pipeline of `family` (models.tiny_families), built offline on first
    use and loaded through the family's `from_pretrained`, as a hub checkpoint would be."""

    def build(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
        from infodecomp.models.tiny.families import tiny_path

        source = cfg.path or str(tiny_path(family))
        return _diffusers(class_path)(_with_path(cfg, source), device, dtype, preset)

    return build


def _with_path(cfg: Any, path: str) -> Any:
    from types import SimpleNamespace

    fields = {k: getattr(cfg, k) for k in dir(cfg) if not k.startswith("_")}
    return SimpleNamespace(**{**fields, "path": path, "revision": None})


def _shapes_learned(trained: bool) -> Family:
    """The learned ShapesWorld model: the shipped weights (or model.path: a train-shapes run's
    model/ folder), or the same architecture with random weights."""

    def build(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
        from infodecomp.models.families import shapes_learned as sl

        if cfg.path:
            source = cfg.path
        elif trained:
            source = str(sl.shipped_path())
        else:
            source = str(sl.random_path())
        return sl.ShapesLearnedDenoiser.from_pretrained(
            source, _options(cfg, preset), device=device, dtype=dtype
        )

    return build


def _sd21_random(cfg: Any, device: torch.device, dtype: torch.dtype, preset: Preset) -> Denoiser:
    """The exact SD 2.1 base architecture with random weights (benchmarks, shape checks; no download)."""
    import tempfile
    from pathlib import Path

    from infodecomp.models.dynamics.schedule import DiscreteSchedule
    from infodecomp.models.families.sd import StableDiffusionDenoiser
    from infodecomp.models.tiny.sd import build_clip_tokenizer
    from infodecomp.models.tiny.sd21_arch import SCHEDULER_CONFIG, build_sd21_base_random

    parts = build_sd21_base_random(device, dtype)
    tokenizer = build_clip_tokenizer(Path(tempfile.mkdtemp(prefix="infodecomp-clip-")))
    return StableDiffusionDenoiser(
        **parts,
        tokenizer=tokenizer,
        schedule=DiscreteSchedule.from_config(SCHEDULER_CONFIG),
        device=device,
        dtype=dtype,
        options=_options(cfg, preset),
    )


FAMILIES: dict[str, Family] = {
    "shapes-oracle": _shapes,
    "gaussian-oracle": _gaussian,
    "shapes-oracle-v": _converted("v", _shapes),
    "shapes-oracle-flow": _converted("flow", _shapes),
    "gaussian-oracle-v": _converted("v", _gaussian),
    "gaussian-oracle-flow": _converted("flow", _gaussian),
    "tiny-sd": _tiny_sd,
    "shapes-learned": _shapes_learned(trained=True),
    "shapes-learned-random": _shapes_learned(trained=False),
    "sd21-random": _sd21_random,
    "stable-diffusion": _diffusers("infodecomp.models.families.sd:StableDiffusionDenoiser"),
    "sdxl": _diffusers("infodecomp.models.families.sdxl:SDXLDenoiser"),
    "sd3": _diffusers("infodecomp.models.families.sd3:SD3Denoiser"),
    "flux": _diffusers("infodecomp.models.families.flux:FluxDenoiser"),
    "pixart": _diffusers("infodecomp.models.families.pixart:PixArtDenoiser"),
    "tiny-sdxl": _tiny("sdxl", "infodecomp.models.families.sdxl:SDXLDenoiser"),
    "tiny-sd3": _tiny("sd3", "infodecomp.models.families.sd3:SD3Denoiser"),
    "tiny-flux": _tiny("flux", "infodecomp.models.families.flux:FluxDenoiser"),
    "tiny-pixart": _tiny("pixart", "infodecomp.models.families.pixart:PixArtDenoiser"),
}


def _options(cfg: Any, preset: Preset) -> AdapterOptions:
    """The config's adapter options, as they are: a preset's own options are the values of its
    `model=<name>` config (experiments.config: ModelConfig.of), so they can be reset there."""
    return AdapterOptions.from_config(cfg)


def model_source(cfg: Any) -> dict[str, Any]:
    """Where the weights of `model=<name>` come from, for meta.json: preset, family, hub id or
    folder, and the revision that is loaded (None: the repository's main branch or a folder)."""
    preset = PRESETS.get(cfg.name)
    if preset is None:
        return {"preset": cfg.name}
    source = cfg.path or preset.source
    revision = cfg.revision if cfg.revision is not None else (None if cfg.path else preset.revision)
    out = {"preset": preset.name, "family": preset.family, "source": source, "revision": revision}
    dtype = getattr(cfg, "dtype", None)
    if dtype:  # the model's own dtype overrides run.dtype (the large presets: bfloat16)
        out["dtype"] = dtype
    return out


def load_model(cfg: Any, device: torch.device, dtype: torch.dtype) -> Denoiser:
    """Builds the denoiser of preset cfg.name (with cfg.path for `local` or another folder)."""
    if cfg.name not in PRESETS:
        close = difflib.get_close_matches(cfg.name, PRESETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(
            f"model={cfg.name} is not a known model ({', '.join(PRESETS)}).{hint} "
            "For another diffusers checkpoint use model=local model.path=<folder or hub id>."
        )
    preset = PRESETS[cfg.name]
    return family_of(preset)(cfg, device, dtype, preset)


def family_of(preset: Preset) -> Family:
    """The preset's family: a FAMILIES key, or "<module>:<Class>" of a LatentDiffusionDenoiser
    subclass (loaded with its from_pretrained: a new family needs no line here)."""
    if preset.family in FAMILIES:
        return FAMILIES[preset.family]
    if ":" in preset.family:
        return _diffusers(preset.family)
    raise ValueError(
        f"preset {preset.name}: family {preset.family!r} is neither one of {', '.join(FAMILIES)} "
        "nor '<module>:<Class>'"
    )

"""What every command shares: device and dtype, the engine settings from the config."""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from typing import Any

import torch

from infodecomp.estimators.engine import EngineConfig
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.config import EstimatorConfig, check_device
from infodecomp.experiments.shim import hydra_main, run_dir  # noqa: F401  (re-exported)
from infodecomp.models.device import DTYPES
from infodecomp.models.device import resolve_device as _resolve_device
from infodecomp.models.device import resolve_dtype as _resolve_dtype


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, else mps, else cpu; a device this machine lacks is a ConfigError."""
    check_device(str(name))
    return _resolve_device(name)


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return _resolve_dtype(name)
    except ValueError:
        raise ValueError(f"run.dtype={name} is not one of {sorted(DTYPES)}") from None


def sampler_from(est: EstimatorConfig) -> LogsnrSampler:
    return LogsnrSampler(
        kind=est.sampler,
        mode=est.mode,
        loc=est.loc,
        scale=est.scale,
        clip=est.clip,
        low=est.low,
        high=est.high,
    )


def engine_config(
    est: EstimatorConfig, run: Any, *, pixel_maps: bool = False, n_samples: int | None = None
) -> EngineConfig:
    if est.n_samples < 1:
        raise ValueError(f"estimator.n_samples must be >= 1, got {est.n_samples}")
    return EngineConfig(
        n_samples=n_samples or est.n_samples,
        sampler=sampler_from(est),
        max_batch=run.batch_size,
        pixel_maps=pixel_maps,
        seed=run.seed,
    )


def to_dict(obj: Any) -> Any:
    return asdict(obj) if is_dataclass(obj) else obj


def shard() -> tuple[int, int]:
    """(rank, world size) from the torch.distributed launcher environment (torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

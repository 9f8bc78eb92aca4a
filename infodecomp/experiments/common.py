"""What every command shares: device and dtype, the engine settings from the config."""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from typing import Any

import torch

from infodecomp.estimators.engine import EngineConfig
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.checks import check_device
from infodecomp.experiments.config import EstimatorConfig
from infodecomp.experiments.shim import hydra_main, run_dir  # noqa: F401  (re-exported)
from infodecomp.models.device import DTYPES, use_device
from infodecomp.models.device import resolve_device as _resolve_device
from infodecomp.models.device import resolve_dtype as _resolve_dtype


def resolve_device(name: str) -> torch.device:
    """auto -> cuda, else mps, else cpu; a device this machine lacks is a ConfigError.

    Under a launcher, auto (or cuda) is this rank's GPU (models.device.resolve_device), made the
    process's current CUDA device.
    """
    check_device(str(name))
    device = _resolve_device(name)
    use_device(device)
    return device


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
    """(rank, world size) from the launcher's environment: torchrun / accelerate (RANK,
    WORLD_SIZE), or a submitit job of several tasks (hydra/launcher=slurm-*), see submitit_env."""
    submitit_env()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def submitit_env() -> dict[str, str]:
    """In a submitit job of several tasks (Slurm, or submitit's local executor), sets the
    torch.distributed variables from the job: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR (the job's first node) and MASTER_PORT (drawn from the job id). Variables a
    launcher already set are kept. Returns what it set ({} outside such a job)."""
    if not os.environ.get("SUBMITIT_EXECUTOR") or "RANK" in os.environ:
        return {}
    try:
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:  # a submitit job always has submitit; a stray variable does not
        return {}
    env = TorchDistributedEnvironment()
    if env.world_size <= 1:
        return {}
    names = {
        "RANK": env.rank,
        "WORLD_SIZE": env.world_size,
        "LOCAL_RANK": env.local_rank,
        "LOCAL_WORLD_SIZE": env.local_world_size,
        "MASTER_ADDR": env.master_addr,
        "MASTER_PORT": env.master_port,
    }
    if os.environ["SUBMITIT_EXECUTOR"] == "local":  # one machine: its loopback address
        names["MASTER_ADDR"] = "127.0.0.1"
    added = {k: str(v) for k, v in names.items() if k not in os.environ}
    os.environ.update(added)
    return added

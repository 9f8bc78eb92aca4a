"""What every command shares: the Hydra shim, device and dtype, model and data loading, run dirs."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from infodecomp import console
from infodecomp.estimators.engine import EngineConfig
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.config import EstimatorConfig, check_device, register
from infodecomp.models.device import DTYPES, use_device
from infodecomp.models.device import resolve_device as _resolve_device
from infodecomp.models.device import resolve_dtype as _resolve_dtype

log = logging.getLogger("infodecomp")


def hydra_main(command: str, run: Callable[[Any], Any]) -> Callable[[], Any]:
    """Wraps `run(cfg_dataclass)` as a Hydra main reading configs/<command>.yaml."""
    import hydra
    from omegaconf import OmegaConf

    from infodecomp.data.errors import DataError, MissingDataError
    from infodecomp.experiments.config import SCHEMAS, ConfigError, check_keys, check_values
    from infodecomp.experiments.runner import RunError
    from infodecomp.paths import config_dir
    from infodecomp.reporting.store import StoreError

    register()

    @hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")
    def _main(cfg: Any) -> Any:
        from tqdm.contrib.logging import logging_redirect_tqdm

        obj = None
        try:
            if command in SCHEMAS:
                check_keys(cfg, SCHEMAS[command], command)
            obj = OmegaConf.to_object(cfg)
            check_values(obj)
            with logging_redirect_tqdm():  # log lines print above progress bars, not through them
                return run(obj)
        except KeyboardInterrupt:
            where = _interrupted_run(obj)
            console.interrupted(command, where, resumable=where is not None)
        except (ConfigError, StoreError, RunError, DataError, MissingDataError) as err:
            # The message says what is wrong and what to do: one line, no traceback.
            console.fail(err, command, user=True)
            raise  # not reached: fail exits or re-raises
        except Exception as err:  # a user error ends here as one line (SystemExit); bugs re-raise
            if isinstance(err, torch.cuda.OutOfMemoryError):
                batch = getattr(getattr(obj, "run", None), "batch_size", "?")
                err = ValueError(
                    f"out of GPU memory ({str(err).splitlines()[0]}); lower run.batch_size "
                    f"(now {batch}) or use run.dtype=bfloat16"
                )
            console.fail(err, command)
            raise  # not reached: fail exits or re-raises

    return _main


def _interrupted_run(cfg: Any) -> Path | None:
    """The run directory of an interrupted command when it holds a results store (a run that
    resumes), else None."""
    from infodecomp.reporting.store import has_store

    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if HydraConfig.initialized() and not OmegaConf.is_missing(
            HydraConfig.get().runtime, "output_dir"
        ):
            path = Path(HydraConfig.get().runtime.output_dir)
        else:
            out = getattr(getattr(cfg, "run", None), "out_dir", None)
            path = Path(out) if out else None
    except Exception:  # nothing more to say than "interrupted"
        return None
    return path if path is not None and has_store(path) else None


def run_dir(cfg: Any, command: str) -> Path:
    """The run directory: Hydra's job output dir, else run.out_dir, else a fresh outputs/ folder."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        # Outside a Hydra job (e.g. run(cfg) after an in-process Hydra call) output_dir is unset.
        if HydraConfig.initialized() and not OmegaConf.is_missing(
            HydraConfig.get().runtime, "output_dir"
        ):
            path = Path(HydraConfig.get().runtime.output_dir)
            path.mkdir(parents=True, exist_ok=True)
            return path
    except ImportError:  # pragma: no cover - hydra is a hard dependency
        pass
    out = getattr(getattr(cfg, "run", None), "out_dir", None)
    path = Path(out) if out else Path("outputs") / command / time.strftime("%Y-%m-%d_%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path


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

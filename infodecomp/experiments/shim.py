"""The Hydra shim of every command (config checks, the help resolver, user errors as one line)
and its run directory, importable without torch (so that `aggregate` and `report`, which load no
model, never import it)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infodecomp import console
from infodecomp.experiments.config import register
from infodecomp.experiments.errors import ConfigError, RunError


def _known_errors() -> tuple[type[BaseException], ...]:
    """The errors whose message says what is wrong and what to do (one line, no traceback)."""
    from infodecomp.data.errors import DataError, MissingDataError
    from infodecomp.reporting.store import StoreError

    return (ConfigError, RunError, StoreError, DataError, MissingDataError)


def hydra_main(command: str, run: Callable[[Any], Any]) -> Callable[[], Any]:
    """Wraps `run(cfg_dataclass)` as a Hydra main reading configs/<command>.yaml."""
    import hydra
    from omegaconf import OmegaConf

    from infodecomp.experiments.checks import check_keys, check_values
    from infodecomp.experiments.config import SCHEMAS
    from infodecomp.paths import config_dir

    register()
    if not OmegaConf.has_resolver("infodecomp.help"):  # --help renders the command's options
        from infodecomp.experiments.help import resolver

        OmegaConf.register_new_resolver("infodecomp.help", resolver)

    @hydra.main(config_path=str(config_dir()), config_name=command, version_base="1.3")
    def _main(cfg: Any) -> Any:
        from tqdm.contrib.logging import logging_redirect_tqdm

        obj = None
        try:
            if command in SCHEMAS:
                check_keys(cfg, SCHEMAS[command], command)
            obj = OmegaConf.to_object(cfg)
            check_values(obj)
            stage_hydra_copy(cfg)
            with logging_redirect_tqdm():  # log lines print above progress bars, not through them
                return run(obj)
        except KeyboardInterrupt:
            where = _interrupted_run(obj)
            console.interrupted(command, where, resumable=where is not None)
        except Exception as err:  # a user error ends here as one line (SystemExit); bugs re-raise
            if isinstance(err, _known_errors()):
                # The message says what is wrong and what to do: one line, no traceback.
                console.fail(err, command, user=True)
                raise  # not reached: fail exits or re-raises
            torch = sys.modules.get("torch")  # not imported by aggregate / report
            if torch is not None and isinstance(err, torch.cuda.OutOfMemoryError):
                batch = getattr(getattr(obj, "run", None), "batch_size", "?")
                err = ValueError(
                    f"out of GPU memory ({str(err).splitlines()[0]}); lower run.batch_size "
                    f"(now {batch}) or use run.dtype=bfloat16"
                )
            console.fail(err, command)
            raise  # not reached: fail exits or re-raises
        finally:
            _PENDING.clear()  # a run never accepted into its directory leaves the old copy

    def entry() -> Any:
        # A setting written the argparse way (`--n_samples 10`) gets its key=value form in one
        # line instead of Hydra's usage text.
        from infodecomp.experiments.help import dash_option_hint

        hint = dash_option_hint(command, sys.argv[1:])
        if hint:
            print(f"infodecomp {command}: {hint}", file=sys.stderr)
            return 2
        return _main()

    return entry


HYDRA_COPY = ".hydra"  # Hydra's copy of the job's config (hydra.output_subdir is null: ours)
_PENDING: dict[str, Any] = {}  # the copy a rerun into a results store writes once accepted


def _job_dir() -> Path | None:
    """The Hydra job's output directory, or None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if HydraConfig.initialized() and not OmegaConf.is_missing(
        HydraConfig.get().runtime, "output_dir"
    ):
        return Path(HydraConfig.get().runtime.output_dir)
    return None


def stage_hydra_copy(cfg: Any) -> None:
    """The job's `.hydra/` copy (config.yaml, hydra.yaml, overrides.yaml, as Hydra writes them):
    at once in a directory without a results store; in one that holds a run, only when the run
    accepts this config (`save_hydra_copy`, called by the runner once the store is open), so a
    refused rerun leaves the run's own copy."""
    from infodecomp.reporting.store import has_store

    out = _job_dir()
    if out is None:
        return
    _PENDING["copy"] = (out, cfg)
    if not has_store(out):
        save_hydra_copy()


def save_hydra_copy() -> None:
    """Writes the staged `.hydra/` copy (nothing when none is staged)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    staged = _PENDING.pop("copy", None)
    if staged is None:
        return
    out, cfg = staged
    folder = out / HYDRA_COPY
    folder.mkdir(parents=True, exist_ok=True)
    hydra_node = HydraConfig.get()
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_node}), folder / "hydra.yaml")
    OmegaConf.save(hydra_node.overrides.task, folder / "overrides.yaml")


def _interrupted_run(cfg: Any) -> Path | None:
    """The run directory of an interrupted command when it holds a results store (a run that
    resumes), else None."""
    from infodecomp.reporting.store import has_store

    try:
        path = _job_dir()
        if path is None:
            out = getattr(getattr(cfg, "run", None), "out_dir", None)
            path = Path(out) if out else None
    except Exception:  # nothing more to say than "interrupted"
        return None
    return path if path is not None and has_store(path) else None


def run_dir(cfg: Any, command: str) -> Path:
    """The run directory: Hydra's job output dir, else run.out_dir, else a fresh outputs/ folder."""
    # Outside a Hydra job (e.g. run(cfg) after an in-process Hydra call) output_dir is unset.
    path = _job_dir()
    if path is None:
        out = getattr(getattr(cfg, "run", None), "out_dir", None)
        path = Path(out) if out else Path("outputs") / command / time.strftime("%Y-%m-%d_%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path

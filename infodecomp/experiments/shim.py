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
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    # Outside a Hydra job (e.g. run(cfg) after an in-process Hydra call) output_dir is unset.
    if HydraConfig.initialized() and not OmegaConf.is_missing(
        HydraConfig.get().runtime, "output_dir"
    ):
        path = Path(HydraConfig.get().runtime.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    out = getattr(getattr(cfg, "run", None), "out_dir", None)
    path = Path(out) if out else Path("outputs") / command / time.strftime("%Y-%m-%d_%H-%M-%S")
    path.mkdir(parents=True, exist_ok=True)
    return path

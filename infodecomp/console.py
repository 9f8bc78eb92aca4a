"""What the console shows when a command fails: one line for a user error, a traceback for a bug.

User errors are what a user can fix from the message alone: a bad or misspelled setting, an
unknown name, a missing path or package, an unreachable download. `--verbose` (or
HYDRA_FULL_ERROR=1) shows the traceback of every error.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import os
import sys

VERBOSE_FLAG = "--verbose"
# Exceptions the commands raise for bad input; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError, ImportError)
_verbose: bool | None = None  # set by the `infodecomp` dispatcher; None: read the environment


def set_verbose(on: bool | None) -> None:
    global _verbose
    _verbose = on


def verbose() -> bool:
    return _verbose if _verbose is not None else os.environ.get("HYDRA_FULL_ERROR") == "1"


def _one_line(text: object) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


def _close_key(cause: BaseException) -> str:
    """ " Did you mean 'n_samples'?" for a misspelled config key, else ""."""
    key, obj = getattr(cause, "key", None), getattr(cause, "object_type", None)
    if not isinstance(key, str) or obj is None or not dataclasses.is_dataclass(obj):
        return ""
    names = [f.name for f in dataclasses.fields(obj)]
    close = difflib.get_close_matches(key, names, n=1)
    return f" Did you mean '{close[0]}'?" if close and key not in names else ""


def _group_source(group: str) -> str:
    """Where the choices of a config group are defined: configs/<group>/, or, for the model
    presets (registered from code, no folder), their list."""
    if group == "model":
        return (
            "the presets of infodecomp/models/presets.py; any other hub id or folder: "
            "model=local model.path=<hub id or folder>"
        )
    return f"configs/{group}/"


def _unwritable_out_dir(err: BaseException) -> str | None:
    """One line naming run.out_dir when `err` is the OS refusing a path in (or above) it."""
    from pathlib import Path

    if not isinstance(err, OSError) or err.filename is None:
        return None
    out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("run.out_dir=")), None)
    if not out:
        return None
    path, folder = Path(os.fsdecode(err.filename)).absolute(), Path(out).absolute()
    if path != folder and folder not in path.parents and path not in folder.parents:
        return None
    return (
        f"run.out_dir={out} cannot be written ({err.strerror or type(err).__name__}: "
        f"{os.fsdecode(err.filename)}): choose a folder you can write to, or leave run.out_dir "
        "out for a new folder under outputs/"
    )


def user_error(err: BaseException, command: str) -> str | None:
    """One line describing a user error, or None when `err` looks like a bug."""
    from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    see = f"see `infodecomp {command} --help`"
    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options:
        group, _, name = err.missing_cfg_file.rpartition("/")
        close = difflib.get_close_matches(name, err.options, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return (
            f"{group}={name} is not one of: {', '.join(err.options)}.{hint} "
            f"({_group_source(group)}; {see})"
        )
    if isinstance(err, OverrideParseException):
        return f"cannot parse the overrides: {_one_line(err)} (write key=value; {see})"
    if isinstance(err, CompactHydraException):
        text = _one_line(err)
        cause = err.__cause__
        if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and cause.full_key:
            group = cause.full_key.rpartition(".")[0]
            close = _close_key(cause).replace("'", f"'{group}." if group else "'", 1)
            return f"unknown setting {cause.full_key}{'.' + close if close else ''} ({see})"
        if cause is not None:
            detail = _one_line(cause).split(" full_key:")[0].rstrip(".")
            text = f"{text.rstrip('.')}: {detail}.{_close_key(cause)}"
        return f"{text} ({see})"
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        from pathlib import Path

        from infodecomp.reporting.store import disk_full

        where = Path(os.fsdecode(err.filename)).parent if err.filename else Path.cwd()
        return str(disk_full(where))
    unwritable = _unwritable_out_dir(err)
    if unwritable:
        return unwritable
    if isinstance(err, USER_ERRORS):
        return _one_line(err) or type(err).__name__
    return None


def fail(err: BaseException, command: str, user: bool = False) -> None:
    """Print a user error as one line (plus where the traceback is) and exit 2; re-raise a bug.

    Call it from an `except` block; with --verbose it re-raises every error. `user=True` marks
    an error the caller knows to be a user error (a bad config value, a damaged or locked run
    directory, a data file that cannot be read). The exit status is 2, as for usage errors.
    """
    if isinstance(err, BrokenPipeError):  # output piped into e.g. `head`, which closed it
        raise SystemExit(2) from None
    line = None if verbose() else (_one_line(err) if user else user_error(err, command))
    if line is None:
        raise err
    print(f"infodecomp {command}: {line}", file=sys.stderr)
    print(f"  (for the traceback add {VERBOSE_FLAG} or set HYDRA_FULL_ERROR=1)", file=sys.stderr)
    raise SystemExit(2) from None


def interrupted(command: str, run_dir: object = None, resumable: bool = False) -> None:
    """Ctrl-C: one line (where the finished items are and how to resume), exit status 130 as a
    shell gives an interrupted program; with --verbose the traceback instead."""
    if verbose():
        raise  # noqa: PLE0704 - called from the handler of the KeyboardInterrupt
    line = f"infodecomp {command}: interrupted"
    if run_dir is not None and resumable:
        line += (
            f"; the items finished so far are kept in {run_dir}: rerun the same command to resume"
        )
    print(line, file=sys.stderr)
    raise SystemExit(130)

"""``meta.json`` (provenance of a run) and ``summary.json`` (its headline metrics)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

META = "meta.json"
SUMMARY = "summary.json"
# Distribution names, looked up without importing them (torch must not load in reporting).
PACKAGES = (
    "infodecomp",
    "torch",
    "diffusers",
    "transformers",
    "hydra-core",
    "omegaconf",
    "pandas",
    "numpy",
    "pycocotools",
    "datasets",
    "matplotlib",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(source_dir: str | Path | None = None) -> dict[str, Any] | None:
    """Git commit and dirty flag of the source tree holding the infodecomp package.

    Returns None when the package does not sit in a git checkout (e.g. an installed wheel), or
    when git is unavailable.
    """
    if source_dir is None:
        source_dir = Path(__file__).resolve().parents[1]  # the infodecomp package folder
    source_dir = Path(source_dir)

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(
                ["git", "-C", str(source_dir), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None:
        return None
    # An installed copy inside some other repository (e.g. a venv in a checkout) is not tracked.
    tracked = git("ls-files", "--error-unmatch", "__init__.py")
    commit = git("rev-parse", "HEAD")
    if tracked is None or commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None, "root": top}


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars to python, paths to str, non-finite floats to null."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _dump(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_meta(
    run_dir: str | Path,
    config: Mapping[str, Any],
    *,
    device: str,
    dtype: str,
    seed: int,
    wall_time_s: float,
    items_done: int,
    items_skipped: int,
    extra: Mapping[str, Any] | None = None,
    command: str | None = None,
    started_at: str | None = None,
    legs: list[Mapping[str, Any]] | None = None,
) -> Path:
    """Write ``meta.json``: resolved config, versions, git revision, device and progress.

    Args:
        run_dir: the run directory.
        config: the resolved configuration as a plain dict (no DictConfig).
        device: torch device string the run used (e.g. ``"cuda:0"``).
        dtype: compute dtype name (e.g. ``"float32"``).
        seed: the run's seed.
        wall_time_s: seconds the run took (all legs into this directory together).
        items_done: items finished (all runs into this directory together).
        items_skipped: items skipped.
        extra: further keys to store (merged into the top-level object).
        command: the command that produced the run (``aro``, ``localize``, ``intervene``,
            ``visualize``); read by aggregation. Defaults to ``extra["command"]`` or
            ``config["command"]``.
        started_at: when the first leg started (ISO 8601); default: now - wall_time_s.
        legs: one record per run into this directory (a resumed run has several), stored
            as ``legs``.

    Returns:
        Path of ``meta.json``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    if command is None:
        command = extra.pop("command", None) or config.get("command")
    now = datetime.now(timezone.utc)
    meta: dict[str, Any] = {
        "command": command,
        "config": _jsonable(config),
        "device": device,
        "dtype": dtype,
        "seed": seed,
        "wall_time_s": float(wall_time_s),
        "items_done": int(items_done),
        "items_skipped": int(items_skipped),
        "started_at": started_at
        or (now - timedelta(seconds=float(wall_time_s))).isoformat(timespec="seconds"),
        "finished_at": now.isoformat(timespec="seconds"),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_revision(),
    }
    if legs is not None:
        meta["legs"] = _jsonable(list(legs))
    clash = sorted(set(extra) & set(meta))
    if clash:
        raise ValueError(
            f"write_meta: extra keys {clash} would overwrite standard fields; rename them."
        )
    meta.update(_jsonable(extra))
    path = run_dir / META
    _dump(path, meta)
    return path


def _flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def write_summary(run_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``summary.json``: a flat object of headline metrics (``accuracy/io``, ``miou/cmi``).

    Nested dicts are flattened with ``/`` (``{"accuracy": {"io": x}}`` -> ``accuracy/io``);
    NaN and infinities are stored as null.

    Returns:
        Path of ``summary.json``.
    """
    flat = _flatten(metrics)
    for key, value in flat.items():
        if isinstance(value, (list, tuple, set, dict)):
            raise ValueError(
                f"write_summary: metric '{key}' is a {type(value).__name__}; "
                "summary values must be scalars."
            )
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SUMMARY
    _dump(path, _jsonable(dict(sorted(flat.items()))))
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, with an error that names the file when it is missing or broken."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; is {path.parent} a finished run directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}); rerun the command to rewrite it."
        ) from err

"""The run directories `aggregate` and `report` read: found, loaded, and described (meta,
summary and, lazily, results), without a model."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.meta import META, SUMMARY, read_json
from infodecomp.reporting.tables import int_or_none
from infodecomp.reporting.writer import natural_key, read_results

COMMANDS = ("aro", "localize", "intervene", "visualize", "calibrate")
CALIBRATE_DATA = "shapes-* (calibrate's sets)"
# Commands whose run directories carry no table: listed in the runs index only.
LISTED_ONLY = ("validate", "bench", "aggregate", "build-coco-manifest")
LEGACY_ATTENTION = "layer-mean"  # what runs without an `attention` setting computed


@dataclass
class Run:
    """One run directory: its meta, summary and (lazily) results."""

    path: Path
    meta: dict
    summary: dict
    _results: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def command(self) -> str:
        return str(self.meta.get("command"))

    @property
    def config(self) -> dict:
        return self.meta.get("config") or {}

    @property
    def model(self) -> str:
        return str((self.config.get("model") or {}).get("name") or "unknown")

    @property
    def data(self) -> str:
        if self.command == "calibrate":  # several generated sets; data.name is not read
            return CALIBRATE_DATA
        return str((self.config.get("data") or {}).get("name") or "unknown")

    @property
    def n_samples(self) -> int | None:
        return int_or_none((self.config.get("estimator") or {}).get("n_samples"))

    @property
    def control(self) -> str | None:
        """The data control of an `aro` run (data.control, e.g. shuffled-images), if any."""
        return (self.config.get("data") or {}).get("control") or None

    @property
    def adaptive(self) -> bool:
        return bool((self.config.get("estimator") or {}).get("adaptive", False))

    @property
    def paper_setting(self) -> bool:
        """The paper's model on a real benchmark: published numbers are comparable."""
        return (
            self.model == pub.PAPER_MODEL
            and self.data not in ("unknown", "")
            and not self.data.startswith("shapes-")
        )

    @property
    def setting(self) -> str:
        return f"{self.model} / {self.data}"

    @property
    def attention(self) -> str:
        """Aggregation of the run's attention maps (``daam`` or ``layer-mean``); runs written
        before the ``attention`` option existed used the layer mean. A run under
        ``baseline_input=zero-one-published-bug`` adds ``+published-bug`` (its rows are named
        apart: the baselines saw [0, 1] pixels)."""
        agg = str(self.config.get("attention") or LEGACY_ATTENTION)
        bug = self.config.get("baseline_input") == "zero-one-published-bug"
        return agg + pub.BUG_SUFFIX if bug else agg

    def shares_maps_with(self, other: Run) -> bool:
        """Whether the CMI, MI and whole-image rows of two localize runs are one measurement:
        same model, data, estimator, step counts, context and seed (the attention aggregation,
        the attention steps and where or how fast the runs went may differ)."""

        def key(run: Run) -> dict:
            c = run.config
            r = c.get("run") or {}
            return {
                **{
                    k: c.get(k)
                    for k in (
                        "model",
                        "data",
                        "estimator",
                        "steps",
                        "blank_context",
                        "mi_prompt",
                        "map_draws",
                    )
                },
                **{f"run.{k}": r.get(k) for k in ("seed", "limit", "dtype")},
            }

        return key(self) == key(other)

    @property
    def data_source(self) -> str:
        """Where the run's data came from: hub id and revision, files, or a generated set."""
        ds = self.meta.get("dataset") or {}  # what the loader recorded (runs since it does)
        cfg = self.config.get("data") or {}
        if self.data.startswith("shapes-"):
            return f"ShapesWorld, generated (seed {cfg.get('seed', 0)})"
        if (ds.get("source") or cfg.get("source")) == "hf":
            name = ds.get("hf_name") or cfg.get("hf_name") or "default hub id"
            revision = ds.get("revision") or cfg.get("revision")
            where = f"{name} @ {revision}" if revision else f"{name} (revision not recorded)"
            return f"Hugging Face {where}"
        where = ds.get("annotation_file") or ds.get("manifest") or cfg.get("root")
        return f"files {where}" if where else "files"

    def results(self, required: Iterable[str] = ()) -> pd.DataFrame:
        if self._results is None:
            self._results = read_results(self.path)
        missing = [c for c in required if c not in self._results.columns]
        if missing:
            raise ValueError(
                f"{self.path}/results.csv: columns {missing} missing for a "
                f"'{self.command}' run; found {list(self._results.columns)}."
            )
        return self._results


def find_run_dirs(root: str | Path) -> list[Path]:
    """All run directories (folders holding ``meta.json``) at or below ``root``, sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(META)}, key=lambda p: natural_key(str(p)))


def expand_run_paths(given: Iterable[str | Path]) -> list[Path]:
    """Run paths as typed: folders, glob patterns (``outputs/aro/2025-*``, ``**``) and
    ``folder/...`` (the folder and everything below it, as searching a folder does anyway).

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches nothing (one line, naming
            every such path).
    """
    out: list[Path] = []
    missing: list[str] = []
    for entry in given:
        text = str(entry)
        if text.endswith(("/...", "\\...")) or text == "...":
            text = text[:-3].rstrip("/\\") or "."
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True), key=natural_key)
            out += [Path(m) for m in matches if Path(m).is_dir()]
            if not any(Path(m).is_dir() for m in matches):
                missing.append(str(entry))
        elif Path(text).exists():
            out.append(Path(text))
        else:
            missing.append(str(entry))
    if missing:
        raise FileNotFoundError(
            f"runs: nothing found at {', '.join(missing)}; pass run directories, folders "
            "holding them (e.g. outputs/aro) or glob patterns (e.g. 'outputs/aro/2025-*')"
        )
    return list(dict.fromkeys(out))


def load_runs(run_dirs: Iterable[str | Path]) -> list[Run]:
    """Load run directories; a folder without ``meta.json`` is searched for runs below it.

    Entries may be glob patterns or end in ``/...``; see :func:`expand_run_paths`.
    """
    runs: list[Run] = []
    seen: set[Path] = set()
    for given in expand_run_paths(run_dirs):
        found = [given] if (given / META).exists() else find_run_dirs(given)
        if not found:
            raise FileNotFoundError(
                f"{given}: no meta.json there or below; pass run directories "
                "written by aro / localize / intervene / visualize."
            )
        for d in found:
            if d.resolve() in seen:  # named twice (a folder and a run inside it)
                continue
            seen.add(d.resolve())
            meta = read_json(d / META)
            if meta.get("command") not in COMMANDS + LISTED_ONLY:
                raise ValueError(
                    f"{d}/meta.json: command {meta.get('command')!r} is not one of "
                    f"{COMMANDS + LISTED_ONLY}."
                )
            summary = read_json(d / SUMMARY) if (d / SUMMARY).exists() else {}
            runs.append(Run(d, meta, summary))
    return runs


def claim(seen: dict, key: tuple, run: Run) -> None:
    """Records that `run` reports `key`; ValueError if another run already did."""
    if key in seen:
        raise ValueError(
            f"{run.path} and {seen[key]} both report {key}; aggregate them separately "
            "or remove one (a rerun belongs in the same run directory)."
        )
    seen[key] = run.path


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: command, model, data, samples, progress, wall time, paper setting."""
    return pd.DataFrame(
        [
            {
                "run": str(r.path),
                "command": r.command,
                "model": r.model,
                "data": r.data,
                "n_samples": r.n_samples,
                "items_done": r.meta.get("items_done"),
                "items_skipped": r.meta.get("items_skipped"),
                "wall_time_s": r.meta.get("wall_time_s"),
                "paper_setting": r.paper_setting,
                "data_source": r.data_source,
            }
            for r in runs
        ]
    )

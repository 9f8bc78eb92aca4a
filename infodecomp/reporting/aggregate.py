"""Turn run directories into the paper's Tables 1-4 (Markdown, LaTeX, CSV), without a model.

Reads only ``results.csv`` (and shards), ``summary.json`` and ``meta.json`` of each run.
Published numbers appear beside measured ones only for runs in the paper's setting: model
``sd-2.1-base`` on a real benchmark (data name not starting with ``shapes-``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.meta import META, SUMMARY, read_json
from infodecomp.reporting.metrics import (
    IOU_COLUMNS,
    aro_accuracy,
    canonical_subset,
    intervention_table,
    miou_heldout,
    miou_paper,
    predict,
)
from infodecomp.reporting.tables import display, fmt_int, fmt_number, fmt_pm, write_table
from infodecomp.reporting.writer import natural_key, read_results

COMMANDS = ("aro", "localize", "intervene", "visualize")
ESTIMATOR_ORDER = ("io", "is", "mmse")
ESTIMATOR_LABELS = {"io": "Info. i^o", "is": "Info. i^s", "mmse": "Denoising loss"}
METHOD_ORDER = ("whole", "attention", "cmi", "mi", "attn_info")
ARO_COLUMNS = ("item_id", "subset", "group", "label", "option", "estimator", "score")
LOCALIZE_COLUMNS = ("item_id", "method", "n_steps", "split", *IOU_COLUMNS)
INTERVENE_COLUMNS = ("item_id", "edit", "cmi_total", "attn_total", "change_total",
                     "pixel_r_cmi", "pixel_r_attn")
TITLES = {
    "table1": "Table 1: ARO accuracy (%)",
    "accuracy_vs_samples": "ARO accuracy (%) vs logsnr samples per image",
    "table2": "Table 2: ARO accuracy (%) per relation / attribute pair",
    "table3": "Table 3: localisation mIoU (%), paper protocol vs held-out threshold",
    "table4": "Table 4: intervention correlation (Pearson r ± bootstrap se)",
    "runs": "Runs",
}


def _int_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


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
        return str((self.config.get("data") or {}).get("name") or "unknown")

    @property
    def n_samples(self) -> int | None:
        return _int_or_none((self.config.get("estimator") or {}).get("n_samples"))

    @property
    def paper_setting(self) -> bool:
        """The paper's model on a real benchmark: published numbers are comparable."""
        return self.model == pub.PAPER_MODEL and self.data not in ("unknown", "") \
            and not self.data.startswith("shapes-")

    @property
    def setting(self) -> str:
        return f"{self.model} / {self.data}"

    def results(self, required: Iterable[str] = ()) -> pd.DataFrame:
        if self._results is None:
            self._results = read_results(self.path)
        missing = [c for c in required if c not in self._results.columns]
        if missing:
            raise ValueError(f"{self.path}/results.csv: columns {missing} missing for a "
                             f"'{self.command}' run; found {list(self._results.columns)}.")
        return self._results


def find_run_dirs(root: str | Path) -> list[Path]:
    """All run directories (folders holding ``meta.json``) at or below ``root``, sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(META)}, key=lambda p: natural_key(str(p)))


def load_runs(run_dirs: Iterable[str | Path]) -> list[Run]:
    """Load run directories; a folder without ``meta.json`` is searched for runs below it."""
    runs: list[Run] = []
    for given in run_dirs:
        given = Path(given)
        found = [given] if (given / META).exists() else find_run_dirs(given)
        if not found:
            raise FileNotFoundError(f"{given}: no meta.json there or below; pass run directories "
                                    "written by aro / localize / intervene / visualize.")
        for d in found:
            meta = read_json(d / META)
            if meta.get("command") not in COMMANDS:
                raise ValueError(f"{d}/meta.json: command {meta.get('command')!r} is not one of "
                                 f"{COMMANDS}.")
            summary = read_json(d / SUMMARY) if (d / SUMMARY).exists() else {}
            runs.append(Run(d, meta, summary))
    return runs


def _claim(seen: dict, key: tuple, run: Run) -> None:
    if key in seen:
        raise ValueError(f"{run.path} and {seen[key]} both report {key}; aggregate them separately "
                         "or remove one (a rerun belongs in the same run directory).")
    seen[key] = run.path


# ------------------------------------------------------------------------------------ ARO tables

def _aro(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long records (one per model x estimator x n_samples x subset) and per-group rows."""
    records, groups, seen = [], [], {}
    for run in runs:
        df = run.results(ARO_COLUMNS).copy()
        if "n_samples" not in df.columns or df["n_samples"].isna().all():
            df["n_samples"] = run.n_samples
        df["subset"] = df["subset"].map(canonical_subset)
        for (est, n, subset), part in df.groupby(["estimator", "n_samples", "subset"],
                                                 sort=False, dropna=False):
            n = _int_or_none(n)
            _claim(seen, (run.model, est, n, subset), run)
            score, per_group = aro_accuracy(predict(part))
            common = {"model": run.model, "estimator": est, "n_samples": n, "subset": subset}
            records.append({**common, "accuracy": 100 * score, "n_items": part["item_id"].nunique(),
                            "paper": run.paper_setting})
            groups.append(per_group.assign(**common, accuracy=100 * per_group["accuracy"]))
    rec = pd.DataFrame(records)
    order = {e: i for i, e in enumerate(ESTIMATOR_ORDER)}
    rec = rec.assign(_e=rec["estimator"].map(lambda e: order.get(e, len(order))),
                     _n=rec["n_samples"].map(lambda n: -1 if n is None else n))
    rec = rec.sort_values(["model", "_e", "estimator", "_n"], kind="stable").drop(columns=["_e", "_n"])
    return rec.reset_index(drop=True), pd.concat(groups, ignore_index=True)


def _subset_order(subsets: Iterable[str]) -> list[str]:
    known = [s for s in pub.SUBSET_LABELS if s in set(subsets)]
    return known + sorted(set(subsets) - set(known))


def _subset_label(subset: str) -> str:
    return pub.SUBSET_LABELS.get(subset, subset)


def table1(rec: pd.DataFrame) -> pd.DataFrame:
    """Rows = model x estimator x n_samples (+ published methods in the paper's setting)."""
    subsets = _subset_order(rec["subset"])
    rows = []
    for (model, est, n), grp in rec.groupby(["model", "estimator", "n_samples"], sort=False,
                                            dropna=False):
        row = {"model": model, "method": ESTIMATOR_LABELS.get(est, est),
               "n_samples": _int_or_none(n), "source": "measured"}
        acc = dict(zip(grp["subset"], grp["accuracy"], strict=True))
        rows.append(row | {_subset_label(s): acc.get(s, float("nan")) for s in subsets})
    if rec["paper"].any():
        for method, values in pub.TABLE1.items():
            n = pub.PAPER_N_SAMPLES if method == pub.TABLE1_INFO_METHOD else None
            row = {"model": "paper", "method": method, "n_samples": n, "source": "published"}
            rows.append(row | {_subset_label(s): values.get(s, float("nan")) for s in subsets})
    return pd.DataFrame(rows)


def accuracy_vs_samples(rec: pd.DataFrame) -> pd.DataFrame | None:
    """Rows = n_samples, columns = subset x estimator; None unless n_samples was swept."""
    if rec["n_samples"].dropna().nunique() < 2:
        return None
    many_models = rec["model"].nunique() > 1
    table: dict[int | None, dict[str, float]] = {}
    columns: list[str] = []
    for subset in _subset_order(rec["subset"]):
        for _, r in rec[rec["subset"] == subset].iterrows():
            col = f"{_subset_label(subset)} {ESTIMATOR_LABELS.get(r.estimator, r.estimator)}"
            col = f"{r.model} {col}" if many_models else col
            if col not in columns:
                columns.append(col)
            table.setdefault(r.n_samples, {})[col] = r.accuracy
    keys = sorted(table, key=lambda n: -1 if n is None else n)
    return pd.DataFrame([{"n_samples": n} | {c: table[n].get(c, float("nan")) for c in columns}
                         for n in keys])


def table2(groups: pd.DataFrame) -> pd.DataFrame:
    """Per relation / attribute pair accuracy; one column per estimator."""
    order = {s: i for i, s in enumerate(_subset_order(groups["subset"]))}
    ests = [e for e in ESTIMATOR_ORDER if e in set(groups["estimator"])]
    ests += sorted(set(groups["estimator"]) - set(ests))
    table: dict[tuple, dict[str, Any]] = {}
    for r in groups.itertuples(index=False):
        key = (r.model, r.n_samples, r.subset, r.group, int(r.n), bool(r.included))
        table.setdefault(key, {})[ESTIMATOR_LABELS.get(r.estimator, r.estimator)] = r.accuracy
    keys = sorted(table, key=lambda k: (k[0], -1 if k[1] is None else k[1], order[k[2]],
                                        natural_key(str(k[3]))))
    labels = [ESTIMATOR_LABELS.get(e, e) for e in ests]
    return pd.DataFrame([{"model": k[0], "n_samples": k[1], "subset": _subset_label(k[2]),
                          "group": k[3], "n": k[4], "in_metric": k[5]}
                         | {lab: table[k].get(lab, float("nan")) for lab in labels} for k in keys])


# -------------------------------------------------------------------------------- localisation

def table3(runs: list[Run]) -> pd.DataFrame:
    """Rows = setting x method, columns = ``{n} paper``, ``{n} held-out`` (+ ``{n} published``)."""
    cells: dict[tuple[str, str], dict[Any, tuple[float, float]]] = {}
    paper_settings, steps, seen = set(), set(), {}
    for run in runs:
        df = run.results(LOCALIZE_COLUMNS)
        if run.paper_setting:
            paper_settings.add(run.setting)
        for (method, n), part in df.groupby(["method", "n_steps"], sort=False, dropna=False):
            n = _int_or_none(n)
            _claim(seen, (run.setting, method, n), run)
            both = set(part["split"].dropna()) >= {"A", "B"}
            held = 100 * miou_heldout(part) if both else float("nan")
            cells.setdefault((run.setting, method), {})[n] = (100 * miou_paper(part), held)
            if n is not None:
                steps.add(n)
    step_cols = sorted(steps) or [None]
    show_pub = bool(paper_settings)
    mo = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows = []
    for setting, method in sorted(cells, key=lambda k: (k[0], mo.get(k[1], len(mo)), k[1])):
        by_n = cells[(setting, method)]
        row: dict[str, Any] = {"setting": setting, "method": pub.METHOD_LABELS.get(method, method)}
        for n in step_cols:
            # n_steps left empty (e.g. the whole-image mask) applies to every step count
            paper, held = by_n.get(n, by_n.get(None, (float("nan"), float("nan"))))
            name = "all steps" if n is None else f"{n} steps"
            row[f"{name} paper"] = paper
            row[f"{name} held-out"] = held
            if show_pub:
                value = pub.published_miou(method, n) if setting in paper_settings else None
                row[f"{name} published"] = float("nan") if value is None else value
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- interventions

def table4(runs: list[Run], *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rows = setting x edit x {CMI, attention}; image- and pixel-level r with bootstrap se."""
    rows, seen = [], {}
    show_pub = any(r.paper_setting for r in runs)
    for run in runs:
        df = run.results(INTERVENE_COLUMNS)
        _claim(seen, (run.setting,), run)
        edits = sorted(set(df["edit"].dropna()))
        for edit in ["all", *edits] if len(edits) > 1 else ["all"]:
            part = df if edit == "all" else df[df["edit"] == edit]
            stats = intervention_table(part, n_boot=n_boot, seed=seed)
            for method, s in stats.iterrows():
                row = {"setting": run.setting, "edit": edit, "method": pub.METHOD_LABELS[method],
                       "image_r": s.image_r, "image_se": s.image_se, "pixel_r": s.pixel_r,
                       "pixel_se": s.pixel_se, "n_items": int(s.n_items),
                       "n_pixel": int(s.n_pixel)}
                if show_pub:
                    ok = run.paper_setting and edit == "all"
                    for level in ("image", "pixel"):
                        r_se = pub.published_correlation(method, level) if ok else None
                        r, se = r_se if r_se else (float("nan"), float("nan"))
                        row[f"published_{level}_r"], row[f"published_{level}_se"] = r, se
                rows.append(row)
    return pd.DataFrame(rows)


def _table4_shown(data: pd.DataFrame) -> pd.DataFrame:
    shown = data[["setting", "edit", "method"]].copy()
    shown["image-level r"] = [fmt_pm(r, s) for r, s in zip(data.image_r, data.image_se, strict=True)]
    shown["pixel-level r"] = [fmt_pm(r, s) for r, s in zip(data.pixel_r, data.pixel_se, strict=True)]
    shown["items"] = data["n_items"].astype(str)
    if "published_image_r" in data.columns:
        for level in ("image", "pixel"):
            shown[f"published {level}-level"] = [
                fmt_pm(r, s) for r, s in zip(data[f"published_{level}_r"],
                                             data[f"published_{level}_se"], strict=True)]
    return shown.astype(str)


# ------------------------------------------------------------------------------------ top level

def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: command, model, data, samples, progress, wall time, paper setting."""
    return pd.DataFrame([{"run": str(r.path), "command": r.command, "model": r.model,
                          "data": r.data, "n_samples": r.n_samples,
                          "items_done": r.meta.get("items_done"),
                          "items_skipped": r.meta.get("items_skipped"),
                          "wall_time_s": r.meta.get("wall_time_s"),
                          "paper_setting": r.paper_setting} for r in runs])


def aggregate(run_dirs: list[Path], out_dir: Path, *, n_boot: int = 1000,
              seed: int = 0) -> dict[str, pd.DataFrame]:
    """Build Tables 1-4 from run directories and write them as Markdown, LaTeX and CSV.

    Args:
        run_dirs: run directories (or folders searched for run directories below them).
        out_dir: where ``table{k}.{md,tex,csv}``, ``accuracy_vs_samples.*``, ``runs.*`` and the
            combined ``tables.md`` are written.
        n_boot: bootstrap resamples for the Table 4 standard errors.
        seed: seed of the bootstrap.

    Returns:
        Numeric tables by name (``table1``, ``table2``, ``accuracy_vs_samples``, ``table3``,
        ``table4``, ``runs``), only those the runs provide; each frame's ``attrs["markdown"]``
        holds its rendered Markdown.
    """
    runs = load_runs(run_dirs)
    by_cmd = {c: [r for r in runs if r.command == c] for c in COMMANDS}
    built: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    pct = fmt_number(1)
    if by_cmd["aro"]:
        rec, groups = _aro(by_cmd["aro"])
        t1 = table1(rec)
        built["table1"] = (t1, display(t1, {c: pct for c in t1.columns[4:]}
                                       | {"n_samples": fmt_int}))
        sweep = accuracy_vs_samples(rec)
        if sweep is not None:
            built["accuracy_vs_samples"] = (sweep, display(sweep, {c: pct for c in sweep.columns}
                                                           | {"n_samples": fmt_int}))
        t2 = table2(groups)
        built["table2"] = (t2, display(t2, {c: pct for c in t2.columns[6:]}
                                       | {"n_samples": fmt_int, "n": fmt_int}))
    if by_cmd["localize"]:
        t3 = table3(by_cmd["localize"])
        built["table3"] = (t3, display(t3, {c: fmt_number(2) for c in t3.columns[2:]}))
    if by_cmd["intervene"]:
        t4 = table4(by_cmd["intervene"], n_boot=n_boot, seed=seed)
        built["table4"] = (t4, _table4_shown(t4))
    rt = runs_table(runs)
    built["runs"] = (rt, display(rt, {"n_samples": fmt_int, "wall_time_s": fmt_number(1)}))

    out: dict[str, pd.DataFrame] = {}
    parts = ["# infodecomp results\n"]
    for name, (data, shown) in built.items():
        md = write_table(data, shown, out_dir, name, TITLES[name])
        data.attrs["markdown"] = md
        out[name] = data
        parts.append(md)
    Path(out_dir, "tables.md").write_text("\n".join(parts), encoding="utf-8")
    return out


def tables_markdown(tables: dict[str, pd.DataFrame]) -> str:
    """The rendered Markdown of every table returned by :func:`aggregate`, one after another."""
    return "\n".join(t.attrs.get("markdown", "") for t in tables.values())

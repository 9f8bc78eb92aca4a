"""Turn run directories into the paper's Tables 1-4 (Markdown, LaTeX, CSV), without a model.

Reads only ``results.csv`` (and shards), ``summary.json`` and ``meta.json`` of each run (and a
calibrate run's ``calibration.csv``: the calibration table, see reporting.calibration).
Published numbers appear beside measured ones only for runs in the paper's setting: model
``sd-2.1-base`` on a real benchmark (data name not starting with ``shapes-``).

This module dispatches: the runs are read by reporting.runs, each table is built by its own
module (reporting.aro_tables: Tables 1-2 and accuracy against samples; reporting.localize_table:
Table 3; reporting.segmentation_table: the zero-shot segmentation table;
reporting.intervene_table: Table 4; reporting.calibration: the calibration table) and rendered
by reporting.tables. A new table is a module beside those, an entry in TITLES and a few lines
in build_tables.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting import segmentation_table as seg_table
from infodecomp.reporting.aro_tables import aro_records, data_notes
from infodecomp.reporting.calibration import calibration_table
from infodecomp.reporting.intervene_table import NOTE_TABLE4_EXACT, table4
from infodecomp.reporting.localize_table import (
    MIOU_SUFFIXES,
    NOTE_TABLE3_ERRORS,
    NOTE_TABLE3_EXACT,
    NOTE_TABLE3_WL,
    table3,
)
from infodecomp.reporting.runs import (
    COMMANDS,
    Run,
    claim,
    expand_run_paths,
    find_run_dirs,
    load_runs,
    runs_table,
)
from infodecomp.reporting.tables import (
    TABLE1_KEYS,
    TABLE2_KEYS,
    accuracy_vs_samples,
    display,
    fmt_int,
    fmt_number,
    table1,
    table1_shown,
    table2,
    table4_shown,
    write_table,
)
from infodecomp.tasks.references import PUBLISHED_WL_REFERENCE

__all__ = [
    "TITLES",
    "Run",
    "aggregate",
    "build_tables",
    "expand_run_paths",
    "find_run_dirs",
    "load_runs",
    "table3",
    "table4",
    "tables_markdown",
    "write_tables",
]

TITLES = {
    "table1": "Table 1: compositionality accuracy (%) [95% interval: Wilson score; macro means over groups: Agresti-Coull] (ARO and the other ranking benchmarks)",
    "accuracy_vs_samples": "ARO accuracy (%) vs logsnr samples per image",
    "table2": "Table 2: accuracy (%) per group [95% Wilson score interval] (relation, attribute pair, tag; Winoground: group score)",
    "table3": "Table 3: localisation mIoU (%), paper protocol vs held-out threshold, per word type",
    "segmentation": seg_table.TITLE,
    "table4": "Table 4: intervention correlation (Pearson r ± bootstrap se)",
    "calibration": "Calibration: a learned ShapesWorld model against the exact oracle (same items, same draws)",
    "runs": "Runs",
}


NOTE_CALIBRATION = (
    "learned: the calibrated model; exact: the exact ShapesWorld oracle through the same "
    "estimator at the same (logsnr, eps) draws on the same items (reference 'exact oracle, same "
    "draws'), or the closed-form value the reference names (log p(x|y) - log p(x), the exact map "
    "from the oracle's posteriors). bias = mean(learned - exact); slope of learned regressed on "
    "exact and Pearson corr across items (ranking rows: across per-item margins, true option "
    "minus the best other). An oracle calibrated against itself gives bias 0, slope 1, corr 1."
)


def calibration(runs: list[Run]) -> pd.DataFrame:
    """The calibration tables of calibrate runs, one setting (model, samples) per run."""
    seen: dict = {}
    pairs = []
    for run in runs:
        setting = f"{run.model}, {run.n_samples} samples, seed {run.meta.get('seed')}"
        claim(seen, (setting,), run)
        pairs.append((setting, run.path))
    return calibration_table(pairs)


def table_notes(built: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> dict[str, str]:
    """Paragraphs under the tables that hold rows needing one (the exact references)."""
    notes = {}
    if "calibration" in built:
        notes["calibration"] = NOTE_CALIBRATION
    if "table3" in built:
        t3 = built["table3"][0]
        exact = pub.METHOD_LABELS["exact"]
        parts = [NOTE_TABLE3_ERRORS]
        if (t3["method"] == exact).any() or (t3["reference"] == "exact map").any():
            parts.append(NOTE_TABLE3_EXACT)
        if (t3["reference"] == PUBLISHED_WL_REFERENCE).any():
            parts.append(NOTE_TABLE3_WL)
        notes["table3"] = " ".join(parts)
    if "table4" in built:
        if (built["table4"][0]["method"] == pub.METHOD_LABELS["exact"]).any():
            notes["table4"] = NOTE_TABLE4_EXACT
    return notes


def aggregate(
    run_dirs: list[Path], out_dir: Path, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Build Tables 1-4 from run directories and write them as Markdown, LaTeX and CSV.

    Args:
        run_dirs: run directories (or folders searched for run directories below them).
        out_dir: where ``table{k}.{md,tex,csv}``, ``accuracy_vs_samples.*``, ``runs.*`` and the
            combined ``tables.md`` are written.
        n_boot: bootstrap resamples for the Table 3 and Table 4 standard errors.
        seed: seed of the bootstrap.

    Returns:
        Numeric tables by name (``table1``, ``table2``, ``accuracy_vs_samples``, ``table3``,
        ``table4``, ``runs``), only those the runs provide; each frame's ``attrs["markdown"]``
        holds its rendered Markdown.
    """
    built = build_tables(load_runs(run_dirs), n_boot=n_boot, seed=seed)
    return write_tables(built, out_dir)


def build_tables(
    runs: list[Run], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Tables 1-4, accuracy against samples and the runs index of loaded runs, unwritten.

    Returns:
        name -> (numbers, the same table as display strings), only the tables the runs provide,
        in display order (see :data:`TITLES`).
    """
    by_cmd = {c: [r for r in runs if r.command == c] for c in COMMANDS}
    built: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    notes: dict[str, list[str]] = {}
    pct = fmt_number(1)
    aro = aro_records(by_cmd["aro"]) if by_cmd["aro"] else None
    if aro is not None:
        rec, groups = aro
        t1 = table1(rec)
        fmt1 = {c: pct for c in t1.columns if c not in TABLE1_KEYS}
        fmt1 |= {"n_samples": fmt_int, "samples/item": fmt_number(1)}
        built["table1"] = (t1, table1_shown(t1, display(t1, fmt1)))
        notes["table1"] = data_notes(rec.attrs["data_sources"])
        sweep = accuracy_vs_samples(rec[rec["source"] == "measured"])
        if sweep is not None:
            fmt_s = {c: pct for c in sweep.columns} | {"n_samples": fmt_int}
            built["accuracy_vs_samples"] = (sweep, display(sweep, fmt_s))
        if not groups.empty:
            t2 = table2(groups)
            fmt2 = {c: pct for c in t2.columns if c not in TABLE2_KEYS}
            shown2 = display(t2, fmt2 | {"n_samples": fmt_int, "n": fmt_int})
            built["table2"] = (t2, table1_shown(t2, shown2))
    segs = [r for r in by_cmd["localize"] if seg_table.is_segmentation_run(r)]
    loc = [r for r in by_cmd["localize"] if r not in segs]  # segmentation: its own table
    t3 = table3(loc, n_boot=n_boot, seed=seed) if loc else pd.DataFrame()
    if not t3.empty:
        built["table3"] = (
            t3,
            display(
                t3,
                {c: fmt_number(2) for c in t3.columns if c.endswith(MIOU_SUFFIXES)}
                | {"pairs": fmt_int, "unscored": fmt_int},
            ),
        )
    ts = seg_table.segmentation_table(segs)
    if not ts.empty:
        fmt_s = {c: fmt_number(2) for c in seg_table.METRICS} | {"images": fmt_int}
        built["segmentation"] = (ts, display(ts, fmt_s | {"n_steps": fmt_int}))
        ts.attrs["note"] = seg_table.NOTE
    t4 = table4(by_cmd["intervene"], n_boot=n_boot, seed=seed) if by_cmd["intervene"] else None
    if t4 is not None and not t4.empty:
        built["table4"] = (t4, table4_shown(t4))
    tc = calibration(by_cmd["calibrate"]) if by_cmd["calibrate"] else pd.DataFrame()
    if not tc.empty:
        stats = {c: fmt_number(3) for c in ("learned", "exact", "bias", "slope", "corr")}
        built["calibration"] = (tc, display(tc, stats | {"n": fmt_int}))
    paragraphs = table_notes(built)
    rt = runs_table(runs)
    built["runs"] = (rt, display(rt, {"n_samples": fmt_int, "wall_time_s": fmt_number(1)}))
    for name, lines in notes.items():  # footnote lines under the table (write_tables)
        built[name][0].attrs["notes"] = lines
    for name, text in paragraphs.items():  # a paragraph under the table (write_tables)
        built[name][0].attrs["note"] = text
    return built


def write_tables(
    built: dict[str, tuple[pd.DataFrame, pd.DataFrame]], out_dir: Path
) -> dict[str, pd.DataFrame]:
    """Write the tables of :func:`build_tables` as ``{name}.{md,tex,csv}`` and ``tables.md``.

    Returns:
        The numeric tables by name, each with its Markdown in ``attrs["markdown"]``.
    """
    out: dict[str, pd.DataFrame] = {}
    parts = ["# infodecomp results\n"]
    for name, (data, shown) in built.items():
        md = write_table(
            data,
            shown,
            out_dir,
            name,
            TITLES[name],
            data.attrs.get("notes"),
            data.attrs.get("note", ""),
        )
        data.attrs["markdown"] = md
        out[name] = data
        parts.append(md)
    Path(out_dir, "tables.md").write_text("\n".join(parts), encoding="utf-8")
    return out


def tables_markdown(tables: dict[str, pd.DataFrame]) -> str:
    """The rendered Markdown of every table returned by :func:`aggregate`, one after another."""
    return "\n".join(t.attrs.get("markdown", "") for t in tables.values())

"""A static HTML report of run directories: Tables 1-4, accuracy against logsnr samples, heat-map
galleries with MMSE curves, and each run's metadata.

The report is one folder: ``index.html`` (rendered from the jinja2 template shipped in
``reporting/templates``), ``tables/`` (every table as Markdown, LaTeX and CSV, written by
``aggregate``'s own code and linked from the page), ``figures/`` (drawn here) and ``assets/``
(the heat maps and MMSE curves of ``visualize`` runs, copied). Every link is relative, so the
folder can be moved or archived as a whole. No torch: only the run directories are read.
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.reporting.aggregate import (
    TITLES,
    Run,
    build_tables,
    load_runs,
    write_tables,
)
from infodecomp.reporting.csvio import natural_key
from infodecomp.reporting.meta import package_versions
from infodecomp.reporting.tables import MISSING, TABLE1_KEYS, _numeric_like, interval_columns
from infodecomp.reporting.writer import read_results

REPORT = "index.html"
TEMPLATE = "report.html.j2"
TABLE_ORDER = (
    "table1",
    "accuracy_vs_samples",
    "table2",
    "table3",
    "table4",
    "calibration",
    "runs",
)
# Distributions listed in the metadata section (meta.json records more; all are in the tooltip).
KEY_VERSIONS = ("infodecomp", "torch", "diffusers", "transformers", "numpy", "pandas")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _label(run: Run, runs: list[Run]) -> str:
    """A run's short name: its folder, with the parent folder when two runs share a name."""
    names = [r.path.name for r in runs]
    if names.count(run.path.name) > 1:
        return f"{run.path.parent.name}/{run.path.name}"
    return run.path.name


# A number with its uncertainty: "75.0 [45.2, 100.0]" (an interval) or "0.34 ± 0.010".
_WITH_UNCERTAINTY = re.compile(r"^(\S+) (\[[^\]]*\]|± \S+)$")


def _cell(text: str) -> dict[str, str]:
    """A table cell for the page: the number, and its interval or error on a second line (so
    wide tables stay readable at 1280 px; the CSV / LaTeX / Markdown keep one line)."""
    m = _WITH_UNCERTAINTY.match(text)
    return {"main": m.group(1), "sub": m.group(2)} if m else {"main": text, "sub": ""}


def _table(name: str, shown: pd.DataFrame, files: dict[str, str]) -> dict[str, Any]:
    columns = [str(c) for c in shown.columns]
    rows = [[str(v) for v in row] for row in shown.itertuples(index=False)]
    numeric = [_numeric_like([r[i] for r in rows]) for i in range(len(columns))]
    return {
        "id": name,
        "title": TITLES[name],
        "columns": columns,
        "rows": [[_cell(c) for c in row] for row in rows],
        "numeric": numeric,
        "files": files,
    }


def accuracy_curve_data(table1: pd.DataFrame) -> dict[str, dict[str, tuple[list, list]]]:
    """Benchmark column -> line label -> (mean logsnr samples per item, accuracy %), for every
    measured (model, method) of Table 1 with two or more sample counts; {} without a sweep."""
    measured = table1[(table1["source"] == "measured") & table1["n_samples"].notna()]
    # accuracy columns; each has its interval's bounds "<column> lo" / "<column> hi" beside it
    bounds = interval_columns(table1)
    columns = [c for c in table1.columns if c not in TABLE1_KEYS and c not in bounds]
    many_models = measured["model"].nunique() > 1
    out: dict[str, dict[str, tuple[list, list]]] = {}
    for col in columns:
        lines: dict[str, tuple[list, list]] = {}
        for (model, method), grp in measured.groupby(["model", "method"], sort=False):
            grp = grp[grp[col].notna()]
            if grp["n_samples"].nunique() < 2:
                continue
            label = f"{model}: {method}" if many_models else str(method)
            lines[label] = (grp["samples/item"].tolist(), grp[col].tolist())
        if lines:
            out[col] = lines
    return out


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _pm(value: Any, se: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if se is None or (isinstance(se, float) and math.isnan(se)):
        return f"{float(value):.3g} nats"
    return f"{float(value):.3g} ± {float(se):.2g} nats"


def _gallery(run: Run, label: str, assets: Path, root: Path) -> dict[str, Any]:
    """One visualize run: its items with their copied figures, caption, word and totals."""
    results = read_results(run.path)
    folder = assets / _slug(label)
    items = []
    for row in results.to_dict("records"):
        figs = {}
        for col in ("panel", "curves"):
            rel = row.get(col)
            src = run.path / str(rel) if isinstance(rel, str) and rel else None
            if src is not None and src.is_file():
                dest = folder / src.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                figs[col] = dest.relative_to(root).as_posix()
            else:
                figs[col] = None
        items.append(
            {
                "item_id": str(row["item_id"]),
                "word": row.get("word"),
                "caption": row.get("caption") if isinstance(row.get("caption"), str) else None,
                "scores": f"CMI = {_pm(row.get('cmi_total'), row.get('cmi_se'))} · "
                f"MI = {_pm(row.get('mi_total'), row.get('mi_se'))}",
                "panel": figs["panel"],
                "curves": figs["curves"],
            }
        )
    items.sort(key=lambda it: natural_key(it["item_id"]))
    cfg = run.config
    return {
        "label": label,
        "kind": "visualize",
        "setting": run.setting,
        "attention": cfg.get("attention"),
        "n_samples": (cfg.get("estimator") or {}).get("n_samples"),
        "n_curve_samples": cfg.get("n_curve_samples"),
        "entries": items,
    }


def _localize_gallery(run: Run, label: str, assets: Path, root: Path) -> dict[str, Any]:
    """One localize run: the maps it saved (figures/<item>-maps.png, `gallery` items), copied,
    with each item's word and its CMI total at the largest step count."""
    results = read_results(run.path)
    cmi = results[results["method"] == "cmi"] if "method" in results.columns else results
    if "reference" in cmi.columns:
        cmi = cmi[cmi["reference"] != "exact map"]
    top = cmi[cmi["n_steps"] == cmi["n_steps"].max()] if len(cmi) else cmi
    by_item = {str(r["item_id"]): r for r in top.to_dict("records")}
    folder = assets / _slug(label)
    items = []
    for src in sorted((run.path / "figures").glob("*-maps.png"), key=lambda p: natural_key(p.name)):
        item_id = src.name.removesuffix("-maps.png")
        dest = folder / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        row = by_item.get(item_id, {})
        items.append(
            {
                "item_id": item_id,
                "word": row.get("word"),
                "caption": None,
                "scores": f"CMI = {_pm(row.get('value'), None)}" if row else None,
                "panel": dest.relative_to(root).as_posix(),
                "curves": None,
            }
        )
    cfg = run.config
    steps = cfg.get("steps") or []
    return {
        "label": label,
        "kind": "localize",
        "setting": run.setting,
        "attention": cfg.get("attention"),
        "n_samples": max(steps) if steps else None,
        "n_curve_samples": None,
        "entries": items,
    }


def _calibration(run: Run, label: str, out: Path) -> dict[str, Any]:
    """One calibrate run: its MMSE curves (learned vs exact, conditional and unconditional),
    drawn here from curves.csv, and its side-by-side maps, copied."""
    from infodecomp.reporting import figures
    from infodecomp.reporting.calibration import FIGURES, curve_data

    slug = _slug(label)
    curves = None
    data = curve_data(run.path)
    if data:
        fig = figures.mmse_curves(data, title=f"{run.model} vs the exact oracle")
        path = figures.save(fig, out / "figures" / f"calibration-{slug}-mmse.png")
        curves = path.relative_to(out).as_posix()
    maps = []
    for src in sorted((run.path / FIGURES).glob("maps-*.png"), key=lambda p: natural_key(p.name)):
        dest = out / "assets" / slug / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        maps.append(dest.relative_to(out).as_posix())
    return {"label": label, "model": run.model, "curves": curves, "maps": maps}


def _meta(run: Run, label: str) -> dict[str, Any]:
    meta = run.meta
    source = meta.get("model_source") or {}
    git = meta.get("git") or {}
    versions = meta.get("versions") or {}
    commit = git.get("commit")
    headline = {
        k: _fmt(v, 4)
        for k, v in sorted(run.summary.items(), key=lambda kv: natural_key(kv[0]))
        if not k.startswith(("items/", "note/"))
    }
    return {
        "label": label,
        "path": str(run.path),
        "command": run.command,
        "model": run.model,
        "source": source.get("source"),
        "revision": source.get("revision"),
        "data": run.data,
        "dtype": meta.get("dtype"),
        "device": meta.get("device"),
        "seed": meta.get("seed"),
        "n_samples": _fmt(run.n_samples),
        "items_done": meta.get("items_done"),
        "items_skipped": meta.get("items_skipped"),
        "wall_time": _fmt(meta.get("wall_time_s")),
        "finished_at": meta.get("finished_at"),
        "git": (commit[:10] + (" (dirty)" if git.get("dirty") else "")) if commit else MISSING,
        "versions": {k: versions.get(k) for k in KEY_VERSIONS if versions.get(k)},
        "all_versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v),
        "python": meta.get("python"),
        "headline": headline,
    }


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("infodecomp.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def write_report(
    run_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    title: str = "infodecomp report",
    n_boot: int = 1000,
    seed: int = 0,
) -> Path:
    """Writes the report of run directories into `out_dir` and returns the path of index.html.

    Args:
        run_dirs: run directories (or folders searched for run directories below them), as for
            `aggregate`.
        out_dir: the report folder (created; files of an earlier report there are replaced).
        title: the page title.
        n_boot: bootstrap resamples of Table 4's standard errors.
        seed: seed of that bootstrap.
    """
    from infodecomp.reporting import figures

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("assets", "figures"):  # a rerun must not keep the figures of other runs
        shutil.rmtree(out / sub, ignore_errors=True)
    runs = load_runs(run_dirs)
    built = build_tables(runs, n_boot=n_boot, seed=seed)
    write_tables(built, out / "tables")
    tables = []
    for name in sorted(built, key=lambda n: TABLE_ORDER.index(n) if n in TABLE_ORDER else 99):
        files = {ext: f"tables/{name}.{ext}" for ext in ("csv", "tex", "md")}
        tables.append(_table(name, built[name][1], files))

    curves = []
    if "table1" in built:
        data = accuracy_curve_data(built["table1"][0])
        if data:
            fig = figures.accuracy_curves(
                data, xlabel="logsnr samples per image (mean used)", title=None
            )
            path = figures.save(fig, out / "figures" / "accuracy_vs_samples.png")
            curves.append(
                {
                    "src": path.relative_to(out).as_posix(),
                    "alt": "accuracy against logsnr samples per image",
                    "caption": (
                        "Accuracy (%) against the mean number of logsnr samples per image "
                        "(log scale), one panel per benchmark column of Table 1, one line per "
                        "score; the numbers are in the accuracy-vs-samples table."
                    ),
                }
            )

    labels = {id(r): _label(r, runs) for r in runs}
    galleries = [
        _gallery(r, labels[id(r)], out / "assets", out) for r in runs if r.command == "visualize"
    ] + [
        _localize_gallery(r, labels[id(r)], out / "assets", out)
        for r in runs
        if r.command == "localize"
    ]
    calibrations = [_calibration(r, labels[id(r)], out) for r in runs if r.command == "calibrate"]
    meta = [_meta(r, labels[id(r)]) for r in runs]
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=title,
            tables=tables,
            curves=curves,
            galleries=galleries,
            calibrations=calibrations,
            runs=meta,
            n_runs=len(runs),
            version=package_versions(("infodecomp",))["infodecomp"] or "unknown",
        )
    )
    path = out / REPORT
    path.write_text(html, encoding="utf-8")
    return path

"""Layout of the ARO tables and rendering of every table to Markdown, LaTeX and CSV.

No extra dependencies (no tabulate / jinja2): the renderers below are small and explicit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.csvio import natural_key
from infodecomp.reporting.metrics import wilson_interval
from infodecomp.scores import SCORE_NAMES, SCORES
from infodecomp.tasks import column_label, column_order, get_task

MISSING = "–"
NAN = float("nan")
ESTIMATOR_ORDER = SCORE_NAMES
ESTIMATOR_LABELS = {name: s.label for name, s in SCORES.items()}
Formatter = Callable[[Any], str]


def is_missing(value: Any) -> bool:
    """True for None and NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt_number(digits: int) -> Formatter:
    """Formatter with a fixed number of decimals; missing values become an en dash."""

    def fmt(value: Any) -> str:
        return MISSING if is_missing(value) else f"{float(value):.{digits}f}"

    return fmt


def fmt_int(value: Any) -> str:
    """Integer formatter; missing values become an en dash."""
    return MISSING if is_missing(value) else str(int(value))


def fmt_pm(value: Any, se: Any, digits: int = 2, se_digits: int = 3) -> str:
    """``0.34 ± 0.010``; the ± part is left out when the error is missing."""
    if is_missing(value):
        return MISSING
    if is_missing(se):
        return f"{float(value):.{digits}f}"
    return f"{float(value):.{digits}f} ± {float(se):.{se_digits}f}"


def display(df: pd.DataFrame, formats: Mapping[str, Formatter] | None = None) -> pd.DataFrame:
    """Strings for every cell: ``formats[column]`` where given, plain text otherwise."""
    formats = dict(formats or {})
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        fmt = formats.get(col)
        if fmt is None:

            def fmt(v: Any) -> str:
                if isinstance(v, bool):
                    return "yes" if v else "no"
                return MISSING if is_missing(v) else str(v)

        out[col] = [fmt(v) for v in df[col].tolist()]
    return out


def _numeric_like(values: list[str]) -> bool:
    pat = re.compile(r"^[-+−]?\d[\d.,]*( ± [\d.]+| \[[\d.]+, [\d.]+\])?%?$")
    present = [v for v in values if v != MISSING]
    return bool(present) and all(pat.match(v) for v in present)


def to_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """Pipe table (GitHub flavour) of a frame of strings; numeric columns right-aligned."""
    cols = [str(c) for c in table.columns]
    cells = [[str(v).replace("|", "\\|") for v in row] for row in table.itertuples(index=False)]
    align = ["---:" if _numeric_like([r[i] for r in cells]) else "---" for i in range(len(cols))]
    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |")
    lines.append("| " + " | ".join(align) + " |")
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "–": "--",
    "·": r"$\cdot$",
}
_SUPERSCRIPT = re.compile(r"\b([A-Za-z])\^(\w+)")


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; ``i^o`` becomes ``$i^{o}$``, ``±`` becomes ``$\\pm$``."""
    out, pos = [], 0
    for m in _SUPERSCRIPT.finditer(text):
        out.append("".join(_LATEX_SPECIAL.get(ch, ch) for ch in text[pos : m.start()]))
        out.append(f"${m.group(1)}^{{{m.group(2)}}}$")
        pos = m.end()
    out.append("".join(_LATEX_SPECIAL.get(ch, ch) for ch in text[pos:]))
    return "".join(out)


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """booktabs ``table`` environment of a frame of strings; numeric columns right-aligned."""
    cols = [str(c) for c in table.columns]
    rows = [[str(v) for v in row] for row in table.itertuples(index=False)]
    spec = "".join("r" if _numeric_like([r[i] for r in rows]) else "l" for i in range(len(cols)))
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in cols) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(latex_escape(v) for v in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    data: pd.DataFrame,
    shown: pd.DataFrame,
    out_dir: str | Path,
    name: str,
    title: str,
    notes: Iterable[str] | None = None,
    note: str = "",
) -> str:
    """Write ``{name}.csv`` (numbers), ``{name}.md`` and ``{name}.tex`` (formatted); return the md.

    Args:
        data: numeric frame, written to CSV at full precision.
        shown: the same table as strings, for Markdown and LaTeX.
        out_dir: output folder (created if missing).
        name: file stem, e.g. ``table1``.
        title: heading / caption.
        notes: footnote lines printed under the Markdown and LaTeX table.
        note: a paragraph under the table (what its rows mean), if any.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data.to_csv(out_dir / f"{name}.csv", index=False)
    notes = list(notes or [])
    md = to_markdown(shown, title) + (f"\n{note}\n" if note else "")
    if notes:
        md += "\n" + "".join(f"- {n}\n" for n in notes)
    (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
    tex = to_latex(shown, title, f"tab:{name}")
    if note:
        tex = tex.replace(
            r"\end{tabular}",
            r"\end{tabular}" + "\n" + rf"\par\smallskip{{\footnotesize {latex_escape(note)}}}",
        )
    if notes:
        body = r" \\ ".join(latex_escape(n) for n in notes)
        tex = tex.replace(r"\end{table}", rf"{{\footnotesize {body}}}" + "\n" + r"\end{table}")
    (out_dir / f"{name}.tex").write_text(tex, encoding="utf-8")
    return md


# ------------------------------------------------------------------------------- ARO layout


def int_or_none(value: Any) -> int | None:
    """An int, or None for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


def _subset_order(keys: Iterable[str]) -> list[str]:
    """Table 1 columns in order: see tasks.column_order."""
    return column_order(keys)


def _subset_label(key: str) -> str:
    return column_label(key)


TABLE1_KEYS = ("model", "method", "n_samples", "samples/item", "source")
TABLE2_KEYS = ("model", "n_samples", "subset", "group", "n", "in_metric")


def estimator_method(estimator: str, adaptive: bool) -> str:
    """Row label of an estimator: ``Info. i^o``, ``Info. i^o (adaptive)``, ..."""
    return ESTIMATOR_LABELS.get(estimator, estimator) + (" (adaptive)" if adaptive else "")


def table1(rec: pd.DataFrame) -> pd.DataFrame:
    """Rows = model x method x n_samples (+ published methods in the paper's setting).

    Args:
        rec: one row per model x method x n_samples x subset with ``accuracy`` (%),
            ``n_items``, ``mean_samples`` (logsnr samples actually used per item), ``paper``
            (the run is in the paper's setting) and ``source`` ("measured", or e.g.
            "shuffled-images control": every item's captions scored on another item's image),
            in display order.
    """
    subsets = _subset_order(rec["subset"])
    rows = []
    if "source" not in rec.columns:
        rec = rec.assign(source="measured")
    for (model, method, n, source), grp in rec.groupby(
        ["model", "method", "n_samples", "source"], sort=False, dropna=False
    ):
        own = grp[~grp["derived"]] if "derived" in grp.columns else grp
        used = float((own["mean_samples"] * own["n_items"]).sum() / own["n_items"].sum())
        row = {
            "model": model,
            "method": method,
            "n_samples": int_or_none(n),
            "samples/item": used,
            "source": source,
        }
        acc = dict(zip(grp["subset"], grp["accuracy"], strict=True))
        lo = dict(zip(grp["subset"], grp.get("accuracy_lo", grp["accuracy"] * NAN), strict=True))
        hi = dict(zip(grp["subset"], grp.get("accuracy_hi", grp["accuracy"] * NAN), strict=True))
        for s in subsets:
            row[_subset_label(s)] = acc.get(s, NAN)
            row[f"{_subset_label(s)} lo"] = lo.get(s, NAN)
            row[f"{_subset_label(s)} hi"] = hi.get(s, NAN)
        rows.append(row)
    if rec["paper"].any():
        for method, values in pub.TABLE1.items():
            n = pub.PAPER_N_SAMPLES if method == pub.TABLE1_INFO_METHOD else None
            row = {
                "model": "paper",
                "method": method,
                "n_samples": n,
                "samples/item": float("nan") if n is None else float(n),
                "source": "published",
            }
            for s in subsets:
                row[_subset_label(s)] = values.get(s, NAN)
                row[f"{_subset_label(s)} lo"] = row[f"{_subset_label(s)} hi"] = NAN
            rows.append(row)
    return pd.DataFrame(rows)


def fmt_interval(value: Any, lo: Any, hi: Any, digits: int = 1) -> str:
    """``33.3 [9.7, 70.0]``; the interval is left out when it is missing."""
    if is_missing(value):
        return MISSING
    if is_missing(lo) or is_missing(hi):
        return f"{float(value):.{digits}f}"
    return f"{float(value):.{digits}f} [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"


def interval_columns(table: pd.DataFrame) -> set[str]:
    """The ``<column> lo`` / ``<column> hi`` bounds beside Table 1's accuracy columns."""
    return {f"{c} {b}" for c in table.columns for b in ("lo", "hi")} & set(table.columns)


def table1_shown(t1: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """Table 1 (or 2) as strings: ``accuracy [lo, hi]`` cells, the 95 % interval of
    metrics.accuracy_interval (published numbers have none)."""
    shown = shown.copy()
    for col in [c for c in t1.columns if f"{c} lo" in t1.columns]:
        shown[col] = [
            fmt_interval(v, lo, hi)
            for v, lo, hi in zip(t1[col], t1[f"{col} lo"], t1[f"{col} hi"], strict=True)
        ]
        shown = shown.drop(columns=[f"{col} lo", f"{col} hi"])
    return shown


def accuracy_vs_samples(rec: pd.DataFrame) -> pd.DataFrame | None:
    """Rows = n_samples, columns = subset x method; None unless n_samples was swept."""
    if rec["n_samples"].dropna().nunique() < 2:
        return None
    many_models = rec["model"].nunique() > 1
    table: dict[int | None, dict[str, float]] = {}
    columns: list[str] = []
    for subset in _subset_order(rec["subset"]):
        for _, r in rec[rec["subset"] == subset].iterrows():
            col = f"{_subset_label(subset)} {r.method}"
            col = f"{r.model} {col}" if many_models else col
            if col not in columns:
                columns.append(col)
            table.setdefault(r.n_samples, {})[col] = r.accuracy
    keys = sorted(table, key=lambda n: -1 if n is None else n)
    return pd.DataFrame(
        [{"n_samples": n} | {c: table[n].get(c, float("nan")) for c in columns} for n in keys]
    )


def _group_table_label(subset: str) -> str:
    """Table 2 shows each task's per-group accuracy; for a task with several metrics (Winoground)
    that is its last, strictest one (the group score)."""
    task = get_task(subset)
    return task.label if len(task.metrics) == 1 else f"{task.label} ({task.metrics[-1]} score)"


def table2(groups: pd.DataFrame) -> pd.DataFrame:
    """Per relation / attribute pair accuracy (%); one column per method, in order of appearance."""
    order = {s: i for i, s in enumerate(_subset_order(groups["subset"]))}
    methods = list(dict.fromkeys(groups["method"]))
    table: dict[tuple, dict[str, Any]] = {}
    for r in groups.itertuples(index=False):
        key = (r.model, r.n_samples, r.subset, r.group, int(r.n), bool(r.included))
        table.setdefault(key, {})[r.method] = r.accuracy
    keys = sorted(
        table,
        key=lambda k: (k[0], -1 if k[1] is None else k[1], order[k[2]], natural_key(str(k[3]))),
    )
    out = pd.DataFrame(
        [
            dict(zip(TABLE2_KEYS, (k[0], k[1], _group_table_label(k[2]), *k[3:]), strict=True))
            | {m: table[k].get(m, float("nan")) for m in methods}
            for k in keys
        ]
    )
    # each group's 95% Wilson score interval (a group of 1 or 3 items all right is not 100 +- 0)
    for m in methods:
        bounds = [
            (NAN, NAN) if is_missing(a) else wilson_interval(round(a * n / 100), n)
            for a, n in zip(out[m], out["n"], strict=True)
        ]
        out[f"{m} lo"] = [100 * lo for lo, _ in bounds]
        out[f"{m} hi"] = [100 * hi for _, hi in bounds]
    return out


def table4_shown(data: pd.DataFrame) -> pd.DataFrame:
    """Table 4 as strings: ``r ± se`` cells."""
    keys = [c for c in ("setting", "edit", "words", "method") if c in data.columns]
    shown = data[keys].copy()
    shown["image-level r"] = [
        fmt_pm(r, s) for r, s in zip(data.image_r, data.image_se, strict=True)
    ]
    shown["pixel-level r"] = [
        fmt_pm(r, s) for r, s in zip(data.pixel_r, data.pixel_se, strict=True)
    ]
    shown["items"] = data["n_items"].astype(str)
    if "published_image_r" in data.columns:
        for level in ("image", "pixel"):
            shown[f"published {level}-level"] = [
                fmt_pm(r, s)
                for r, s in zip(
                    data[f"published_{level}_r"], data[f"published_{level}_se"], strict=True
                )
            ]
    if "note" in data.columns and (data["note"].astype(str) != "").any():
        shown["note"] = data["note"].fillna("").astype(str)
    return shown.astype(str)

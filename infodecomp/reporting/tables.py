"""Rendering of result tables to Markdown, LaTeX (booktabs) and CSV, without extra dependencies."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

MISSING = "–"
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
    pat = re.compile(r"^[-+−]?\d[\d.,]*( ± [\d.]+)?%?$")
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


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "−": r"$-$", "–": "--", "·": r"$\cdot$"}
_SUPERSCRIPT = re.compile(r"\b([A-Za-z])\^(\w+)")


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; ``i^o`` becomes ``$i^{o}$``, ``±`` becomes ``$\\pm$``."""
    out, pos = [], 0
    for m in _SUPERSCRIPT.finditer(text):
        out.append("".join(_LATEX_SPECIAL.get(ch, ch) for ch in text[pos:m.start()]))
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
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(data: pd.DataFrame, shown: pd.DataFrame, out_dir: str | Path, name: str,
                title: str) -> str:
    """Write ``{name}.csv`` (numbers), ``{name}.md`` and ``{name}.tex`` (formatted); return the md.

    Args:
        data: numeric frame, written to CSV at full precision.
        shown: the same table as strings, for Markdown and LaTeX.
        out_dir: output folder (created if missing).
        name: file stem, e.g. ``table1``.
        title: heading / caption.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data.to_csv(out_dir / f"{name}.csv", index=False)
    md = to_markdown(shown, title)
    (out_dir / f"{name}.md").write_text(md, encoding="utf-8")
    (out_dir / f"{name}.tex").write_text(to_latex(shown, title, f"tab:{name}"), encoding="utf-8")
    return md

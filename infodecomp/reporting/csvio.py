"""CSV primitives of the run directory's exports (results.csv, skipped.csv) and reading them back.

The crash-safe state lives in the SQLite store (infodecomp.reporting.store); these helpers render
its rows as CSV text exactly as the results schema documents, and parse such text with pandas.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

# Columns that always hold text, even when every value looks numeric.
TEXT_COLUMNS = (
    "item_id",
    "subset",
    "group",
    "text",
    "word",
    "word_type",
    "edit",
    "split",
    "method",
    "reference",
    "estimator",
    "values_from",
    "reason",
)


def fsync_write(handle: Any, text: str) -> None:
    """Write, flush and fsync, so the text is on disk when this returns."""
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())


def atomic_write(path: Path, text: str) -> None:
    """Replace a file in one step (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            fsync_write(f, text)
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no half-written temporary file is left behind
        tmp.unlink(missing_ok=True)
        raise


def format_value(value: Any) -> str:
    """CSV text of one value: None and NaN become empty, numpy scalars plain numbers."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar -> python, so floats print round-trippably
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def render_rows(rows: Iterable[Sequence[Any]]) -> str:
    """CSV text of rows (``\\n`` line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([format_value(v) for v in row])
    return buf.getvalue()


def natural_key(value: str) -> tuple:
    """Sort key that orders ``item-9`` before ``item-10``."""
    return tuple(
        (0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value) if t
    )


def parse_results(text: str, source: str) -> pd.DataFrame:
    """Results CSV text -> DataFrame: empty fields NaN, identifier and text columns strings
    ("null", "none" and "nan" stay words). A malformed file is a ValueError naming `source`."""
    try:
        header = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as err:
        raise ValueError(f"{source}: cannot read the header ({err})") from err
    if not header:
        raise ValueError(f"{source}: empty file, no header")
    if "item_id" not in header:
        raise ValueError(f"{source}: no 'item_id' column in header {header}")
    dtypes = {c: str for c in TEXT_COLUMNS if c in header}
    try:
        df = pd.read_csv(
            io.StringIO(text),
            dtype=dtypes,
            keep_default_na=False,
            na_values=[""],
            on_bad_lines="error",
        )
    except (pd.errors.ParserError, ValueError) as err:
        raise ValueError(
            f"{source}: not a well-formed results CSV ({' '.join(str(err).split())})"
        ) from err
    if df["item_id"].isna().any():
        row = int(df.index[df["item_id"].isna()][0]) + 1
        raise ValueError(f"{source}: data row {row} has no item_id")
    return df

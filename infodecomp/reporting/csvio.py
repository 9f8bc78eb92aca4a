"""Crash-safe CSV primitives shared by the writer, plus reading and merging run results.

A results file is only ever appended to; an item counts as finished once its id is in the done
file beside it (``results.csv`` -> ``done.txt``, ``results.part-3.csv`` -> ``done.part-3.txt``).
Readers here take the rows of finished items only, so a run killed mid-item reads consistently.
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

RESULTS = "results.csv"
SKIPPED = "skipped.csv"
_PART_RE = re.compile(r"^(?P<stem>.+)\.part-(?P<rank>\d+)\.csv$")
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


def done_filename(filename: str) -> str:
    """Name of the done-marker sidecar for a results file.

    ``results.csv`` -> ``done.txt``, ``results.part-3.csv`` -> ``done.part-3.txt``,
    any other ``x.csv`` -> ``x.done.txt``.
    """
    stem = filename[:-4] if filename.endswith(".csv") else filename
    if stem.startswith("results"):
        return "done" + stem[len("results") :] + ".txt"
    return stem + ".done.txt"


def part_filename(rank: int, filename: str = RESULTS) -> str:
    """``results.csv`` -> ``results.part-{rank}.csv`` (the file rank ``rank`` writes)."""
    stem = filename[:-4] if filename.endswith(".csv") else filename
    return f"{stem}.part-{int(rank)}.csv"


def fsync_write(handle: Any, text: str) -> None:
    """Write, flush and fsync, so the text is on disk when this returns."""
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())


def atomic_write(path: Path, text: str) -> None:
    """Replace a file in one step (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        fsync_write(f, text)
    os.replace(tmp, path)


def split_records(text: str) -> tuple[list[str], bool]:
    """Split CSV text into complete records (each with its newline) honouring quoted newlines.

    Returns the records and whether a partial trailing record was dropped.
    """
    records: list[str] = []
    current: list[str] = []
    in_quotes = False
    pieces = text.split("\n")
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        current.append(piece if last else piece + "\n")
        # A doubled quote toggles twice, so parity of the quote count tracks the quoting state.
        if piece.count('"') % 2:
            in_quotes = not in_quotes
        if not last and not in_quotes:
            records.append("".join(current))
            current = []
    tail = "".join(current)
    return records, bool(tail)


def parse_record(record: str) -> list[str]:
    """Fields of one CSV record."""
    return next(csv.reader(io.StringIO(record)))


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


def read_done(path: Path) -> tuple[list[str], bool]:
    """Complete lines of a done file and whether a partial last line was found."""
    if not path.exists():
        return [], False
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    partial = lines[-1] != ""
    return [line for line in lines[:-1] if line], partial


def read_table(
    path: Path, done_path: Path | None
) -> tuple[list[str] | None, list[list[str]], list[str]]:
    """Header, rows of finished items and the ordered done ids of one CSV (read only, no repair)."""
    if not path.exists():
        return None, [], []
    records, _ = split_records(path.read_text(encoding="utf-8"))
    if not records:
        return None, [], []
    header = parse_record(records[0])
    rows = [parse_record(r) for r in records[1:]]
    if "item_id" not in header:
        raise ValueError(f"{path}: no 'item_id' column in header {header}.")
    key = header.index("item_id")
    if done_path is None or not done_path.exists():
        # No marker file: not written by ResultsWriter (which creates it first), so take all rows.
        return header, rows, list(dict.fromkeys(r[key] for r in rows))
    done, _ = read_done(done_path)
    done_set = set(done)
    return header, [r for r in rows if r[key] in done_set], list(dict.fromkeys(done))


def natural_key(value: str) -> tuple:
    """Sort key that orders ``item-9`` before ``item-10``."""
    return tuple(
        (0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value) if t
    )


def _parts(run_dir: Path, filename: str) -> list[Path]:
    stem = filename[:-4]
    found = []
    for p in run_dir.iterdir() if run_dir.is_dir() else ():
        m = _PART_RE.match(p.name)
        if m and m.group("stem") == stem:
            found.append((int(m.group("rank")), p))
    return [p for _, p in sorted(found)]


def _gather(
    run_dir: Path, filename: str, with_done: bool
) -> tuple[list[str], list[list[str]], list[str]]:
    """Rows of finished items from ``filename`` and its parts; an item's first source wins."""
    sources = [run_dir / filename] + _parts(run_dir, filename)
    sources = [p for p in sources if p.exists()]
    if not sources:
        raise FileNotFoundError(
            f"{run_dir}: neither {filename} nor {part_filename(0, filename)}"
            " exists; is this a run directory?"
        )
    header: list[str] | None = None
    rows: list[list[str]] = []
    done: list[str] = []
    owner: dict[str, Path] = {}
    for path in sources:
        dpath = path.with_name(done_filename(path.name)) if with_done else None
        h, part_rows, part_done = read_table(path, dpath)
        if h is None:
            continue
        if header is None:
            header = h
        elif h != header:
            raise ValueError(
                f"{path}: header {h} differs from {header} in {sources[0]}; the parts "
                "were written by different commands or versions."
            )
        key = header.index("item_id")
        ids = part_done if with_done else list(dict.fromkeys(r[key] for r in part_rows))
        fresh = {i for i in ids if i not in owner}
        for i in fresh:
            owner[i] = path
        done.extend(i for i in ids if i in fresh)
        rows.extend(r for r in part_rows if r[key] in fresh)
    if header is None:
        raise ValueError(f"{run_dir}: {filename} and its parts are empty (no header).")
    key = header.index("item_id")
    rows.sort(key=lambda r: natural_key(r[key]))  # stable: rows of an item keep their order
    return header, rows, sorted(done, key=natural_key)


def merge_parts(run_dir: str | Path, filename: str = RESULTS) -> Path:
    """Join the shards ``results.part-{rank}.csv`` of a data-parallel run into ``results.csv``.

    Only rows of finished items (listed in each part's done file) are taken. Rows are sorted by
    item id (natural order, stable within an item). An item present in several sources is taken
    once, from the first of: an existing ``results.csv``, then parts by rank. The done file and
    ``skipped.part-*.csv`` logs are merged too. Part files are left in place, so merging again
    gives the same result.

    Args:
        run_dir: the run directory.
        filename: the merged file name.

    Returns:
        Path of the merged results file.
    """
    run_dir = Path(run_dir)
    header, rows, done = _gather(run_dir, filename, with_done=True)
    out = run_dir / filename
    atomic_write(out, render_rows([header, *rows]))
    atomic_write(out.with_name(done_filename(filename)), "".join(f"{d}\n" for d in done))
    if _parts(run_dir, SKIPPED):
        sk_header, sk_rows, _ = _gather(run_dir, SKIPPED, with_done=False)
        atomic_write(run_dir / SKIPPED, render_rows([sk_header, *sk_rows]))
    return out


def read_results(run_dir: str | Path, filename: str = RESULTS) -> pd.DataFrame:
    """Load the finished rows of a run (from ``results.csv`` and any parts) as a DataFrame.

    Rows of items without a done marker (a run killed mid-item) are left out. Empty fields are
    NaN; identifier and text columns stay strings ("null", "none" and "nan" are kept as words).
    """
    run_dir = Path(run_dir)
    header, rows, _ = _gather(run_dir, filename, with_done=True)
    text = render_rows([header, *rows])
    dtypes = {c: str for c in TEXT_COLUMNS if c in header}
    return pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False, na_values=[""])

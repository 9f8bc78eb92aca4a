"""Crash-safe appending CSV writer for run directories, with resume and shard merging.

Layout of a run directory (see docs/design.md section 3):

- ``results.csv``: long-format rows, header written once.
- ``done.txt``: one item id per line, appended only after that item's rows are on disk. An item is
  finished exactly when its id is in this file; rows of unfinished items are removed on reopen.
- ``skipped.csv``: ``item_id,reason`` for items left out of the run.
- data-parallel shards write ``results.part-{rank}.csv`` + ``done.part-{rank}.txt`` (and
  ``skipped.part-{rank}.csv``); :func:`merge_parts` joins them into the files above.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS = "results.csv"
SKIPPED = "skipped.csv"
_PART_RE = re.compile(r"^(?P<stem>.+)\.part-(?P<rank>\d+)\.csv$")
# Columns that always hold text, even when every value looks numeric.
TEXT_COLUMNS = ("item_id", "subset", "group", "text", "word", "word_type", "edit", "split",
                "method", "estimator", "reason")


def done_filename(filename: str) -> str:
    """Name of the done-marker sidecar for a results file.

    ``results.csv`` -> ``done.txt``, ``results.part-3.csv`` -> ``done.part-3.txt``,
    any other ``x.csv`` -> ``x.done.txt``.
    """
    stem = filename[:-4] if filename.endswith(".csv") else filename
    if stem.startswith("results"):
        return "done" + stem[len("results"):] + ".txt"
    return stem + ".done.txt"


def part_filename(rank: int, filename: str = RESULTS) -> str:
    """``results.csv`` -> ``results.part-{rank}.csv`` (the file rank ``rank`` writes)."""
    stem = filename[:-4] if filename.endswith(".csv") else filename
    return f"{stem}.part-{int(rank)}.csv"


def _fsync_write(handle: Any, text: str) -> None:
    handle.write(text)
    handle.flush()
    os.fsync(handle.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        _fsync_write(f, text)
    os.replace(tmp, path)


def _split_records(text: str) -> tuple[list[str], bool]:
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


def _parse(record: str) -> list[str]:
    return next(csv.reader(io.StringIO(record)))


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalar -> python, so floats print round-trippably
        if isinstance(value, float) and math.isnan(value):
            return ""
    return str(value)


def _render(rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([_format(v) for v in row])
    return buf.getvalue()


def _read_done(path: Path) -> tuple[list[str], bool]:
    """Complete lines of a done file and whether a partial last line was found."""
    if not path.exists():
        return [], False
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    partial = lines[-1] != ""
    return [line for line in lines[:-1] if line], partial


def _read_table(path: Path, done_path: Path | None) -> tuple[list[str] | None, list[list[str]], list[str]]:
    """Header, rows of finished items and the ordered done ids of one CSV (read only, no repair)."""
    if not path.exists():
        return None, [], []
    records, _ = _split_records(path.read_text(encoding="utf-8"))
    if not records:
        return None, [], []
    header = _parse(records[0])
    rows = [_parse(r) for r in records[1:]]
    if "item_id" not in header:
        raise ValueError(f"{path}: no 'item_id' column in header {header}.")
    key = header.index("item_id")
    if done_path is None or not done_path.exists():
        # No marker file: not written by ResultsWriter (which creates it first), so take all rows.
        return header, rows, list(dict.fromkeys(r[key] for r in rows))
    done, _ = _read_done(done_path)
    done_set = set(done)
    return header, [r for r in rows if r[key] in done_set], list(dict.fromkeys(done))


class ResultsWriter:
    """Append-only CSV of results that survives being killed at any point.

    Each call to :meth:`append` writes the rows of whole items in one write, fsyncs, and only then
    appends the items' ids to the done file (fsynced too). On opening an existing file, a
    truncated last line is dropped, the header is checked against ``columns``, and rows of items
    missing from the done file are removed, so a resumed run never duplicates rows.

    Args:
        run_dir: the run directory (created if missing).
        filename: CSV file name inside ``run_dir``.
        columns: column names, in order. Every row must have exactly these keys.
        id_column: the column identifying an item.

    Attributes:
        dropped_rows: rows of unfinished items removed when the file was reopened.
        dropped_partial: whether a truncated last line was dropped on reopen.
    """

    def __init__(self, run_dir: str | Path, filename: str = RESULTS, columns: Sequence[str] = (),
                 *, id_column: str = "item_id") -> None:
        self.columns = list(columns)
        if not self.columns:
            raise ValueError(f"ResultsWriter({filename}): `columns` is empty; pass the column names.")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"ResultsWriter({filename}): duplicate column names in {self.columns}.")
        if id_column not in self.columns:
            raise ValueError(f"ResultsWriter({filename}): id column '{id_column}' is not among "
                             f"the columns {self.columns}; add it or pass id_column=.")
        self.id_column = id_column
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / filename
        self.done_path = self.run_dir / done_filename(filename)
        self.dropped_rows = 0
        self.dropped_partial = False
        self._done: list[str] = []
        self._done_set: set[str] = set()
        self._recover()
        self._fh = open(self.path, "a", encoding="utf-8", newline="")
        self._done_fh = open(self.done_path, "a", encoding="utf-8", newline="")

    def _recover(self) -> None:
        text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        records, partial = _split_records(text)
        self.dropped_partial = partial
        if not records:  # new file, or killed while writing the header
            _atomic_write(self.path, _render([self.columns]))
            _atomic_write(self.done_path, "")
            return
        header = _parse(records[0])
        if header != self.columns:
            raise ValueError(
                f"{self.path}: header {header} does not match the expected columns {self.columns}. "
                "This file was written by a different version or command; use a fresh run "
                "directory (run.out_dir=...) or move the old file away."
            )
        key = self.columns.index(self.id_column)
        if not self.done_path.exists():
            # The writer creates the marker file before any row, so its absence means the rows
            # came from elsewhere (e.g. merge_parts output copied without it): all are finished.
            ids = dict.fromkeys(_parse(r)[key] for r in records[1:])
            _atomic_write(self.done_path, "".join(f"{i}\n" for i in ids))
        done, done_partial = _read_done(self.done_path)
        self._done = list(dict.fromkeys(done))
        self._done_set = set(self._done)
        if done_partial:
            _atomic_write(self.done_path, "".join(f"{d}\n" for d in self._done))
        kept = [records[0]]
        for record in records[1:]:
            if _parse(record)[key] in self._done_set:
                kept.append(record)
            else:
                self.dropped_rows += 1
        if partial or self.dropped_rows:
            _atomic_write(self.path, "".join(kept))

    def _check_row(self, row: Mapping[str, Any]) -> list[Any]:
        keys = set(row)
        if keys != set(self.columns):
            missing = [c for c in self.columns if c not in keys]
            extra = sorted(keys - set(self.columns))
            raise ValueError(f"{self.path}: row {dict(row)} does not fit the columns: missing "
                             f"{missing}, unexpected {extra}. Give every column (None for empty).")
        return [row[c] for c in self.columns]

    def append(self, rows: Sequence[Mapping[str, Any]], *, mark_done: bool = True) -> None:
        """Write the rows of one or more whole items, then mark those items done.

        Args:
            rows: one dict per row with exactly the writer's columns.
            mark_done: append the items' ids to the done file after the rows are on disk. Pass
                False only when further rows of these items follow; then call :meth:`mark_done`.

        Raises:
            ValueError: a row has missing/unknown keys, or an item is already marked done.
        """
        values = [self._check_row(r) for r in rows]
        ids = list(dict.fromkeys(_format(r[self.id_column]) for r in rows))
        again = [i for i in ids if i in self._done_set]
        if again:
            raise ValueError(f"{self.path}: items {again[:5]} are already done; skip items in "
                             "done_ids() when resuming instead of writing them again.")
        if values:
            _fsync_write(self._fh, _render(values))
        if mark_done:
            self.mark_done(ids)

    def mark_done(self, item_ids: Iterable[Any]) -> None:
        """Record items as finished (their rows must already have been appended)."""
        new = [i for i in dict.fromkeys(_format(i) for i in item_ids) if i not in self._done_set]
        bad = [i for i in new if not i or "\n" in i]
        if bad:
            raise ValueError(f"{self.done_path}: item ids must be non-empty single-line strings, "
                             f"got {bad!r}.")
        if new:
            _fsync_write(self._done_fh, "".join(f"{i}\n" for i in new))
            self._done.extend(new)
            self._done_set.update(new)

    def done_ids(self, column: str = "item_id") -> set[str]:
        """Values of ``column`` over finished items (the finished item ids for the id column)."""
        if column == self.id_column:
            return set(self._done_set)
        if column not in self.columns:
            raise KeyError(f"{self.path}: no column '{column}'; columns are {self.columns}.")
        header, rows, _ = _read_table(self.path, self.done_path)
        assert header is not None
        key = header.index(column)
        return {r[key] for r in rows}

    @property
    def n_done(self) -> int:
        """Number of finished items."""
        return len(self._done)

    def close(self) -> None:
        """Close the file handles (everything written is already on disk)."""
        self._fh.close()
        self._done_fh.close()

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SkipLog:
    """Append-only ``skipped.csv`` (item_id, reason) with the same crash safety as the results.

    Each skip is one fsynced line; a truncated last line is dropped on reopen. Skipping an item
    that is already logged is a no-op, so a resumed run can skip it again without duplicates.
    """

    columns = ("item_id", "reason")

    def __init__(self, run_dir: str | Path, filename: str = SKIPPED) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / filename
        text = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        records, partial = _split_records(text)
        self._reasons: dict[str, str] = {}
        if records:
            header = _parse(records[0])
            if header != list(self.columns):
                raise ValueError(f"{self.path}: header {header} is not {list(self.columns)}; "
                                 "move the file away or use a fresh run directory.")
            for record in records[1:]:
                item_id, reason = _parse(record)
                self._reasons.setdefault(item_id, reason)
        if not records:
            _atomic_write(self.path, _render([self.columns]))
        elif partial:
            _atomic_write(self.path, "".join(records))
        self._fh = open(self.path, "a", encoding="utf-8", newline="")

    def add(self, item_id: Any, reason: str) -> None:
        """Log one skipped item with a human-readable reason."""
        key = _format(item_id)
        if key in self._reasons:
            return
        _fsync_write(self._fh, _render([[key, reason]]))
        self._reasons[key] = reason

    def skipped_ids(self) -> set[str]:
        """Ids of the items logged as skipped."""
        return set(self._reasons)

    @property
    def count(self) -> int:
        """Number of distinct skipped items."""
        return len(self._reasons)

    def reasons(self) -> dict[str, str]:
        """item id -> reason."""
        return dict(self._reasons)

    def close(self) -> None:
        """Close the file handle."""
        self._fh.close()

    def __enter__(self) -> SkipLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def natural_key(value: str) -> tuple:
    """Sort key that orders ``item-9`` before ``item-10``."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.split(r"(\d+)", value) if t)


def _parts(run_dir: Path, filename: str) -> list[Path]:
    stem = filename[:-4]
    found = []
    for p in run_dir.iterdir() if run_dir.is_dir() else ():
        m = _PART_RE.match(p.name)
        if m and m.group("stem") == stem:
            found.append((int(m.group("rank")), p))
    return [p for _, p in sorted(found)]


def _gather(run_dir: Path, filename: str, with_done: bool) -> tuple[list[str], list[list[str]], list[str]]:
    """Rows of finished items from ``filename`` and its parts; an item's first source wins."""
    sources = [run_dir / filename] + _parts(run_dir, filename)
    sources = [p for p in sources if p.exists()]
    if not sources:
        raise FileNotFoundError(f"{run_dir}: neither {filename} nor {part_filename(0, filename)}"
                                " exists; is this a run directory?")
    header: list[str] | None = None
    rows: list[list[str]] = []
    done: list[str] = []
    owner: dict[str, Path] = {}
    for path in sources:
        dpath = path.with_name(done_filename(path.name)) if with_done else None
        h, part_rows, part_done = _read_table(path, dpath)
        if h is None:
            continue
        if header is None:
            header = h
        elif h != header:
            raise ValueError(f"{path}: header {h} differs from {header} in {sources[0]}; the parts "
                             "were written by different commands or versions.")
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
    _atomic_write(out, _render([header, *rows]))
    _atomic_write(out.with_name(done_filename(filename)), "".join(f"{d}\n" for d in done))
    if _parts(run_dir, SKIPPED):
        sk_header, sk_rows, _ = _gather(run_dir, SKIPPED, with_done=False)
        _atomic_write(run_dir / SKIPPED, _render([sk_header, *sk_rows]))
    return out


def read_results(run_dir: str | Path, filename: str = RESULTS) -> pd.DataFrame:
    """Load the finished rows of a run (from ``results.csv`` and any parts) as a DataFrame.

    Rows of items without a done marker (a run killed mid-item) are left out. Empty fields are
    NaN; identifier and text columns stay strings ("null", "none" and "nan" are kept as words).
    """
    run_dir = Path(run_dir)
    header, rows, _ = _gather(run_dir, filename, with_done=True)
    text = _render([header, *rows])
    dtypes = {c: str for c in TEXT_COLUMNS if c in header}
    return pd.read_csv(io.StringIO(text), dtype=dtypes, keep_default_na=False, na_values=[""])

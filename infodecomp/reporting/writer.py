"""Crash-safe appending CSV writer for run directories, with resume and shard merging.

Layout of a run directory (see docs/architecture.md, 'Run directories'):

- ``results.csv``: long-format rows, header written once.
- ``done.txt``: one item id per line, appended only after that item's rows are on disk. An item is
  finished exactly when its id is in this file; rows of unfinished items are removed on reopen.
- ``skipped.csv``: ``item_id,reason`` for items left out of the run.
- data-parallel shards write ``results.part-{rank}.csv`` + ``done.part-{rank}.txt`` (and
  ``skipped.part-{rank}.csv``); :func:`merge_parts` joins them into the files above.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from infodecomp.reporting.csvio import (
    RESULTS,
    SKIPPED,
    atomic_write,
    done_filename,
    format_value,
    fsync_write,
    merge_parts,
    natural_key,
    parse_record,
    part_filename,
    read_done,
    read_results,
    read_table,
    render_rows,
    split_records,
)
from infodecomp.reporting.metrics import IOU_COLUMNS

__all__ = [
    "ARO_COLUMNS",
    "INTERVENE_COLUMNS",
    "LOCALIZE_COLUMNS",
    "RESULTS",
    "SKIPPED",
    "ResultsWriter",
    "SkipLog",
    "done_filename",
    "merge_parts",
    "natural_key",
    "part_filename",
    "read_results",
]

# results.csv columns of each command (long format; docs/architecture.md).
ARO_COLUMNS = [
    "item_id",
    "subset",
    "group",
    "label",
    "option",
    "text",
    "estimator",
    "value",
    "stderr",
    "score",
    "n_samples",
    "n_report",
    "values_from",
]
LOCALIZE_COLUMNS = [
    "item_id",
    "word",
    "word_type",
    "method",
    "reference",
    "n_steps",
    "split",
    "value",
    *IOU_COLUMNS,
]
INTERVENE_COLUMNS = [
    "item_id",
    "word",
    "word_type",
    "edit",
    "cmi_total",
    "cmi_stderr",
    "attn_total",
    "change_total",
    "pixel_r_cmi",
    "pixel_r_attn",
    "exact_total",
    "exact_stderr",
    "pixel_r_exact",
    "pixel_r_cmi_exact",
]


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

    def __init__(
        self,
        run_dir: str | Path,
        filename: str = RESULTS,
        columns: Sequence[str] = (),
        *,
        id_column: str = "item_id",
    ) -> None:
        self.columns = list(columns)
        if not self.columns:
            raise ValueError(
                f"ResultsWriter({filename}): `columns` is empty; pass the column names."
            )
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(
                f"ResultsWriter({filename}): duplicate column names in {self.columns}."
            )
        if id_column not in self.columns:
            raise ValueError(
                f"ResultsWriter({filename}): id column '{id_column}' is not among "
                f"the columns {self.columns}; add it or pass id_column=."
            )
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
        records, partial = split_records(text)
        self.dropped_partial = partial
        if not records:  # new file, or killed while writing the header
            atomic_write(self.path, render_rows([self.columns]))
            atomic_write(self.done_path, "")
            return
        header = parse_record(records[0])
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
            ids = dict.fromkeys(parse_record(r)[key] for r in records[1:])
            atomic_write(self.done_path, "".join(f"{i}\n" for i in ids))
        done, done_partial = read_done(self.done_path)
        self._done = list(dict.fromkeys(done))
        self._done_set = set(self._done)
        if done_partial:
            atomic_write(self.done_path, "".join(f"{d}\n" for d in self._done))
        kept = [records[0]]
        for record in records[1:]:
            if parse_record(record)[key] in self._done_set:
                kept.append(record)
            else:
                self.dropped_rows += 1
        if partial or self.dropped_rows:
            atomic_write(self.path, "".join(kept))

    def _check_row(self, row: Mapping[str, Any]) -> list[Any]:
        keys = set(row)
        if keys != set(self.columns):
            missing = [c for c in self.columns if c not in keys]
            extra = sorted(keys - set(self.columns))
            raise ValueError(
                f"{self.path}: row {dict(row)} does not fit the columns: missing "
                f"{missing}, unexpected {extra}. Give every column (None for empty)."
            )
        return [row[c] for c in self.columns]

    def append(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        items: Iterable[Any] = (),
        mark_done: bool = True,
    ) -> None:
        """Write the rows of one or more whole items, then mark those items done.

        Args:
            rows: one dict per row with exactly the writer's columns.
            items: ids of further items of this batch that produced no rows; they are marked
                done too, so a resumed run does not redo them.
            mark_done: append the items' ids to the done file after the rows are on disk. Pass
                False only when further rows of these items follow; then call :meth:`mark_done`.

        Raises:
            ValueError: a row has missing/unknown keys, or an item is already marked done.
        """
        values = [self._check_row(r) for r in rows]
        ids = [format_value(r[self.id_column]) for r in rows] + [format_value(i) for i in items]
        ids = list(dict.fromkeys(ids))
        again = [i for i in ids if i in self._done_set]
        if again:
            raise ValueError(
                f"{self.path}: items {again[:5]} are already done; skip items in "
                "done_ids() when resuming instead of writing them again."
            )
        if values:
            fsync_write(self._fh, render_rows(values))
        if mark_done:
            self.mark_done(ids)

    def mark_done(self, item_ids: Iterable[Any]) -> None:
        """Record items as finished (their rows must already have been appended)."""
        new = [
            i for i in dict.fromkeys(format_value(i) for i in item_ids) if i not in self._done_set
        ]
        bad = [i for i in new if not i or "\n" in i]
        if bad:
            raise ValueError(
                f"{self.done_path}: item ids must be non-empty single-line strings, got {bad!r}."
            )
        if new:
            fsync_write(self._done_fh, "".join(f"{i}\n" for i in new))
            self._done.extend(new)
            self._done_set.update(new)

    def done_ids(self, column: str = "item_id") -> set[str]:
        """Values of ``column`` over finished items (the finished item ids for the id column)."""
        if column == self.id_column:
            return set(self._done_set)
        if column not in self.columns:
            raise KeyError(f"{self.path}: no column '{column}'; columns are {self.columns}.")
        header, rows, _ = read_table(self.path, self.done_path)
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
        records, partial = split_records(text)
        self._reasons: dict[str, str] = {}
        if records:
            header = parse_record(records[0])
            if header != list(self.columns):
                raise ValueError(
                    f"{self.path}: header {header} is not {list(self.columns)}; "
                    "move the file away or use a fresh run directory."
                )
            for record in records[1:]:
                item_id, reason = parse_record(record)
                self._reasons.setdefault(item_id, reason)
        if not records:
            atomic_write(self.path, render_rows([self.columns]))
        elif partial:
            atomic_write(self.path, "".join(records))
        self._fh = open(self.path, "a", encoding="utf-8", newline="")

    def add(self, item_id: Any, reason: str) -> None:
        """Log one skipped item with a human-readable reason."""
        key = format_value(item_id)
        if key in self._reasons:
            return
        fsync_write(self._fh, render_rows([[key, reason]]))
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

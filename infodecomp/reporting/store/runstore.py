"""One results store file: opened for writing (one writer, under its lock) or for reading."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from infodecomp.reporting.csvio import format_value
from infodecomp.reporting.store import schema
from infodecomp.reporting.store.errors import (
    ResumeRefused,
    StoreError,
    damaged,
    disk_full,
    is_disk_full,
)
from infodecomp.reporting.store.schema import Skip, fingerprint_diff, one_line, quote, sql_value

_SQL_BUSY_MS = 30_000


class RunStore:
    """One store file (its tables: infodecomp.reporting.store), opened for writing or read-only.

    Use :meth:`open` (writer: creates the file, checks command, columns and fingerprint) or
    :meth:`read` (reader). A writer must hold the store's lock (rundir.RunLock).
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, meta: dict[str, Any]) -> None:
        self.path = path
        self.conn = conn
        self.command: str = meta["command"]
        self.columns: list[str] = list(meta["columns"])
        self.key: list[str] = list(meta["key"])
        self.fingerprint: dict[str, Any] = dict(meta["fingerprint"])

    # -- opening

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        command: str,
        columns: Sequence[str],
        key: Sequence[str],
        fingerprint: Mapping[str, Any],
    ) -> RunStore:
        """Open (or create) a store for writing; refuse one of another command or config."""
        path = Path(path)
        columns, key = list(columns), list(key)
        schema.check_schema(columns, key, path)
        new = not path.exists()
        try:
            if new:  # built aside and renamed, so a reader never sees a half-made store
                schema.build_aside(
                    path, lambda conn: schema.create(conn, command, columns, key, fingerprint)
                )
            conn = sqlite3.connect(path, isolation_level=None, timeout=_SQL_BUSY_MS / 1000)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if not new:
                schema.quick_check(conn, path)
            meta = schema.read_meta(conn, path)
        except sqlite3.DatabaseError as err:
            raise damaged(path, err) from err
        except OSError as err:
            if is_disk_full(err):
                raise disk_full(path.parent) from err
            raise
        store = cls(path, conn, meta)
        store.check(command=command, columns=columns, key=key, fingerprint=fingerprint)
        return store

    @classmethod
    def read(cls, path: str | Path) -> RunStore:
        """Open a store read-only (safe while a writer is running)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such results store")
        try:
            # A plain connection told to only query (not mode=ro): as the last one to close it
            # can still checkpoint and remove the WAL file a writer left behind.
            conn = sqlite3.connect(path, isolation_level=None, timeout=_SQL_BUSY_MS / 1000)
            conn.execute("PRAGMA query_only=1")
            meta = schema.read_meta(conn, path)
        except sqlite3.DatabaseError as err:
            raise damaged(path, err) from err
        return cls(path, conn, meta)

    def check(
        self,
        *,
        command: str,
        columns: Sequence[str],
        key: Sequence[str],
        fingerprint: Mapping[str, Any],
    ) -> None:
        """Raise ResumeRefused naming what differs from the stored command, schema or config."""
        stored = {"command": self.command, "results columns": self.columns, "key": self.key}
        stored.update(self.fingerprint)
        current = {"command": command, "results columns": list(columns), "key": list(key)}
        current.update(fingerprint)
        diffs = fingerprint_diff(stored, current)
        if diffs:
            raise ResumeRefused(
                f"{self.path.parent} holds results of another configuration "
                f"({'; '.join(diffs)}; store {self.path.name}): rerun with the same settings "
                "to resume, or use a new run.out_dir, or run.resume=overwrite to discard them"
            )

    # -- reading

    def done(self) -> dict[str, int]:
        """Finished items: item id -> position in the data set."""
        return dict(self._query("SELECT item_id, ord FROM done"))

    def skipped(self) -> dict[str, Skip]:
        """Skipped items (id -> record)."""
        rows = self._query(
            "SELECT item_id, reason, transient, stage, ord, at FROM skipped ORDER BY at"
        )
        return {r[0]: Skip(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows}

    def rows(self) -> Iterator[tuple[str, int, int, tuple]]:
        """(item id, item position, row id, values in column order) of every result row."""
        cols = ", ".join(f"r.{quote(c)}" for c in self.columns)
        sql = (
            f"SELECT r.item_id, d.ord, r.rowid, {cols} FROM results r "
            "JOIN done d ON d.item_id = r.item_id ORDER BY d.ord, r.rowid"
        )
        for row in self._query(sql):
            yield row[0], row[1], row[2], tuple(row[3:])

    def legs(self) -> list[dict[str, Any]]:
        rows = self._query(
            "SELECT uid, rank, started, last, status, items_done, items_skipped, info "
            "FROM legs ORDER BY started"
        )
        keys = ("uid", "rank", "started", "last", "status", "items_done", "items_skipped")
        out = []
        for r in rows:
            leg = dict(zip(keys, r[:7], strict=True))
            leg.update(json.loads(r[7] or "{}"))
            out.append(leg)
        return out

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as err:
            raise damaged(self.path, err) from err

    # -- writing

    def commit(
        self,
        rows: Sequence[Mapping[str, Any]],
        done: Sequence[tuple[str, int]],
        skipped: Sequence[Skip] = (),
        *,
        leg: str | None = None,
    ) -> None:
        """Write a batch in one transaction: its rows, its finished items and its skipped items.

        Args:
            rows: result rows, each with exactly the store's columns.
            done: (item id, position) of every item of the batch that finished (with or without
                rows); every row must belong to one of them.
            skipped: items of the batch left out.
            leg: the current leg's uid; its progress is updated in the same transaction.

        Raises:
            ValueError: a row does not fit the columns or belongs to no finished item of the
                batch, or an item is already done; nothing is written then.
        """
        ids = {str(i) for i, _ in done}
        values = [self._row_values(row, ids) for row in rows]
        now = time.time()

        def write() -> None:
            conn = self.conn
            self._refuse_done_again(ids)
            if values:
                cols = ", ".join(quote(c) for c in self.columns)
                marks = ", ".join("?" for _ in self.columns)
                conn.executemany(f"INSERT INTO results ({cols}) VALUES ({marks})", values)
            conn.executemany(
                "INSERT INTO done (item_id, ord, leg, at) VALUES (?, ?, ?, ?)",
                [(str(i), int(o), leg, now) for i, o in done],
            )
            conn.executemany("DELETE FROM skipped WHERE item_id = ?", [(i,) for i in ids])
            self._put_skips(skipped, now)
            if leg is not None:
                conn.execute(
                    "UPDATE legs SET last = ?, items_done = items_done + ?, "
                    "items_skipped = items_skipped + ? WHERE uid = ?",
                    (now, len(ids), len(skipped), leg),
                )

        try:
            self._atomic(write)
        except sqlite3.IntegrityError as err:
            raise ValueError(
                f"{self.path}: two result rows share the key {self.key} ({err}); the command "
                "wrote a row twice"
            ) from err
        except sqlite3.DatabaseError as err:
            raise damaged(self.path, err) from err

    def _row_values(self, row: Mapping[str, Any], ids: set[str]) -> list[Any]:
        """A row's values in column order, as stored; ValueError if it does not fit the columns
        or belongs to none of the batch's finished items `ids`."""
        if set(row) != set(self.columns):
            missing = [c for c in self.columns if c not in row]
            extra = sorted(set(row) - set(self.columns))
            raise ValueError(
                f"{self.path}: row {dict(row)} does not fit the columns: missing "
                f"{missing}, unexpected {extra}. Give every column (None for empty)."
            )
        if format_value(row["item_id"]) not in ids:
            raise ValueError(
                f"{self.path}: a row of item {row['item_id']!r} is not among the batch's "
                f"finished items {sorted(ids)[:5]}"
            )
        return [format_value(row[c]) if c == "item_id" else sql_value(row[c]) for c in self.columns]

    def _refuse_done_again(self, ids: set[str]) -> None:
        """ValueError (inside the caller's transaction) if any of `ids` is already done."""
        if not ids:
            return
        marks = ", ".join("?" for _ in ids)
        again = [
            i
            for (i,) in self.conn.execute(
                f"SELECT item_id FROM done WHERE item_id IN ({marks})", sorted(ids)
            )
        ]
        if again:
            raise ValueError(
                f"{self.path}: items {sorted(again)[:5]} are already done; a resumed run "
                "must not process them again"
            )

    def _put_skips(self, skipped: Iterable[Skip], now: float) -> None:
        """Upsert skip records (inside the caller's transaction); a done item is never skipped."""
        skipped = list(skipped)
        done = {
            s.item_id
            for s in skipped
            if self.conn.execute("SELECT 1 FROM done WHERE item_id = ?", (s.item_id,)).fetchone()
        }
        self.conn.executemany(
            "INSERT INTO skipped (item_id, ord, reason, transient, stage, at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(item_id) DO UPDATE SET ord = excluded.ord, "
            "reason = excluded.reason, transient = excluded.transient, stage = excluded.stage, "
            "at = excluded.at",
            [
                (s.item_id, s.ord, one_line(s.reason), int(s.transient), s.stage, s.at or now)
                for s in skipped
                if s.item_id not in done
            ],
        )

    def replace_load_skips(self, skipped: Sequence[Skip]) -> None:
        """The data loader's rejects of this leg replace those recorded before (it reruns)."""
        self._transaction(
            lambda: (
                self.conn.execute("DELETE FROM skipped WHERE stage = 'load'"),
                self._put_skips([s for s in skipped if s.stage == "load"], time.time()),
            )
        )

    def start_leg(self, info: Mapping[str, Any], rank: int | None = None) -> str:
        """Record a new leg (this process's run into the directory); returns its uid."""
        uid = uuid.uuid4().hex
        now = time.time()
        self._transaction(
            lambda: self.conn.execute(
                "INSERT INTO legs (uid, rank, started, last, status, items_done, items_skipped, "
                "info) VALUES (?, ?, ?, ?, 'running', 0, 0, ?)",
                (uid, rank, now, now, json.dumps(dict(info), default=str)),
            )
        )
        return uid

    def end_leg(self, uid: str, status: str, **info: Any) -> None:
        """Close a leg: ``finished`` or ``failed`` (with the error)."""

        def update() -> None:
            (old,) = self.conn.execute("SELECT info FROM legs WHERE uid = ?", (uid,)).fetchone()
            merged = {**json.loads(old or "{}"), **info}
            self.conn.execute(
                "UPDATE legs SET last = ?, status = ?, info = ? WHERE uid = ?",
                (time.time(), status, json.dumps(merged, default=str), uid),
            )

        self._transaction(update)

    def merge(self, other: RunStore, *, load_skips: bool = False) -> int:
        """Take the finished items, skips and legs of another store (a rank's) into this one.

        Items already done here keep their rows. An item skipped in both keeps the newer record.
        With `load_skips`, the other store's load-stage skips replace this store's.

        Returns:
            The number of items added.
        """
        if other.columns != self.columns or other.key != self.key:
            raise StoreError(
                f"{other.path}: its results columns differ from {self.path}'s; the stores were "
                "written by different commands or versions"
            )
        diffs = fingerprint_diff(self.fingerprint, other.fingerprint)
        if diffs:
            raise ResumeRefused(
                f"{other.path} was written with another configuration than {self.path} "
                f"({'; '.join(diffs)}): remove it, or rerun with run.resume=overwrite"
            )
        mine = self.done()
        theirs = other.done()
        new = {i: o for i, o in theirs.items() if i not in mine}
        rows = [(i, v) for i, _, _, v in other.rows() if i in new]
        skips = [s for i, s in other.skipped().items() if i not in mine and i not in new]
        legs = other._query(
            "SELECT uid, rank, started, last, status, items_done, items_skipped, info FROM legs"
        )
        done_rows = other._query("SELECT item_id, ord, leg, at FROM done")
        cols = ", ".join(quote(c) for c in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        mine_skips = self.skipped()

        def write() -> None:
            c = self.conn
            c.executemany(f"INSERT INTO results ({cols}) VALUES ({marks})", [v for _, v in rows])
            c.executemany(
                "INSERT INTO done (item_id, ord, leg, at) VALUES (?, ?, ?, ?)",
                [r for r in done_rows if r[0] in new],
            )
            c.executemany("DELETE FROM skipped WHERE item_id = ?", [(i,) for i in new])
            if load_skips:
                c.execute("DELETE FROM skipped WHERE stage = 'load'")
            keep = [
                s
                for s in skips
                if (s.stage != "load" or load_skips)
                and (s.item_id not in mine_skips or mine_skips[s.item_id].at <= s.at)
            ]
            self._put_skips(keep, time.time())
            c.executemany(
                "INSERT INTO legs (uid, rank, started, last, status, items_done, items_skipped, "
                "info) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(uid) DO UPDATE SET "
                "last = excluded.last, status = excluded.status, items_done = excluded.items_done, "
                "items_skipped = excluded.items_skipped, info = excluded.info",
                legs,
            )

        self._transaction(write)
        return len(new)

    def _atomic(self, fn: Any) -> None:
        """fn() in one transaction: committed whole, or rolled back and its error raised."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            fn()
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # SQLite ends a transaction itself on some errors
                self.conn.execute("ROLLBACK")
            raise

    def _transaction(self, fn: Any) -> None:
        try:
            self._atomic(fn)
        except sqlite3.DatabaseError as err:
            raise damaged(self.path, err) from err

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

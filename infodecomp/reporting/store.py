"""The results store of a run directory: SQLite (standard library, WAL mode), one file per writer.

Files in a run directory:

- ``results.sqlite``: the store of an unsharded run (and of rank 0, which merges the ranks').
- ``results.rank-<r>.sqlite``: the store data-parallel rank ``r`` writes (torchrun); rank 0
  merges them into ``results.sqlite`` after the ranks finish. The rank files stay, so merging
  again gives the same result.
- ``<store>.lock``: held (``flock``) by the one process writing that store; it names the
  holder's pid and host. The lock is released by the kernel when the process dies, so a killed
  run never leaves a stale lock.
- ``results.csv`` / ``skipped.csv``: exports of the stores, written at the end of every run and by
  ``infodecomp export``; they are the documented contract that tables and scripts read.

Tables of one store:

- ``meta(key, value)``: command, results columns and key columns, config fingerprint, schema.
- ``results(<columns>)`` with ``UNIQUE(item_id, <key columns>)``: the long-format rows.
- ``done(item_id, ord, leg, at)``: an item is finished exactly when it has a row here. Its result
  rows and this row are committed in one transaction (with the other items of its batch), so a
  run killed at any point leaves whole items or nothing of them.
- ``skipped(item_id, ord, reason, transient, stage, at)``: items left out, with the reason;
  ``transient`` marks causes that may go away (a missing or unreadable file), ``stage`` is
  ``load`` (rejected by the data loader) or ``item`` (failed while processed).
- ``legs(uid, rank, started, last, status, items_done, items_skipped, info)``: one row per run
  into the directory (a leg), updated with every commit, so the time of a killed leg counts.

SQLite's locking (and the WAL's shared memory) is unreliable on network file systems (NFS,
SMB, some cluster file systems): keep run directories on a local disk, or make sure only one
process writes each store file (the per-rank files do that for torchrun on one node).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.reporting.csvio import (
    atomic_write,
    format_value,
    natural_key,
    parse_results,
    render_rows,
)

SCHEMA_VERSION = 1
STORE = "results.sqlite"
RESULTS = "results.csv"
SKIPPED = "skipped.csv"
SKIPPED_COLUMNS = ("item_id", "reason")
_RANK_RE = re.compile(r"^results\.rank-(\d+)\.sqlite$")
_SQL_BUSY_MS = 30_000


class StoreError(RuntimeError):
    """A run directory cannot be used as asked; the message is one line that says what to do."""


class ResumeRefused(StoreError):
    """The run directory holds results of another configuration (or of an unknown one)."""


class RunLocked(StoreError):
    """Another process is writing into the run directory."""


class DiskFull(StoreError):
    """The disk of the run directory is full; what was committed is intact."""


_SQLITE_FULL = getattr(sqlite3, "SQLITE_FULL", 13)


def is_disk_full(err: BaseException) -> bool:
    """An OSError ENOSPC, or SQLite's SQLITE_FULL ("database or disk is full")."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    return isinstance(err, sqlite3.Error) and (
        getattr(err, "sqlite_errorcode", None) == _SQLITE_FULL
        or "database or disk is full" in str(err)
    )


def disk_full(where: str | Path) -> DiskFull:
    """The one-line error for a full disk under `where` (a run directory or a file in it)."""
    return DiskFull(
        f"disk full at {where}: free space there and rerun the same command to resume; nothing "
        "was lost (every item finished before is kept in the store)"
    )


@dataclass(frozen=True)
class Skip:
    """An item left out of a run, with the reason (one line)."""

    item_id: str
    reason: str
    transient: bool = False
    stage: str = "item"  # load | item
    ord: int | None = None
    at: float = 0.0


# ----------------------------------------------------------------------------- paths


def store_path(run_dir: str | Path, rank: int | None = None) -> Path:
    """``results.sqlite``, or ``results.rank-<rank>.sqlite`` for a data-parallel rank."""
    name = STORE if rank is None else f"results.rank-{int(rank)}.sqlite"
    return Path(run_dir) / name


def rank_stores(run_dir: str | Path) -> list[tuple[int, Path]]:
    """The per-rank stores of a run directory, by rank."""
    run_dir = Path(run_dir)
    found = []
    for p in run_dir.iterdir() if run_dir.is_dir() else ():
        m = _RANK_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def store_files(run_dir: str | Path) -> list[Path]:
    """Every store of a run directory: the main one first (when present), then the ranks'."""
    main = store_path(run_dir)
    return ([main] if main.exists() else []) + [p for _, p in rank_stores(run_dir)]


def has_store(run_dir: str | Path) -> bool:
    return bool(store_files(run_dir))


# ----------------------------------------------------------------------------- lock


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<store>.lock`` naming its holder.

    Args:
        store: the store file the lock guards.
        run_dir: how to name the run directory in the error message.
    """

    def __init__(self, store: Path, run_dir: str | Path | None = None) -> None:
        self.path = store.with_name(store.name + ".lock")
        self.run_dir = Path(run_dir) if run_dir is not None else store.parent
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = json.loads(os.read(fd, 4096).decode() or "{}")
            except (ValueError, OSError):
                holder = {}
            os.close(fd)
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            since = f", since {holder['since']}" if holder.get("since") else ""
            raise RunLocked(
                f"{self.run_dir} is in use by another run ({who}{since}; lock {self.path.name}): "
                "wait for it to finish, or choose another run.out_dir"
            ) from None
        os.ftruncate(fd, 0)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------------- the store


def _q(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def _sql_value(value: Any) -> Any:
    """A value SQLite stores as is: numpy scalars become python numbers, NaN becomes NULL."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, (str, int, float)):
        return value
    return str(value)


def _damaged(path: Path, err: Exception) -> StoreError:
    if is_disk_full(err):  # the store is intact: SQLite rolled the transaction back
        return disk_full(path.parent)
    return StoreError(
        f"{path}: the results store is damaged ({err}); nothing was changed. Recover it with "
        f"`sqlite3 {path.name} .recover`, or start over with a new run.out_dir or "
        "run.resume=overwrite"
    )


class RunStore:
    """One store file (see the module docstring), opened for writing or read-only.

    Use :meth:`open` (writer: creates the file, checks command, columns and fingerprint) or
    :meth:`read` (reader). A writer must hold the store's :class:`RunLock`.
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
        _check_schema(columns, key, path)
        new = not path.exists()
        try:
            if new:  # built aside and renamed, so a reader never sees a half-made store
                _build_aside(path, lambda conn: _create(conn, command, columns, key, fingerprint))
            conn = sqlite3.connect(path, isolation_level=None, timeout=_SQL_BUSY_MS / 1000)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if not new:
                _quick_check(conn, path)
            meta = _read_meta(conn, path)
        except sqlite3.DatabaseError as err:
            raise _damaged(path, err) from err
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
            meta = _read_meta(conn, path)
        except sqlite3.DatabaseError as err:
            raise _damaged(path, err) from err
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
        cols = ", ".join(f"r.{_q(c)}" for c in self.columns)
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
            raise _damaged(self.path, err) from err

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
        values = []
        for row in rows:
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
            values.append(
                [
                    format_value(row[c]) if c == "item_id" else _sql_value(row[c])
                    for c in self.columns
                ]
            )
        now = time.time()
        cols = ", ".join(_q(c) for c in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                marks_ids = ", ".join("?" for _ in ids)
                again = (
                    [
                        i
                        for (i,) in conn.execute(
                            f"SELECT item_id FROM done WHERE item_id IN ({marks_ids})", sorted(ids)
                        )
                    ]
                    if ids
                    else []
                )
                if again:
                    raise ValueError(
                        f"{self.path}: items {sorted(again)[:5]} are already done; a resumed run "
                        "must not process them again"
                    )
                if values:
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
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite ends a transaction itself on some errors
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as err:
            raise ValueError(
                f"{self.path}: two result rows share the key {self.key} ({err}); the command "
                "wrote a row twice"
            ) from err
        except sqlite3.DatabaseError as err:
            raise _damaged(self.path, err) from err

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
                (s.item_id, s.ord, _one_line(s.reason), int(s.transient), s.stage, s.at or now)
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
        cols = ", ".join(_q(c) for c in self.columns)
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

    def _transaction(self, fn: Any) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                fn()
                self.conn.execute("COMMIT")
            except BaseException:
                if self.conn.in_transaction:  # SQLite ends a transaction itself on some errors
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as err:
            raise _damaged(self.path, err) from err

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _build_aside(path: Path, build: Any) -> None:
    """Creates the store `path` as `<name>.new-<pid>` with `build(conn)` and renames it into
    place; on any failure (a full disk) the partial file and its journals are removed."""
    tmp = path.with_name(path.name + f".new-{os.getpid()}")
    parts = [Path(str(tmp) + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    for part in parts:
        part.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            build(conn)
        finally:
            conn.close()
        os.replace(tmp, path)
    except BaseException:
        for part in parts:
            part.unlink(missing_ok=True)
        raise


def _check_schema(columns: list[str], key: list[str], path: Path) -> None:
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"{path}: columns must be distinct and non-empty, got {columns}")
    if "item_id" not in columns:
        raise ValueError(f"{path}: the columns {columns} lack 'item_id'")
    if key[:1] != ["item_id"] or any(k not in columns for k in key):
        raise ValueError(f"{path}: key {key} must start with 'item_id' and name columns only")


def _create(
    conn: sqlite3.Connection,
    command: str,
    columns: list[str],
    key: list[str],
    fingerprint: Mapping[str, Any],
) -> None:
    cols = ", ".join(_q(c) for c in columns)  # no declared type: values keep their own
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(f"CREATE TABLE results ({cols}, UNIQUE ({', '.join(_q(k) for k in key)}))")
    conn.execute(
        "CREATE TABLE done (item_id TEXT PRIMARY KEY, ord INTEGER NOT NULL, leg TEXT, at REAL)"
    )
    conn.execute(
        "CREATE TABLE skipped (item_id TEXT PRIMARY KEY, ord INTEGER, reason TEXT NOT NULL, "
        "transient INTEGER NOT NULL, stage TEXT NOT NULL, at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE legs (uid TEXT PRIMARY KEY, rank INTEGER, started REAL NOT NULL, "
        "last REAL NOT NULL, status TEXT NOT NULL, items_done INTEGER NOT NULL, "
        "items_skipped INTEGER NOT NULL, info TEXT)"
    )
    meta = {
        "schema": SCHEMA_VERSION,
        "command": command,
        "columns": columns,
        "key": key,
        "fingerprint": dict(fingerprint),
        "created_at": time.time(),
    }
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [(k, json.dumps(v, default=str)) for k, v in meta.items()],
    )
    conn.execute("COMMIT")


def _read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    try:
        meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
    except sqlite3.OperationalError as err:
        raise StoreError(
            f"{path} is not a results store of this version ({err}): use a new run.out_dir or "
            "run.resume=overwrite"
        ) from err
    if meta.get("schema") != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: store schema {meta.get('schema')} is not {SCHEMA_VERSION}: use a new "
            "run.out_dir or run.resume=overwrite"
        )
    return meta


def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
    result = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if result != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(result[:3]))


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _show(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fingerprint_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: stored -> current`` for every key whose value differs (or exists on one side)."""
    missing = object()
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k, missing), current.get(k, missing)
        if json.dumps(a, default=str, sort_keys=True) != json.dumps(b, default=str, sort_keys=True):
            left = "(absent)" if a is missing else _show(a)
            right = "(absent)" if b is missing else _show(b)
            out.append(f"{k}: {left} -> {right}")
    return out


# ----------------------------------------------------------------------------- the directory


class RunView:
    """Read-only union of every store of a run directory (main first, then ranks).

    An item done in several stores is taken from the first; a skipped item keeps its newest
    record and is dropped once it is done anywhere.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.stores = [RunStore.read(p) for p in store_files(self.run_dir)]
        if not self.stores:
            raise FileNotFoundError(f"{self.run_dir}: no results store ({STORE})")
        first = self.stores[0]
        for s in self.stores[1:]:
            if s.columns != first.columns:
                raise StoreError(
                    f"{s.path}: its results columns differ from {first.path}'s; the stores were "
                    "written by different commands or versions"
                )
        self.columns = first.columns
        self.command = first.command

    def done(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.stores:
            for i, o in s.done().items():
                out.setdefault(i, o)
        return out

    def skipped(self) -> dict[str, Skip]:
        done = self.done()
        out: dict[str, Skip] = {}
        for s in self.stores:
            for i, sk in s.skipped().items():
                if i not in done and (i not in out or out[i].at <= sk.at):
                    out[i] = sk
        return out

    def rows(self) -> list[tuple]:
        """Result rows in data-set order (rows of an item in the order they were written)."""
        owner: dict[str, int] = {}
        for n, s in enumerate(self.stores):
            for i in s.done():
                owner.setdefault(i, n)
        picked = []
        for n, s in enumerate(self.stores):
            picked.extend((o, n, rid, v) for i, o, rid, v in s.rows() if owner.get(i) == n)
        picked.sort(key=lambda r: r[:3])
        return [r[3] for r in picked]

    def legs(self) -> list[dict[str, Any]]:
        out: dict[str, dict] = {}
        for s in self.stores:
            for leg in s.legs():
                if leg["uid"] not in out or out[leg["uid"]]["last"] <= leg["last"]:
                    out[leg["uid"]] = leg
        return sorted(out.values(), key=lambda g: g["started"])

    def close(self) -> None:
        for s in self.stores:
            s.close()

    def __enter__(self) -> RunView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wall_time(legs: Sequence[Mapping[str, Any]]) -> float:
    """Seconds covered by the legs (the union of their [started, last] spans; ranks overlap)."""
    spans = sorted((float(g["started"]), float(g["last"])) for g in legs)
    total, end = 0.0, -math.inf
    for a, b in spans:
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write(path, text)
    return True


def export(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.csv`` and ``skipped.csv`` from the stores (a file is only replaced when its
    content changes). Returns their paths."""
    run_dir = Path(run_dir)
    with RunView(run_dir) as view:
        rows = view.rows()
        skipped = view.skipped()
        columns = view.columns
    results = run_dir / RESULTS
    _write_if_changed(results, render_rows([columns, *rows]))
    order = sorted(skipped, key=natural_key)
    skipped_path = run_dir / SKIPPED
    _write_if_changed(
        skipped_path, render_rows([SKIPPED_COLUMNS, *[(i, skipped[i].reason) for i in order]])
    )
    return results, skipped_path


def read_results(run_dir: str | Path, filename: str = RESULTS) -> pd.DataFrame:
    """The finished rows of a run as a DataFrame, read from its stores, else from results.csv.

    A run directory with stores is read from them (so a run that is still going, or was killed
    before its export, reads consistently: whole items only). A directory with only a results.csv
    (copied, or written by an older version) is read from that file; a ``done.txt`` beside it
    (older versions' done-list) keeps the rows of the items it lists. Empty fields are NaN;
    identifier and text columns stay strings ("null", "none" and "nan" are kept as words).
    """
    run_dir = Path(run_dir)
    if has_store(run_dir):
        with RunView(run_dir) as view:
            text = render_rows([view.columns, *view.rows()])
        return parse_results(text, str(run_dir / STORE))
    path = run_dir / filename
    if not path.exists():
        raise FileNotFoundError(
            f"{run_dir}: neither {STORE} nor {filename} exists; is this a run directory?"
        )
    df = parse_results(path.read_text(encoding="utf-8"), str(path))
    legacy_done = run_dir / "done.txt"
    if legacy_done.exists():
        done = {line for line in legacy_done.read_text(encoding="utf-8").split("\n")[:-1] if line}
        df = df[df["item_id"].isin(done)].reset_index(drop=True)
    return df

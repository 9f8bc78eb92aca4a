"""The SQLite layer of a results store: its tables, its meta row, how values are stored."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infodecomp.reporting.store.errors import StoreError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Skip:
    """An item left out of a run, with the reason (one line)."""

    item_id: str
    reason: str
    transient: bool = False
    stage: str = "item"  # load | item
    ord: int | None = None
    at: float = 0.0


def quote(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_value(value: Any) -> Any:
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


def build_aside(path: Path, build: Any) -> None:
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


def check_schema(columns: list[str], key: list[str], path: Path) -> None:
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(f"{path}: columns must be distinct and non-empty, got {columns}")
    if "item_id" not in columns:
        raise ValueError(f"{path}: the columns {columns} lack 'item_id'")
    if key[:1] != ["item_id"] or any(k not in columns for k in key):
        raise ValueError(f"{path}: key {key} must start with 'item_id' and name columns only")


def create(
    conn: sqlite3.Connection,
    command: str,
    columns: list[str],
    key: list[str],
    fingerprint: Mapping[str, Any],
) -> None:
    cols = ", ".join(quote(c) for c in columns)  # no declared type: values keep their own
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(f"CREATE TABLE results ({cols}, UNIQUE ({', '.join(quote(k) for k in key)}))")
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


def read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
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


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    result = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if result != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(result[:3]))


def one_line(text: str, limit: int = 500) -> str:
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

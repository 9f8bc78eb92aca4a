"""The store's errors: each message is one line that says what to do."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from infodecomp import console


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
    return DiskFull(console.disk_full_text(where))


def damaged(path: Path, err: Exception) -> StoreError:
    """The error for a store SQLite cannot read or write (a full disk is told apart)."""
    if is_disk_full(err):  # the store is intact: SQLite rolled the transaction back
        return disk_full(path.parent)
    return StoreError(
        f"{path}: the results store is damaged ({err}); nothing was changed. Recover it with "
        f"`sqlite3 {path.name} .recover`, or start over with a new run.out_dir or "
        "run.resume=overwrite"
    )

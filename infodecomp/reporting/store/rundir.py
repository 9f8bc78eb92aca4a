"""The files of a run directory: where its stores lie, and the lock of the one writer."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

from infodecomp.reporting.store.errors import RunLocked

STORE = "results.sqlite"
RESULTS = "results.csv"
SKIPPED = "skipped.csv"
SKIPPED_COLUMNS = ("item_id", "reason")
_RANK_RE = re.compile(r"^results\.rank-(\d+)\.sqlite$")


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

"""A run's hold on its run directory: the lock, the config fingerprint, resume or overwrite, legs.

Resume rules (`run.resume`):

- ``auto`` (default): a run directory with a store is resumed when its config fingerprint (see
  `fingerprint`) equals this run's; otherwise the run is refused with one line naming the keys
  that differ and the two ways out (a new `run.out_dir`, or `run.resume=overwrite`). Finished
  items are never redone. Skipped items are retried when `run.retry_skipped=true` (the default)
  and their cause may have gone (a missing or unreadable file); items the data loader rejected
  are re-checked on every run, because the loader runs again. A store of another config that
  holds no finished or skipped item (a run that stopped before its first batch, e.g. on a
  wrong data.root) is started afresh rather than refused.
- ``overwrite``: the directory's stores and exports (results, skipped, summary, meta, figures,
  images) are deleted first and the run starts afresh.

Every run into a directory is a leg; legs accumulate in the store and in meta.json
(``legs``, ``started_at`` of the first, ``wall_time_s`` over all of them).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from infodecomp import __version__
from infodecomp.reporting.meta import git_revision
from infodecomp.reporting.store import (
    RESULTS,
    SKIPPED,
    ResumeRefused,
    RunLock,
    RunStore,
    RunView,
    Skip,
    export,
    rank_stores,
    store_files,
    store_path,
)
from infodecomp.reporting.writer import ARO_KEY, INTERVENE_KEY, LOCALIZE_KEY

log = logging.getLogger("infodecomp")

RESUME_MODES = ("auto", "overwrite")
# Columns identifying one result row of each command (UNIQUE in the store).
KEYS: dict[str, list[str]] = {
    "aro": ARO_KEY,
    "localize": LOCALIZE_KEY,
    "intervene": INTERVENE_KEY,
    "visualize": ["item_id"],
}
# Settings that never change a result row: left out of the fingerprint. Of `run`, only the seed
# and the dtype change numbers (results do not depend on the chunk size, the device placement
# of items, the sharding or the number of items per checkpoint).
RUN_KEYS_IN_FINGERPRINT = ("run.seed", "run.dtype")
NOT_IN_FINGERPRINT = ("model.compile", "n_boot", "save_images", "gallery")
_PATH_KEYS = ("data.root", "data.manifest", "data.annotations", "data.images", "data.hf_name")
# What a directory holds besides the stores; removed by run.resume=overwrite.
OUTPUTS = (RESULTS, SKIPPED, "summary.json", "meta.json")
OUTPUT_DIRS = ("figures", "images")
_LEGACY = ("done.txt", "results.part-*.csv", "done.part-*.txt", "skipped.part-*.csv")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = list(v) if isinstance(v, (list, tuple)) else v
    return out


def _normal_path(value: Any) -> Any:
    if isinstance(value, str) and value:
        p = Path(value).expanduser()
        if p.exists():
            return str(p.resolve())
    return value


def fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a run's results depend on, flattened (``estimator.n_samples``, ...).

    Everything under `model`, `data` and `estimator` and every command-specific setting
    (estimators, steps, methods, edits, ...) except NOT_IN_FINGERPRINT; of `run`, the seed and the
    dtype (`run.limit` only where it changes the items: a generated ShapesWorld set is drawn at
    min(data.size, run.limit) items, recorded as `data.size`; a file-based set can be extended
    by a larger limit); and the code version (``code.version``: the infodecomp release; the git commit is
    recorded per leg in meta.json but not compared, so a fix can resume a run). Existing local
    paths are made absolute, so the same folder named from another working directory matches.
    """
    flat = _flatten(config)
    name, limit = flat.get("data.name"), flat.get("run.limit")
    if isinstance(name, str) and "data.size" in flat:  # a generated set's items depend on its size
        from infodecomp.data.registry import generation_spec
        from infodecomp.data.spec import DataSpec

        flat["data.size"] = generation_spec(DataSpec(name=name, size=flat["data.size"]), limit).size
    out: dict[str, Any] = {"code.version": __version__}
    for k, v in flat.items():
        if k in NOT_IN_FINGERPRINT:
            continue
        if k.startswith("run.") and k not in RUN_KEYS_IN_FINGERPRINT:
            continue
        out[k] = _normal_path(v) if k in _PATH_KEYS or k == "model.path" else v
    return out


def _holds_results(store: RunStore) -> bool:
    """Whether a store holds work: a finished item or an item skipped while processed (the
    loader's rejects are recomputed by every run)."""
    return bool(store.done()) or any(s.stage == "item" for s in store.skipped().values())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        _remove(path.with_name(path.name + suffix))


class Session:
    """The lock(s), the store this process writes, the current leg and the resume state.

    Data-parallel ranks (world > 1) each write ``results.rank-<r>.sqlite``; rank 0 also holds the
    main store's lock for the whole leg and merges the ranks' stores into it at the end.
    """

    def __init__(
        self,
        out: Path,
        command: str,
        columns: Sequence[str],
        key: Sequence[str],
        config: Mapping[str, Any],
        *,
        rank: int = 0,
        world: int = 1,
        resume: str = "auto",
        leg_info: Mapping[str, Any] | None = None,
    ) -> None:
        if resume not in RESUME_MODES:
            raise ValueError(f"run.resume={resume} is not one of {list(RESUME_MODES)}")
        self.out, self.command = out, command
        self.columns, self.key = list(columns), list(key)
        self.fingerprint = fingerprint(config)
        self.rank, self.world = rank, world
        self.resume = resume
        self.locks: list[RunLock] = []
        self.store: RunStore | None = None
        try:
            self._open(leg_info or {})
        except BaseException:
            self.close()
            raise

    # -- opening

    def _lock(self, path: Path) -> None:
        self.locks.append(RunLock(path, self.out).acquire())

    def _open(self, leg_info: Mapping[str, Any]) -> None:
        out, sharded = self.out, self.world > 1
        main = store_path(out)
        mine = store_path(out, self.rank) if sharded else main
        if not sharded or self.rank == 0:
            self._lock(main)
        if sharded:
            self._lock(mine)
        else:  # one writer per directory: no rank of an earlier sharded run may be writing
            for _, p in rank_stores(out):
                self._lock(p)
        if self.resume == "overwrite":
            self._clear(main, mine)
        elif not store_files(out):
            legacy = [p.name for pat in (RESULTS, *_LEGACY) for p in sorted(out.glob(pat))]
            if legacy:
                raise ResumeRefused(
                    f"{out} holds {', '.join(legacy[:3])} but no results store, so its config "
                    "cannot be checked: use a new run.out_dir, or run.resume=overwrite to discard it"
                )
        # Refuse before writing anything when any store differs. (With overwrite, what is left
        # belongs to other ranks of this run, which clear their own stores.)
        others = [p for p in store_files(out) if p != mine] if self.resume != "overwrite" else []
        for p in others:
            with RunStore.read(p) as other:
                try:
                    other.check(
                        command=self.command,
                        columns=self.columns,
                        key=self.key,
                        fingerprint=self.fingerprint,
                    )
                except ResumeRefused:
                    if _holds_results(other):
                        raise
                    if not sharded:  # its lock is ours: an empty store of another config goes
                        _remove_store(p)
        self.store = self._open_store(mine)
        if not sharded:
            for _, p in rank_stores(out):  # an earlier data-parallel leg: take its items in
                with RunStore.read(p) as part:
                    self.store.merge(part)
        if sharded and self.resume != "overwrite":
            with RunView(out) as view:
                self.done, self.skipped = view.done(), view.skipped()
                previous = view.legs()
        else:
            self.done, self.skipped = self.store.done(), self.store.skipped()
            previous = self.store.legs()
        self._warn_code_change(previous, leg_info)
        self.leg = self.store.start_leg(leg_info, rank=self.rank if sharded else None)

    def _open_store(self, path: Path) -> RunStore:
        """Open a store this process writes (and holds the lock of). A store of another config
        that holds no finished or skipped item (a run that stopped before its first batch, e.g.
        on a wrong data.root) is started afresh instead of refusing the run."""
        args = {
            "command": self.command,
            "columns": self.columns,
            "key": self.key,
            "fingerprint": self.fingerprint,
        }
        try:
            return RunStore.open(path, **args)
        except ResumeRefused:
            with RunStore.read(path) as old:
                if _holds_results(old):
                    raise
            log.info("%s held no finished or skipped item; starting it afresh", path)
            _remove_store(path)
            return RunStore.open(path, **args)

    def _clear(self, main: Path, mine: Path) -> None:
        out = self.out
        if self.world > 1 and self.rank != 0:
            _remove_store(mine)
            return
        for p in [main, *[p for r, p in rank_stores(out) if self.world == 1 or r >= self.world]]:
            _remove_store(p)
        _remove_store(mine)
        for name in OUTPUTS + OUTPUT_DIRS:
            _remove(out / name)
        for pattern in _LEGACY:
            for p in out.glob(pattern):
                _remove(p)
        log.info("run.resume=overwrite: cleared %s", out)

    def _warn_code_change(self, legs: list[dict], info: Mapping[str, Any]) -> None:
        before = {(g.get("git") or {}).get("commit") for g in legs} - {None}
        now = (info.get("git") or {}).get("commit")
        if before and now and now not in before:
            log.warning(
                "resuming %s with another code revision (%s, earlier %s); meta.json lists each "
                "leg's revision",
                self.out,
                now[:12],
                ", ".join(sorted(c[:12] for c in before)),
            )

    # -- during the run

    def todo(self, items: Sequence[tuple[int, Any]], *, retry_skipped: bool) -> list[tuple]:
        """The (position, item) pairs still to process, in order."""
        out = []
        for pos, item in items:
            iid = str(item.item_id)
            if iid in self.done:
                continue
            skip = self.skipped.get(iid)
            if skip is not None and skip.stage == "item":
                if not (retry_skipped and skip.transient):
                    continue
            out.append((pos, item))
        return out

    def record_load_skips(self, skipped: Sequence[Any]) -> None:
        """The data loader's rejects of this leg (rank 0 or an unsharded run records them)."""
        if self.world > 1 and self.rank != 0:
            return
        assert self.store is not None
        self.store.replace_load_skips(
            [Skip(str(s.item_id), s.reason, stage="load") for s in skipped]
        )

    def commit(
        self,
        rows: Sequence[Mapping[str, Any]],
        done: Sequence[tuple[str, int]],
        skips: Sequence[Skip],
    ) -> None:
        assert self.store is not None
        self.store.commit(rows, done, skips, leg=self.leg)
        self.done.update({str(i): o for i, o in done})
        for s in skips:
            self.skipped[s.item_id] = s

    def end_leg(self, status: str, **info: Any) -> None:
        if self.store is not None:
            self.store.end_leg(self.leg, status, **info)

    # -- the end

    def merge_and_export(self) -> None:
        """Rank 0 of a data-parallel run: merge the ranks' stores into results.sqlite. Then (and
        in an unsharded run) export results.csv and skipped.csv."""
        if self.world > 1:
            if self.rank != 0:
                return
            with self._open_store(store_path(self.out)) as main:
                for r, p in rank_stores(self.out):
                    with RunStore.read(p) as part:
                        main.merge(part, load_skips=(r == 0))
        export(self.out)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        for lock in reversed(self.locks):
            lock.release()
        self.locks = []


def leg_info(**extra: Any) -> dict[str, Any]:
    """What a leg records about the process running it."""
    git = git_revision()
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "version": __version__,
        "git": {k: git[k] for k in ("commit", "dirty")} if git else None,
        **extra,
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def legs_for_meta(legs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Leg records as meta.json shows them (times as ISO 8601, durations in seconds)."""
    out = []
    for g in legs:
        rec = {
            "started_at": _iso(g["started"]),
            "ended_at": _iso(g["last"]),  # an unfinished leg: its last commit
            "wall_time_s": round(float(g["last"]) - float(g["started"]), 3),
            # a leg with no recorded end was killed (or, for another rank, is still going)
            "status": "unfinished" if g["status"] == "running" else g["status"],
            "items_done": g["items_done"],
            "items_skipped": g["items_skipped"],
        }
        if g.get("rank") is not None:
            rec["rank"] = g["rank"]
        rec.update({k: v for k, v in g.items() if k not in rec and k not in _LEG_INTERNAL})
        out.append(rec)
    return out


_LEG_INTERNAL = ("uid", "started", "last", "rank")


def first_start(legs: Sequence[Mapping[str, Any]]) -> str | None:
    return _iso(min(float(g["started"]) for g in legs)) if legs else None

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

Modules: ``schema`` (the SQLite layer: tables, meta, stored values), ``runstore`` (one store
file, :class:`RunStore`), ``rundir`` (the file names and the writer's lock), ``view`` (the
directory read as one: :class:`RunView`, the CSV exports, :func:`read_results`), ``errors``.
"""

from infodecomp.reporting.store.errors import (
    DiskFull,
    ResumeRefused,
    RunLocked,
    StoreError,
    disk_full,
    is_disk_full,
)
from infodecomp.reporting.store.rundir import (
    RESULTS,
    SKIPPED,
    SKIPPED_COLUMNS,
    STORE,
    RunLock,
    has_store,
    rank_stores,
    store_files,
    store_path,
)
from infodecomp.reporting.store.runstore import RunStore
from infodecomp.reporting.store.schema import SCHEMA_VERSION, Skip, fingerprint_diff
from infodecomp.reporting.store.view import RunView, export, read_results, wall_time

__all__ = [
    "RESULTS",
    "SCHEMA_VERSION",
    "SKIPPED",
    "SKIPPED_COLUMNS",
    "STORE",
    "DiskFull",
    "ResumeRefused",
    "RunLock",
    "RunLocked",
    "RunStore",
    "RunView",
    "Skip",
    "StoreError",
    "disk_full",
    "export",
    "fingerprint_diff",
    "has_store",
    "is_disk_full",
    "rank_stores",
    "read_results",
    "store_files",
    "store_path",
    "wall_time",
]

"""`infodecomp export run.out_dir=<dir>`: write results.csv and skipped.csv from a run's store.

The store (results.sqlite, plus results.rank-<r>.sqlite of a data-parallel run) is the run's
state; results.csv is its documented export. Runs export at their end; this command does it
for a run that was killed, is still going (a consistent snapshot of the finished items), or
whose results.csv was lost or damaged. The stores are only read.
"""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = "usage: infodecomp export run.out_dir=<run directory>"


def export_run(run_dir: str | Path) -> tuple[Path, Path, int, int]:
    """Export a run directory; returns (results.csv, skipped.csv, items done, items skipped)."""
    from infodecomp.reporting.store import RunView, export, has_store

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not has_store(run_dir):
        raise FileNotFoundError(
            f"{run_dir} has no results store (results.sqlite); is it a run directory of "
            "this version?"
        )
    results, skipped = export(run_dir)
    with RunView(run_dir) as view:
        return results, skipped, len(view.done()), len(view.skipped())


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    out_dir = None
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "run.out_dir" and value:
            out_dir = value
        else:
            print(f"infodecomp export: unexpected argument {arg!r}\n{USAGE}", file=sys.stderr)
            return 2
    if out_dir is None:
        print(f"infodecomp export: run.out_dir is required\n{USAGE}", file=sys.stderr)
        return 2
    from infodecomp.reporting.store import StoreError

    try:
        results, skipped, n_done, n_skipped = export_run(out_dir)
    except (FileNotFoundError, StoreError) as err:
        print(f"infodecomp export: {err}", file=sys.stderr)
        return 2
    print(f"export: {n_done} items, {n_skipped} skipped -> {results}, {skipped}")
    return 0

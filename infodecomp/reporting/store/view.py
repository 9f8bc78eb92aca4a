"""A run directory read as one: the union of its stores, its exports and its results table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.reporting.csvio import atomic_write, natural_key, parse_results, render_rows
from infodecomp.reporting.store.errors import StoreError
from infodecomp.reporting.store.rundir import (
    RESULTS,
    SKIPPED,
    SKIPPED_COLUMNS,
    STORE,
    has_store,
    store_files,
)
from infodecomp.reporting.store.runstore import RunStore
from infodecomp.reporting.store.schema import Skip


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

"""`infodecomp aggregate runs=[dir,...]`: Tables 1-4 from run directories (no model is loaded).

Each entry of `runs` is a run directory, a folder searched for run directories below it
(`outputs/aro`), or a glob pattern (`outputs/aro/2025-*`, `outputs/**/multirun`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from infodecomp.experiments.config import AggregateConfig
from infodecomp.experiments.shim import hydra_main, run_dir

log = logging.getLogger("infodecomp")


def run(cfg: AggregateConfig) -> Path:
    from infodecomp.reporting.aggregate import aggregate, expand_run_paths

    if not cfg.runs:
        raise ValueError(
            "no run directories given; pass runs=[outputs/aro,outputs/localize] (a folder is "
            "searched for run directories below it; glob patterns such as outputs/aro/2025-* work)"
        )
    paths = expand_run_paths(cfg.runs)  # one-line error naming what was not found
    if cfg.out_dir and not cfg.run.out_dir:
        log.warning("aggregate: out_dir= is deprecated; use run.out_dir= like every other command")
        cfg.run.out_dir = cfg.out_dir
    out = Path(cfg.run.out_dir) if cfg.run.out_dir else run_dir(cfg, "aggregate")
    out.mkdir(parents=True, exist_ok=True)
    tables = aggregate(paths, out)
    for name, frame in tables.items():
        if name == "runs":
            continue
        print(frame.attrs.get("markdown", frame.to_string()))
        print()
    print(f"aggregate: {len(tables)} tables from {len(cfg.runs)} run paths -> {out}")
    return out


main = hydra_main("aggregate", run)

"""`infodecomp report runs=[dir,...] run.out_dir=...`: a static HTML report of run directories.

Tables 1-4 (also as LaTeX, CSV and Markdown), accuracy against logsnr samples from sweeps, the
heat maps and MMSE curves of `visualize` runs with captions and scores, and each run's
metadata; see reporting.html. No model is loaded. The last line printed is the report's path.
"""

from __future__ import annotations

from pathlib import Path

from infodecomp.experiments.config import ReportConfig
from infodecomp.experiments.shim import hydra_main, run_dir


def run(cfg: ReportConfig) -> Path:
    from infodecomp.reporting.html import write_report

    if not cfg.runs:
        raise SystemExit(
            "report: no run directories given; pass runs=[outputs/aro/...,outputs/visualize/...] "
            "(a folder is searched for run directories below it)"
        )
    missing = [r for r in cfg.runs if not Path(r).exists()]
    if missing:
        raise SystemExit(f"report: run directories not found: {missing}")
    out = Path(cfg.run.out_dir) if cfg.run.out_dir else run_dir(cfg, "report")
    path = write_report(
        [Path(r) for r in cfg.runs], out, title=cfg.title, n_boot=cfg.n_boot, seed=cfg.run.seed
    )
    print(
        f"report: {len(cfg.runs)} run paths -> {out} (tables as CSV / LaTeX / Markdown in tables/)"
    )
    print(path.resolve())
    return path


main = hydra_main("report", run)

"""Results schema, the transactional results store, metrics, Tables 1-4 and figures.

Never imports torch: tables are rebuilt from run directories alone. The figure helpers
(matplotlib) are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from infodecomp.reporting.aggregate import aggregate, find_run_dirs, load_runs, tables_markdown
from infodecomp.reporting.meta import write_meta, write_summary
from infodecomp.reporting.metrics import (
    IOU_COLUMNS,
    THRESHOLDS,
    intervention_table,
    iou,
    iou_curve,
    min_max_normalise,
    miou_heldout,
    miou_paper,
    pearson_r,
    ranking_accuracy,
)
from infodecomp.reporting.writer import (
    ARO_COLUMNS,
    INTERVENE_COLUMNS,
    LOCALIZE_COLUMNS,
    RunStore,
    RunView,
    export,
    read_results,
)
from infodecomp.tasks import predict

_FIGURES = ("panel", "mmse_curves", "accuracy_curves", "save")


def __getattr__(name: str) -> Any:
    if name in _FIGURES:
        from infodecomp.reporting import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'infodecomp.reporting' has no attribute '{name}'")


__all__ = [
    "ARO_COLUMNS",
    "INTERVENE_COLUMNS",
    "IOU_COLUMNS",
    "LOCALIZE_COLUMNS",
    "THRESHOLDS",
    "RunStore",
    "RunView",
    "aggregate",
    "find_run_dirs",
    "intervention_table",
    "iou",
    "iou_curve",
    "load_runs",
    "miou_heldout",
    "miou_paper",
    "min_max_normalise",
    "export",
    "pearson_r",
    "predict",
    "ranking_accuracy",
    "read_results",
    "tables_markdown",
    "write_meta",
    "write_summary",
    *_FIGURES,
]

"""Ranking tasks (benchmarks' metric rules), read by the `aro` command and the tables.

Importing the package registers every known benchmark's tasks; `COLUMN_ORDER` below is the
order of Table 1's columns (a task it does not list follows them, see tasks.base.column_order).
Pure pandas.
"""

from infodecomp.tasks import aro, shapes, sugarcrepe, winoground  # noqa: F401  (registers the tasks)
from infodecomp.tasks.base import (
    COLUMN_ORDER,
    TASKS,
    RankingTask,
    canonical_subset,
    column_key,
    column_label,
    column_order,
    get_task,
    mean_key,
    predict,
    register,
)

# Table 1, left to right: ARO, ShapesWorld, SugarCrepe, Winoground (then shapes-winoground)
COLUMN_ORDER[:] = [
    "vg-attribution",
    "vg-relation",
    "coco-order",
    "flickr-order",
    "shapes-attribute",
    "shapes-order",
    "shapes-relation",
    *(name for name, _, _ in sugarcrepe.SUBSETS.values()),
    "winoground",
    "shapes-winoground",
]

__all__ = [
    "COLUMN_ORDER",
    "TASKS",
    "RankingTask",
    "canonical_subset",
    "column_key",
    "column_label",
    "column_order",
    "get_task",
    "mean_key",
    "predict",
    "register",
]

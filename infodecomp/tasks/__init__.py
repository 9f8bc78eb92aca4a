"""Ranking tasks (benchmarks' metric rules), read by the `aro` command and the tables.

Importing the package registers every known benchmark's tasks; `COLUMN_ORDER` below is the
order of Table 1's columns (a task it does not list follows them, see tasks.base.column_order).
Pure pandas.
"""

import importlib
import pkgutil

from infodecomp.tasks import sugarcrepe
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

# every module of this package registers its benchmark's tasks when imported (a new benchmark is
# a new module here, nothing else to edit)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

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

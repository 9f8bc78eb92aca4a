"""Ranking tasks (benchmarks' metric rules), read by the `aro` command and the tables.

Importing the package registers every known benchmark's tasks; table columns follow the order
of registration. Pure pandas.
"""

from infodecomp.tasks import aro, shapes, sugarcrepe, winoground  # noqa: F401  (registers the tasks)
from infodecomp.tasks.base import (
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

__all__ = [
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

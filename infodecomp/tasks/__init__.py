"""Ranking tasks (benchmarks' metric rules), read by the `aro` command and the tables.

Importing the package registers every known benchmark's tasks; table columns follow the order
of registration. Pure pandas.
"""

from infodecomp.tasks import aro, shapes  # noqa: F401  (registers the tasks)
from infodecomp.tasks.base import TASKS, RankingTask, canonical_subset, get_task, predict, register

__all__ = ["TASKS", "RankingTask", "canonical_subset", "get_task", "predict", "register"]

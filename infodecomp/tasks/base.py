"""Ranking tasks: a benchmark's metric rule over per-option scores, and the task table.

A ranking item offers caption options, exactly one correct (`label`). A score ranks them (higher
is better, see infodecomp.scores); `predict` picks each item's best option with the tie rule
(the lowest option index wins, as argmax over the options in their original order does). A
`RankingTask` then turns one subset's predictions into its published accuracy: plain accuracy,
or a macro mean over groups with a rule for which groups count.

Every loader tags its items with a `subset` that names a task here; `aro` summaries and the
aggregate tables look the rule up by that name, so a new benchmark adds one task (and, for a
metric that is not "best option correct", overrides `evaluate`). Pure pandas: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pandas as pd

GroupRule = Callable[[pd.DataFrame], pd.Series]  # per-group table -> bool "enters the macro mean"


def predict(scores: pd.DataFrame) -> pd.DataFrame:
    """Pick each item's option with the highest score, with the benchmark's tie rule.

    Ties go to the lowest option index, as ``np.argmax`` over options in their original order does
    in the ARO evaluation (VG: [false, true], so a tie counts as wrong; Order: true first).

    Args:
        scores: one row per (item, option) with columns ``item_id``, ``option`` (index of the
            caption among the item's options) and ``score`` (higher is better). Columns
            ``subset``, ``group`` and ``label``, when present, are carried over per item.

    Returns:
        One row per item: ``item_id``, ``pred`` and the carried-over columns.
    """
    missing = {"item_id", "option", "score"} - set(scores.columns)
    if missing:
        raise ValueError(f"predict: columns {sorted(missing)} missing; got {list(scores.columns)}.")
    bad = scores.loc[scores["score"].isna(), "item_id"].unique()
    if len(bad):
        raise ValueError(
            f"predict: NaN scores for items {list(bad[:5])}; an estimate failed, "
            "rerun those items or drop them explicitly."
        )
    if scores.duplicated(["item_id", "option"]).any():
        dup = scores.loc[scores.duplicated(["item_id", "option"]), "item_id"].tolist()[:5]
        raise ValueError(
            f"predict: items {dup} have an option scored twice; pass one estimator at a time."
        )
    df = scores.reset_index(drop=True).sort_values(["item_id", "option"], kind="stable")
    # idxmax returns the first occurrence of the maximum, i.e. the lowest option index.
    best = df.groupby("item_id", sort=False)["score"].idxmax()
    keep = ["item_id", "option"] + [c for c in ("subset", "group", "label") if c in df.columns]
    out = df.loc[best.values, keep].rename(columns={"option": "pred"})
    return out.reset_index(drop=True)


def _group_table(pred: pd.DataFrame) -> pd.DataFrame:
    correct = (pred["pred"].astype(int) == pred["label"].astype(int)).astype(float)
    g = correct.groupby(pred["group"].astype(str))
    return pd.DataFrame(
        {"group": g.mean().index, "n": g.size().values, "accuracy": g.mean().values}
    )


@dataclass(frozen=True)
class RankingTask:
    """One benchmark subset and its metric rule.

    Args:
        name: canonical subset name, as loaders write it into `RankingItem.subset`.
        label: column label in the compositionality table (e.g. "VG-R").
        benchmark: the family it belongs to (ARO, ShapesWorld, ...), for grouping in tables.
        macro_groups: None for plain accuracy (Precision@1); otherwise a rule selecting the
            groups (per-group table with columns group, n, accuracy) whose accuracies are
            averaged into the score.
        rule: the rule in words, shown with the per-group table.
        aliases: other spellings of `name` accepted in results files.
        mean_group: tables also show the mean of this metric over the benchmark's tasks that
            share this group name (SugarCrepe: Add, Replace, Swap).
        metrics: the names of the numbers `evaluate` returns, headline first.
    """

    name: str
    label: str
    benchmark: str
    macro_groups: GroupRule | None = None
    rule: str = "plain accuracy"
    aliases: tuple[str, ...] = field(default=())
    mean_group: str | None = None
    metrics: tuple[str, ...] = ("accuracy",)

    def accuracy(self, pred: pd.DataFrame) -> tuple[float, pd.DataFrame]:
        """The subset's score from one prediction per item.

        Args:
            pred: one row per item with ``item_id``, ``subset``, ``group``, ``label``, ``pred``.

        Returns:
            ``(score, per_group)``: score in [0, 1]; ``per_group`` has columns ``group``, ``n``,
            ``accuracy`` and ``included`` (whether the group enters the score's macro mean),
            and ``attrs`` ``micro`` (plain accuracy), ``macro`` (mean over all groups),
            ``rule`` and ``subset``.
        """
        missing = {"item_id", "subset", "group", "label", "pred"} - set(pred.columns)
        if missing:
            raise ValueError(
                f"accuracy: columns {sorted(missing)} missing; got {list(pred.columns)}."
            )
        if pred.empty:
            raise ValueError("accuracy: no predictions.")
        subsets = {canonical_subset(s) for s in pred["subset"].unique()}
        if subsets != {self.name}:
            raise ValueError(
                f"accuracy: one subset at a time ({self.name}), got {sorted(subsets)}; "
                "group by subset first."
            )
        if pred["item_id"].duplicated().any():
            dup = pred.loc[pred["item_id"].duplicated(), "item_id"].tolist()[:5]
            raise ValueError(f"accuracy: items {dup} appear more than once; pass one row per item.")
        per_group = _group_table(pred)
        micro = float((pred["pred"].astype(int) == pred["label"].astype(int)).mean())
        if self.macro_groups is None:
            per_group["included"] = True
            score = micro
        else:
            per_group["included"] = self.macro_groups(per_group).astype(bool).to_numpy()
            inc = per_group.loc[per_group["included"], "accuracy"]
            score = float(inc.mean()) if len(inc) else float("nan")
        per_group.attrs.update(
            micro=micro,
            macro=float(per_group["accuracy"].mean()),
            rule=self.rule,
            subset=self.name,
            macro_rule=None if self.macro_groups is None else self.rule,
        )
        return score, per_group

    def evaluate(self, scores: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
        """The subset's numbers from per-option scores (one estimator): {metric: value in
        [0, 1]} in the order of `metrics`, and the per-group table.

        Default: predict, then `accuracy`. A benchmark whose metric is not "the best option is
        the labelled one" (e.g. Winoground's text / image / group scores) overrides this.
        """
        score, per_group = self.accuracy(predict(scores))
        return {"accuracy": score}, per_group


TASKS: dict[str, RankingTask] = {}
_ALIASES: dict[str, str] = {}
# Table 1's columns, left to right (task names; infodecomp/tasks/__init__.py sets them). Tasks not
# listed follow, by benchmark name, each benchmark's in the order its module registers them.
COLUMN_ORDER: list[str] = []


def register(*tasks: RankingTask) -> None:
    """Adds tasks to the table (a benchmark module calls this when it is imported)."""
    for t in tasks:
        TASKS[t.name] = t
        for a in t.aliases:
            _ALIASES[a] = t.name


def canonical_subset(name: str) -> str:
    """A task's name from the name or one of its declared aliases (``aro-vg-relation``,
    ``VG_Relation`` -> ``vg-relation``); any other name is returned as it is (no case folding
    or other guessing: an unregistered subset is scored by plain accuracy under its own name)."""
    return _ALIASES.get(str(name), str(name))


def column_key(subset: str, metric: str = "accuracy") -> str:
    """A compositionality-table column: the subset for its headline metric, else subset:metric."""
    return subset if metric == get_task(subset).metrics[0] else f"{subset}:{metric}"


def mean_key(benchmark: str, group: str) -> str:
    """The column of a benchmark's mean over the tasks of one `mean_group`."""
    return f"mean:{benchmark}:{group}"


def column_label(key: str) -> str:
    """Human label of a column key (see `column_key`, `mean_key`)."""
    if key.startswith("mean:"):
        _, benchmark, group = key.split(":", 2)
        return f"{benchmark} {group} (mean)"
    subset, _, metric = key.partition(":")
    task = get_task(subset)
    if not metric and len(task.metrics) > 1:
        metric = task.metrics[0]
    return f"{task.label} {metric}" if metric else task.label


def _table_position(task: RankingTask) -> tuple:
    if task.name in COLUMN_ORDER:
        return (0, COLUMN_ORDER.index(task.name))
    return (1, task.benchmark, list(TASKS).index(task.name))


def column_order(keys: Iterable[str]) -> list[str]:
    """Columns in table order: registered tasks in `COLUMN_ORDER` (each task's metrics in order,
    a benchmark's group means after its last task), then unregistered subsets sorted."""
    keys = set(keys)
    out: list[str] = []
    tasks = sorted(TASKS.values(), key=_table_position)
    for i, task in enumerate(tasks):
        out += [k for k in (column_key(task.name, m) for m in task.metrics) if k in keys]
        last_of_benchmark = i + 1 == len(tasks) or tasks[i + 1].benchmark != task.benchmark
        if last_of_benchmark:
            groups = dict.fromkeys(t.mean_group for t in tasks if t.benchmark == task.benchmark)
            out += [k for k in (mean_key(task.benchmark, g) for g in groups if g) if k in keys]
    return out + sorted(keys - set(out))


def get_task(subset: str) -> RankingTask:
    """The task of a subset; a subset without a registered rule is scored by plain accuracy."""
    name = canonical_subset(subset)
    return TASKS.get(name) or RankingTask(name, name, "other")

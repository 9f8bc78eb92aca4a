"""Tables 1 and 2 (and accuracy against samples): the long records of `aro` runs, one per
model x method x n_samples x subset, with the benchmarks' means over their tasks."""

from __future__ import annotations

import pandas as pd

from infodecomp.reporting.metrics import mean_interval, ranking_scores
from infodecomp.reporting.runs import Run, claim
from infodecomp.reporting.tables import ESTIMATOR_ORDER, estimator_method, int_or_none
from infodecomp.tasks import column_key, column_order, get_task, mean_key

ARO_REQUIRED = ("item_id", "subset", "group", "label", "option", "estimator", "score")


def aro_records(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Long records (one per model x method x n_samples x subset) and per-group rows.

    Runs are told apart by their configured ``estimator.n_samples`` (the sweep variable); the
    ``n_samples`` column of the results is what adaptive allocation actually used per item.
    """
    records, groups, seen, sources = [], [], {}, {}
    for run in runs:
        df = run.results(ARO_REQUIRED)
        if df.empty:
            continue
        used = df["n_samples"] if "n_samples" in df.columns else None
        n = run.n_samples
        if n is None and used is not None and used.nunique() == 1:
            n = int_or_none(used.iloc[0])
        for res in ranking_scores(df):
            est, subset, part, per_group = (
                res["estimator"],
                res["subset"],
                res["part"],
                res["per_group"],
            )
            method = estimator_method(est, run.adaptive)
            source = f"{run.control} control" if run.control else "measured"
            claim(seen, (run.model, method, n, subset, source), run)
            mean_used = (
                float(part.groupby("item_id")["n_samples"].first().mean())
                if used is not None
                else (float("nan") if n is None else float(n))
            )
            common = {"model": run.model, "method": method, "n_samples": n, "subset": subset}
            sources.setdefault(subset, {})[run.data_source] = None
            rank = (ESTIMATOR_ORDER.index(est) if est in ESTIMATOR_ORDER else 9, run.adaptive)
            for i, (metric, value) in enumerate(res["metrics"].items()):
                records.append(
                    {
                        **common,
                        "subset": column_key(subset, metric),
                        "accuracy": 100 * value,
                        "accuracy_lo": 100 * res["interval"][metric][0],
                        "accuracy_hi": 100 * res["interval"][metric][1],
                        "n_items": part["item_id"].nunique(),
                        "mean_samples": mean_used,
                        "paper": run.paper_setting,
                        "source": source,
                        "derived": i > 0,  # further metrics of the same items
                        "_rank": rank,
                    }
                )
            if not run.control:  # Table 2 breaks down the measured runs only
                groups.append(per_group.assign(**common, accuracy=100 * per_group["accuracy"]))
    if not records:
        return None
    rec = pd.DataFrame(records)
    means = _group_means(rec)
    if means is not None:
        rec = pd.concat([rec, means], ignore_index=True)
    rec["_n"] = rec["n_samples"].map(lambda v: -1 if v is None else v)
    rec = rec.sort_values(["model", "_rank", "method", "_n"], kind="stable")
    rec = rec.drop(columns=["_rank", "_n"]).reset_index(drop=True)
    method_order = {m: i for i, m in enumerate(dict.fromkeys(rec["method"]))}
    if not groups:
        return rec, pd.DataFrame()
    groups_df = pd.concat(groups, ignore_index=True)
    groups_df = groups_df.sort_values("method", key=lambda c: c.map(method_order), kind="stable")
    rec.attrs["data_sources"] = {k: list(v) for k, v in sources.items()}
    return rec, groups_df


def _mean_interval(grp: pd.DataFrame) -> dict[str, float]:
    """accuracy_lo / accuracy_hi (%) of the mean of a group of subsets (metrics.mean_interval)."""
    lo, hi = mean_interval(
        list(grp["accuracy"] / 100),
        list(zip(grp["accuracy_lo"] / 100, grp["accuracy_hi"] / 100, strict=True)),
    )
    return {"accuracy_lo": 100 * lo, "accuracy_hi": 100 * hi}


def _group_means(rec: pd.DataFrame) -> pd.DataFrame | None:
    """Rows for each benchmark's mean over the tasks of one `mean_group` (SugarCrepe's Add,
    Replace, Swap), per model x method x n_samples; only over the subsets that were run."""
    rows = []
    base = rec[~rec["derived"]]
    tasks = {k: get_task(k) for k in base["subset"].unique()}
    groups = {k: (t.benchmark, t.mean_group) for k, t in tasks.items() if t.mean_group}
    if not groups:
        return None
    part = base[base["subset"].isin(groups)].assign(_g=lambda d: d["subset"].map(groups))
    for (model, method, n, source, g), grp in part.groupby(
        ["model", "method", "n_samples", "source", "_g"], sort=False, dropna=False
    ):
        first = grp.iloc[0]
        rows.append(
            {
                "model": model,
                "method": method,
                "n_samples": n,
                "subset": mean_key(*g),
                "source": source,
                "accuracy": float(grp["accuracy"].mean()),
                **_mean_interval(grp),
                "n_items": int(grp["n_items"].sum()),
                "mean_samples": first["mean_samples"],
                "paper": bool(grp["paper"].any()),
                "derived": True,
                "_rank": first["_rank"],
            }
        )
    return pd.DataFrame(rows, columns=rec.columns)


def data_notes(sources: dict[str, list[str]]) -> list[str]:
    """One line per subset: where its items came from (several sources are all listed)."""
    return [f"Data, {get_task(s).label}: {'; '.join(sources[s])}." for s in column_order(sources)]

"""`infodecomp aro`: score every caption option with i^o, i^s and MMSE from shared logsnr draws.

Each item runs its options and the empty prompt at the same (logsnr, eps) draws, so the three
estimators and all options are compared on common random numbers. The ARO metric per estimator
is Table 1; the per-relation / per-attribute breakdown is Table 2 (both in `aggregate`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from infodecomp.data.registry import RANKING
from infodecomp.estimators.adaptive import estimate_ranking
from infodecomp.estimators.engine import Query, estimate
from infodecomp.experiments.common import engine_config, hydra_main
from infodecomp.experiments.config import AroConfig
from infodecomp.experiments.runner import RunContext, execute
from infodecomp.reporting.metrics import ranking_scores
from infodecomp.reporting.writer import ARO_COLUMNS
from infodecomp.scores import SCORES, check_scores

COLUMNS = ARO_COLUMNS  # the documented results.csv schema


def _queries(ctx: RunContext, items: list, images: list) -> list[Query]:
    xs = ctx.model.encode_images(images)  # [N, C, H, W]
    return [
        Query(
            xs[i].cpu(),
            (*it.options, ""),
            tuple((j, len(it.options)) for j in range(len(it.options))),
            key=str(it.item_id),
        )
        for i, it in enumerate(items)
    ]


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: AroConfig = ctx.cfg
    check_scores(cfg.estimators)
    queries = _queries(ctx, items, images)
    ecfg = engine_config(cfg.estimator, cfg.run)
    if cfg.estimator.adaptive:
        ests, used = estimate_ranking(
            ctx.model,
            queries,
            [len(it.options) for it in items],
            ecfg,
            score=cfg.estimators[0],
            margin=cfg.estimator.margin,
            round_samples=cfg.estimator.round_samples,
        )
    else:
        ests = estimate(ctx.model, queries, ecfg)
        used = [ecfg.n_samples] * len(ests)
    rows = []
    for it, e, n in zip(items, ests, used, strict=True):
        for j, text in enumerate(it.options):
            for name in cfg.estimators:
                value, se = e.score(name, j)
                rows.append(
                    {
                        "item_id": it.item_id,
                        "subset": it.subset,
                        "group": it.group,
                        "label": it.label,
                        "option": j,
                        "text": text,
                        "estimator": name,
                        "value": value,
                        "stderr": se,
                        "score": SCORES[name].sign * value,
                        "n_samples": n,
                    }
                )
    return rows


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    """accuracy/<score> by the subset's task rule (as Table 1 computes it); a run over several
    subsets gets accuracy/<score>/<subset> per subset as well."""
    metrics = {}
    scored = ranking_scores(results)
    several = len({r["subset"] for r in scored}) > 1
    for r in scored:
        key = f"accuracy/{r['estimator']}"
        if several:
            key += f"/{r['subset']}"
        metrics[key] = float(r["score"])
    metrics["samples/mean_per_item"] = float(results.groupby("item_id")["n_samples"].first().mean())
    return metrics


def run(cfg: AroConfig) -> Path:
    return execute(
        cfg,
        "aro",
        COLUMNS,
        process,
        summarize,
        headline=f"accuracy/{cfg.estimators[0]}",
        consumes=RANKING,
    )


main = hydra_main("aro", run)

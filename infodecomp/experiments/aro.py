"""`infodecomp aro`: score every caption option with i^o, i^s and MMSE from shared logsnr draws.

Each item runs its options and the empty prompt at the same (logsnr, eps) draws, so the three
estimators and all options are compared on common random numbers. The ARO metric per estimator
is Table 1; the per-relation / per-attribute breakdown is Table 2 (both in `aggregate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from infodecomp.data.registry import RANKING
from infodecomp.estimators.adaptive import estimate_ranking
from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.experiments.common import engine_config, hydra_main
from infodecomp.experiments.config import AroConfig, EstimatorConfig
from infodecomp.experiments.runner import RunContext, execute
from infodecomp.reporting.metrics import ranking_scores
from infodecomp.reporting.writer import ARO_COLUMNS
from infodecomp.scores import SCORES, check_scores

COLUMNS = ARO_COLUMNS  # the documented results.csv schema


def option_queries(
    xs: torch.Tensor, options: Sequence[Sequence[str]], keys: Sequence[str]
) -> list[Query]:
    """One query per image: its caption options and the unconditional "", contrast j = (option j,
    ""), so i^o / i^s of option j is contrast j and its denoising loss condition j. Shared by
    `aro` and the Python API (infodecomp.api.score)."""
    return [
        Query(
            xs[i].cpu(),
            (*opts, ""),
            tuple((j, len(opts)) for j in range(len(opts))),
            key=keys[i],
        )
        for i, opts in enumerate(options)
    ]


def estimate_options(
    model: Any,
    queries: list[Query],
    n_options: list[int],
    est: EstimatorConfig,
    ecfg: EngineConfig,
    score: str,
) -> tuple[list[ItemEstimate], list[int]]:
    """The estimates of `option_queries` and the logsnr samples each item used: `ecfg.n_samples`,
    or with `est.adaptive` as many rounds as `score` needs for a clear leader."""
    if est.adaptive:
        return estimate_ranking(
            model,
            queries,
            n_options,
            ecfg,
            score=score,
            margin=est.margin,
            round_samples=est.round_samples,
        )
    ests = estimate(model, queries, ecfg)
    return ests, [ecfg.n_samples] * len(ests)


def _queries(ctx: RunContext, items: list, images: list) -> list[Query]:
    xs = ctx.model.encode_images(images)  # [N, C, H, W]
    keys = [str(it.draw_key or it.item_id) for it in items]
    return option_queries(xs, [it.options for it in items], keys)


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: AroConfig = ctx.cfg
    check_scores(cfg.estimators)
    queries = _queries(ctx, items, images)
    ecfg = engine_config(cfg.estimator, cfg.run)
    ests, used = estimate_options(
        ctx.model,
        queries,
        [len(it.options) for it in items],
        cfg.estimator,
        ecfg,
        cfg.estimators[0],
    )
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
    """<metric>/<score> by each subset's task rule, as Table 1 computes it (accuracy/io; for
    Winoground text/io, image/io, group/io). A run over several subsets adds
    <metric>/<score>/<subset> per subset and reports the mean over subsets as <metric>/<score>."""
    metrics: dict = {}
    scored = ranking_scores(results)
    several = len({r["subset"] for r in scored}) > 1
    per_key: dict[str, list[float]] = {}
    for r in scored:
        for name, value in r["metrics"].items():
            key = f"{name}/{r['estimator']}"
            per_key.setdefault(key, []).append(float(value))
            if several:
                metrics[f"{key}/{r['subset']}"] = float(value)
    for key, values in per_key.items():
        metrics[key] = sum(values) / len(values)
    metrics["samples/mean_per_item"] = float(results.groupby("item_id")["n_samples"].first().mean())
    return metrics


def _headline(score: str):
    """The summary key to print: the first score's headline metric (accuracy, or text for
    Winoground-style tasks)."""

    def pick(metrics: dict) -> str:
        keys = [k for k in metrics if k.endswith(f"/{score}") and k.count("/") == 1]
        return keys[0] if keys else f"accuracy/{score}"

    return pick


def run(cfg: AroConfig) -> Path:
    return execute(
        cfg,
        "aro",
        COLUMNS,
        process,
        summarize,
        headline=_headline(cfg.estimators[0]),
        consumes=RANKING,
    )


main = hydra_main("aro", run)

"""`infodecomp aro`: score every caption option with i^o, i^s and MMSE from shared logsnr draws.

Each item runs its options and the empty prompt at the same (logsnr, eps) draws, so the three
estimators and all options are compared on common random numbers. The ARO metric per estimator
is Table 1; the per-relation / per-attribute breakdown is Table 2 (both in `aggregate`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from infodecomp.data.registry import RANKING
from infodecomp.estimators.adaptive import StoppingRule, check_mode, estimate_ranking
from infodecomp.estimators.engine import Query, estimate
from infodecomp.experiments.common import engine_config, hydra_main, sampler_from
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


def _row(it, j: int, text: str, name: str, value: float, se: float, score: float, **kw) -> dict:
    return {
        "item_id": it.item_id,
        "subset": it.subset,
        "group": it.group,
        "label": it.label,
        "option": j,
        "text": text,
        "estimator": name,
        "value": value,
        "stderr": se,
        "score": score,
        **kw,
    }


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    """Scores every option of every item. Fixed budget: value, stderr and score from the same
    draws. Adaptive (estimator.adaptive): each score decides its own answer with the stopping
    rule (estimators.adaptive); `score` is the decision draws' mean (what the answer was decided
    on; stopping overstates its magnitude), value and stderr come from estimator.report_samples
    fresh draws (values_from = "fresh draws"), or, with report_samples=0, from the decision
    draws (values_from = "decision draws")."""
    cfg: AroConfig = ctx.cfg
    check_scores(cfg.estimators)
    queries = _queries(ctx, items, images)
    ecfg = engine_config(cfg.estimator, cfg.run)
    rows = []
    if not cfg.estimator.adaptive:
        for it, e in zip(items, estimate(ctx.model, queries, ecfg), strict=True):
            for j, text in enumerate(it.options):
                for name in cfg.estimators:
                    value, se = e.score(name, j)
                    rows.append(
                        _row(
                            it, j, text, name, value, se, SCORES[name].sign * value,
                            n_samples=ecfg.n_samples, n_report=ecfg.n_samples,
                            values_from="same draws",
                        )
                    )  # fmt: skip
        return rows
    est = cfg.estimator
    results = estimate_ranking(
        ctx.model,
        queries,
        [len(it.options) for it in items],
        ecfg,
        scores=cfg.estimators,
        margin=est.margin,
        round_samples=est.round_samples,
        min_samples=est.min_samples,
        report_samples=est.report_samples,
    )
    for it, res in zip(items, results, strict=True):
        for j, text in enumerate(it.options):
            for name in cfg.estimators:
                d, sign = res.decisions[name], SCORES[name].sign
                if res.report is not None:
                    value, se = res.report.score(name, j)
                    source = "fresh draws"
                else:
                    value, se = sign * d.mean[j], d.stderr[j]
                    source = "decision draws"
                rows.append(
                    _row(
                        it, j, text, name, value, se, d.mean[j],
                        n_samples=res.n_decision, n_report=res.n_report, values_from=source,
                    )
                )  # fmt: skip
    return rows


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    """accuracy/<score> by the subset's task rule (as Table 1 computes it); a run over several
    subsets gets accuracy/<score>/<subset> per subset as well. Under a data control
    (data.control=shuffled-images) the keys are accuracy_control/<score>: a score that stays
    above chance there follows a caption prior, not the image."""
    metrics = {}
    scored = ranking_scores(results)
    several = len({r["subset"] for r in scored}) > 1
    prefix = "accuracy_control" if ctx.cfg.data.control else "accuracy"
    for r in scored:
        key = f"{prefix}/{r['estimator']}"
        if several:
            key += f"/{r['subset']}"
        metrics[key] = float(r["score"])
    per_item = results.groupby("item_id")
    metrics["samples/mean_per_item"] = float(per_item["n_samples"].first().mean())
    if "n_report" in results.columns and ctx.cfg.estimator.adaptive:
        # the answer's draws above; the draws behind the reported values (fresh, 0 = none)
        metrics["samples/report_per_item"] = float(per_item["n_report"].first().mean())
    return metrics


def run(cfg: AroConfig) -> Path:
    if cfg.estimator.adaptive:  # refuse a dishonest stopping rule or mode before loading anything
        est = cfg.estimator
        StoppingRule(est.margin, est.min_samples, est.round_samples, est.n_samples)
        check_mode(sampler_from(est))
    prefix = "accuracy_control" if cfg.data.control else "accuracy"
    return execute(
        cfg,
        "aro",
        COLUMNS,
        process,
        summarize,
        headline=f"{prefix}/{cfg.estimators[0]}",
        consumes=RANKING,
    )


main = hydra_main("aro", run)

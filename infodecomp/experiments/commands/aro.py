"""`infodecomp aro`: score every caption option with i^o, i^s and MMSE from shared logsnr draws.

Each item runs its options and the empty prompt at the same (logsnr, eps) draws, so the three
estimators and all options are compared on common random numbers. The ARO metric per estimator
is Table 1; the per-relation / per-attribute breakdown is Table 2 (both in `aggregate`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.data.registry import RANKING
from infodecomp.estimators.adaptive import StoppingRule, check_mode, estimate_ranking
from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.queries import option_queries
from infodecomp.experiments.common import engine_config, sampler_from
from infodecomp.experiments.config import AroConfig, EstimatorConfig
from infodecomp.experiments.runner import RunContext, encode_batch, execute
from infodecomp.experiments.shim import hydra_main
from infodecomp.reporting.metrics import mean_interval, ranking_scores
from infodecomp.reporting.writer import ARO_COLUMNS
from infodecomp.scores import SCORES, check_scores, get_score

COLUMNS = ARO_COLUMNS  # the documented results.csv schema


def estimate_options(
    model: Any,
    queries: list[Query],
    n_options: list[int],
    est: EstimatorConfig,
    ecfg: EngineConfig,
    score: str,
) -> tuple[list[ItemEstimate], list[int]]:
    """The estimates of `option_queries` and the logsnr samples each item used: `ecfg.n_samples`,
    or with `est.adaptive` the samples `score` needed for its answer (estimators.adaptive) plus
    the fresh draws (`est.report_samples`) the returned estimates come from."""
    if est.adaptive:
        if est.report_samples < 1:
            raise ValueError(
                "estimator.report_samples=0 leaves only decision-only values; the estimates "
                "returned here come from fresh draws: set estimator.report_samples >= 1"
            )
        results = estimate_ranking(
            model,
            queries,
            n_options,
            ecfg,
            scores=[score],
            margin=est.margin,
            round_samples=est.round_samples,
            min_samples=est.min_samples,
            report_samples=est.report_samples,
        )
        return [r.report for r in results], [r.n_decision + r.n_report for r in results]
    ests = estimate(model, queries, ecfg)
    return ests, [ecfg.n_samples] * len(ests)


def _queries(ctx: RunContext, items: list, images: list) -> list[Query]:
    xs = encode_batch(ctx, items, images)  # [N, C, H, W]
    keys = [str(it.draw_key or it.item_id) for it in items]
    # "" is evaluated only when a requested score contrasts with it (i^o, i^s)
    uncond = any(get_score(name).index == "contrast" for name in ctx.cfg.estimators)
    return option_queries(xs, [it.options for it in items], keys, unconditional=uncond)


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
    """<metric>/<score> by each subset's task rule, as Table 1 computes it (accuracy/io; for
    Winoground text/io, image/io, group/io). Under a data control (data.control=shuffled-images)
    the keys are <metric>_control/<score>: a score that stays above chance there follows a
    caption prior, not the image. A run over several subsets adds
    <metric>/<score>/<subset> per subset and reports the mean over subsets as <metric>/<score>."""
    metrics: dict = {}
    scored = ranking_scores(results)
    several = len({r["subset"] for r in scored}) > 1
    per_key: dict[str, list[tuple[float, tuple[float, float]]]] = {}
    control = "_control" if ctx.cfg.data.control else ""
    for r in scored:
        for name, value in r["metrics"].items():
            key = f"{name}{control}/{r['estimator']}"
            lo, hi = r["interval"][name]
            per_key.setdefault(key, []).append((float(value), (lo, hi)))
            if several:
                metrics[f"{key}/{r['subset']}"] = float(value)
                metrics[f"{name}{control}_lo/{r['estimator']}/{r['subset']}"] = lo
                metrics[f"{name}{control}_hi/{r['estimator']}/{r['subset']}"] = hi
    for key, pairs in per_key.items():  # a run over several subsets: their mean
        name, est = key.split("/")
        values = [v for v, _ in pairs]
        metrics[key] = sum(values) / len(values)
        lo, hi = pairs[0][1] if len(pairs) == 1 else mean_interval(values, [i for _, i in pairs])
        metrics[f"{name}_lo/{est}"], metrics[f"{name}_hi/{est}"] = lo, hi
    per_item = results.groupby("item_id")
    metrics["samples/mean_per_item"] = float(per_item["n_samples"].first().mean())
    if "n_report" in results.columns and ctx.cfg.estimator.adaptive:
        # the answer's draws above; the draws behind the reported values (fresh, 0 = none)
        metrics["samples/report_per_item"] = float(per_item["n_report"].first().mean())
    return metrics


SHORT_LABELS = {"io": "i^o", "is": "i^s", "mmse": "MMSE"}
SHAPES_IO_NOTE = (
    "note: on the exact ShapesWorld denoiser i^o prefers a caption that contradicts the image, "
    "so its low accuracy here is expected, not a failure; read i^s and MMSE (README, "
    "'What ShapesWorld shows')"
)


def headline(estimators: list[str]):
    """The end-of-run scores side by side, each with its 95 % interval (reporting.metrics:
    Wilson score): `i^o 0.33 [0.10, 0.70] | i^s 1.00 [0.61, 1.00] (95% Wilson intervals)`."""

    def show(metrics: dict) -> str:
        # the headline metrics of the run's tasks: accuracy, or text / image / group
        kinds = dict.fromkeys(
            k.split("/")[0]
            for k in metrics
            if k.count("/") == 1
            and k.split("/")[1] in estimators
            and not k.split("/")[0].endswith(("_lo", "_hi"))
            and not k.startswith("samples/")
        )
        lines = []
        for kind in kinds:
            parts = []
            for name in estimators:
                value = metrics.get(f"{kind}/{name}")
                lo, hi = metrics.get(f"{kind}_lo/{name}"), metrics.get(f"{kind}_hi/{name}")
                if value is None:
                    continue
                ci = "" if lo is None or lo != lo else f" [{lo:.2f}, {hi:.2f}]"
                parts.append(f"{SHORT_LABELS.get(name, name)} {value:.2f}{ci}")
            lines.append(f"{kind} " + " | ".join(parts))
        if not lines:
            return "no items scored"
        return "; ".join(lines) + " (95% Wilson intervals)"

    return show


def run(cfg: AroConfig) -> Path:
    check_scores(cfg.estimators)  # before any model or data is loaded
    if cfg.estimator.adaptive:  # refuse a dishonest stopping rule or mode before loading anything
        est = cfg.estimator
        StoppingRule(est.margin, est.min_samples, est.round_samples, est.n_samples)
        check_mode(sampler_from(est))
    out = execute(
        cfg,
        "aro",
        COLUMNS,
        process,
        summarize,
        headline=headline(cfg.estimators),
        consumes=RANKING,
    )
    _explain_shapes_io(cfg, out)
    return out


def _explain_shapes_io(cfg: AroConfig, out: Path) -> None:
    """Say why, when i^o trails i^s on ShapesWorld with the exact oracle (once per run)."""
    if cfg.model.name != "shapes-oracle" or not cfg.data.name.startswith("shapes-"):
        return
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        return
    summary = json.loads(summary_path.read_text())
    io, is_ = summary.get("accuracy/io"), summary.get("accuracy/is")
    if io is not None and (io == 0 or (is_ is not None and io < is_)):
        print(SHAPES_IO_NOTE)


main = hydra_main("aro", run)

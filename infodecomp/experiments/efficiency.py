"""Samples needed for the same ranking answer, measured on the exact ShapesWorld oracle.

The infinite-sample answer of the i^s / MMSE ranking is argmax_j log p(x | y_j), which the oracle
computes exactly. Each scheme's agreement with it and its denoiser evaluations per item are
compared with the paper's fixed budget (100 iid samples from the truncated logistic). The
schemes: stratified draws (one uniform per stratum of the proposal's quantiles), antithetic
draws (stratified pairs mirrored in the proposal's quantiles, t and 1 - t), a logistic
proposal fitted to the integrand of the ranking on separate calibration items (moment matching
of the variance-optimal density, proportional to |integrand|; its calibration evaluations are
charged to the study's items), and adaptive stopping (estimators.adaptive).
Ranking by i^s needs no unconditional pass (its term is common to all options and cancels in
the comparison), so evaluations count options only, for the baseline too (the published
procedure also runs the empty prompt: its count is reported beside).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from PIL import Image

from infodecomp.data.shapes import attribute_set, order_set, relation_set
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.adaptive import MIN_SAMPLES, estimate_ranking, ranking_terms
from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.estimators.samplers import LogsnrSampler, fit_logistic
from infodecomp.models.oracles.exact import ShapesOracle

# the captions of the timed items (bench, the score study): one VG-like relation pair
OPTIONS = ("the man is beside the dog", "the dog is beside the man")


def random_images(n: int, size: int, seed: int) -> list[Image.Image]:
    """n random RGB images of size x size (the timed items: the speed of a call does not
    depend on what the image shows)."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def item_options(n: int) -> list[tuple[str, ...]]:
    """n VG-like items, each with its own two captions (as in a real batch, no prompt repeats)."""
    return [tuple(f"{o} {i}" for o in OPTIONS) for i in range(n)]


PAPER = LogsnrSampler()  # logistic loc 1, scale 2, clip 3, iid


def ranking_items(n_per_set: int, noise: float, seed: int) -> list:
    """Relation, attribute and order items drawn at the given image noise."""
    items = []
    for build, name in (
        (relation_set, "shapes-relation"),
        (attribute_set, "shapes-attribute"),
        (order_set, "shapes-order"),
    ):
        items += build(DataSpec(name=name, size=n_per_set, seed=seed, noise=noise)).items
    return items


def exact_answers(oracle: ShapesOracle, items: list) -> torch.Tensor:
    """argmax_j log p(x | option_j) per item, from the oracle's exact densities. Returns [N]."""
    return torch.tensor(
        [
            int(
                torch.stack(
                    [oracle.log_prob(it.image[None], opt)[0] for opt in it.options]
                ).argmax()
            )
            for it in items
        ]
    )


def _predict(ests, queries) -> torch.Tensor:
    return torch.tensor(
        [
            int(ranking_terms(e, "mmse", len(q.conditions)).mean(-1).argmax())
            for e, q in zip(ests, queries, strict=True)
        ]
    )


def calibrate(
    oracle: ShapesOracle, noise: float, seed: int, n_per_set: int = 5, n_samples: int = 50
) -> tuple[LogsnrSampler, int]:
    """A proposal fitted to where the options' error curves differ, on separate calibration items.

    Returns the sampler and the denoiser evaluations the calibration cost.
    """
    items = ranking_items(n_per_set, noise, seed + 7919)
    queries = [Query(it.image, it.options, key=("calibrate", str(it.item_id))) for it in items]
    wide = LogsnrSampler(kind="uniform", low=-12.0, high=12.0, mode="stratified")
    ests = estimate(
        oracle, queries, EngineConfig(n_samples=n_samples, sampler=wide, max_batch=4096, seed=seed)
    )
    logsnr = torch.cat([e.logsnr for e in ests])
    weight = torch.cat([e.weight for e in ests])
    spread = torch.cat(
        [(e.mse - e.mse.mean(0)).abs().sum(0) for e in ests]
    )  # [S] how much options differ
    evals = sum(n_samples * len(q.conditions) for q in queries)
    return fit_logistic(logsnr, weight, spread), evals


def _schemes(
    fitted: LogsnrSampler, budgets: tuple[int, ...], margins: tuple[float, ...]
) -> list[tuple[str, str, LogsnrSampler, int, float | None]]:
    """(name, proposal, sampler, budget, adaptive margin or None) of every scheme, the paper's
    fixed budget first."""
    paper_strat = replace(PAPER, mode="stratified")
    paper_anti = replace(PAPER, mode="antithetic")
    schemes = [("fixed-100 (paper)", "paper, iid", PAPER, 100, None)]
    schemes += [(f"fixed-{n}", "paper, stratified", paper_strat, n, None) for n in budgets]
    schemes += [(f"fixed-{n}", "paper, antithetic", paper_anti, n, None) for n in budgets]
    schemes += [(f"fixed-{n}", "fitted, stratified", fitted, n, None) for n in budgets]
    for label, sampler in (
        ("paper, stratified", paper_strat),
        ("paper, antithetic", paper_anti),
        ("fitted, stratified", fitted),
    ):
        schemes += [(f"adaptive margin {m:g}", label, sampler, 100, m) for m in margins]
    return schemes


def _answers(
    oracle: ShapesOracle,
    queries: list,
    n_opt: list[int],
    cfg: EngineConfig,
    margin: float | None,
    round_samples: int,
    min_samples: int,
) -> tuple[torch.Tensor, list[int]]:
    """One repeat of a scheme: the picked option per item and the samples each used (a fixed
    budget, or the adaptive stopping rule's decision at `margin`)."""
    if margin is None:
        ests = estimate(oracle, queries, cfg)
        return _predict(ests, queries), [cfg.n_samples] * len(queries)
    results = estimate_ranking(
        oracle,
        queries,
        n_opt,
        cfg,
        scores=("mmse",),
        margin=margin,
        round_samples=round_samples,
        min_samples=min_samples,
        report_samples=0,  # the answers only; the report's cost is listed apart
    )
    return torch.tensor([r.decisions["mmse"].pick for r in results]), [
        r.n_decision for r in results
    ]


def sample_efficiency(
    n_per_set: int = 70,
    noise: float = 3.0,
    seed: int = 0,
    seeds: int = 6,
    budgets: tuple[int, ...] = (30, 100),
    margins: tuple[float, ...] = (3.0,),
    round_samples: int = 10,
    min_samples: int = MIN_SAMPLES,
    report_samples: int = MIN_SAMPLES,
    progress: Callable[[str, int], None] | None = None,
) -> pd.DataFrame:
    """Agreement with the exact answer and evaluations per item for each scheme, over `seeds` repeats.

    Returns one row per scheme with: scheme, proposal, samples_per_item, evals_per_item (for the
    answer; with the fitted proposal's calibration evaluations spread over this study's items),
    report_evals_per_item (adaptive schemes: the fresh draws behind the reported values, which
    the answer does not need), agreement (mean over items and repeats), and diff_se, the
    standard error of the agreement difference to the baseline (paired over items and
    repeats). The first row is the baseline. Adaptive answers are the stopping rule's decisions
    (estimators.adaptive). `progress(scheme, total)`, when given, is called after each scheme x
    repeat (total = their count).
    """
    oracle = ShapesOracle(sigma0=noise)
    items = ranking_items(n_per_set, noise, seed)
    truth = exact_answers(oracle, items)
    queries = [Query(it.image, it.options, key=str(it.item_id)) for it in items]
    n_opt = [len(it.options) for it in items]
    k = torch.tensor(n_opt, dtype=torch.float64)
    fitted, cal_evals = calibrate(oracle, noise, seed)
    schemes = _schemes(fitted, budgets, margins)
    rows, base_correct = [], None
    for name, proposal, sampler, budget, margin in schemes:
        correct, used = [], []
        for rep in range(seeds):
            cfg = EngineConfig(
                n_samples=budget, sampler=sampler, max_batch=4096, seed=seed + 1000 * rep
            )
            pred, n_used = _answers(oracle, queries, n_opt, cfg, margin, round_samples, min_samples)
            correct.append((pred == truth).double())
            used.append(torch.tensor(n_used, dtype=torch.float64))
            if progress is not None:
                progress(name, len(schemes) * seeds)
        correct_t, used_t = torch.stack(correct), torch.stack(used)  # [R, N]
        if base_correct is None:
            base_correct = correct_t
        diff = (correct_t - base_correct).flatten()
        rows.append(
            {
                "scheme": name,
                "proposal": proposal,
                "samples_per_item": float(used_t.mean()),
                "evals_per_item": float((used_t * k).mean())
                + (cal_evals / len(items) if proposal.startswith("fitted") else 0.0),
                "report_evals_per_item": float((report_samples * k).mean())
                if margin is not None
                else 0.0,
                "agreement": float(correct_t.mean()),
                "diff_se": float(diff.std() / diff.numel() ** 0.5),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs.update(
        published_evals_per_item=float((100 * (k + 1)).mean()),
        n_items=len(items),
        repeats=seeds,
        calibration_evals=cal_evals,
        fitted=str(fitted),
        noise=noise,
    )
    return table

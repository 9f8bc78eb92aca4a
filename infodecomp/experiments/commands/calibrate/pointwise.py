"""Sections 1 and 2 of calibrate: the MMSE curves, the denoising loss and the log-likelihood
(`mmse`); i^s and i^o of true, partial and contradicting captions (`pointwise`). One estimate
serves both: the caption kinds and the empty prompt at the same draws."""

from __future__ import annotations

import numpy as np
import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate
from infodecomp.estimators.queries import option_queries
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.commands.calibrate.pair import (
    EXACT_LOGP,
    KINDS,
    LOG_RATIO,
    SAME_DRAWS,
    Pair,
    row,
    with_x,
)
from infodecomp.experiments.config import CalibrateConfig
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.worlds import shapes as world


def pointwise_items(oracle: ShapesOracle, n: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    """`n` images of related two-object scenes (distinct colours and shapes), each with a true,
    a partial (its first object alone) and a contradicting caption (the objects swapped around
    the relation)."""
    gen = torch.Generator().manual_seed(seed * 1000 + 11)
    pool = [
        i
        for i, (a, b) in enumerate(world.scenes())
        if world.relation_between(a, b) and a.colour != b.colour and a.shape != b.shape
    ]
    out = []
    for p in torch.randint(len(pool), (n,), generator=gen).tolist():
        a, b = world.scenes()[pool[p]]
        rel = world.relation_between(a, b)
        da, db = world.describe(a), world.describe(b)
        captions = {
            "true": f"a {da} {rel} a {db}",
            "partial": f"a {da}",
            "contradicting": f"a {db} {rel} a {da}",
        }
        out.append((oracle.sample_scene(pool[p], gen), captions))
    return out


def pointwise_sections(
    pair: Pair, cfg: CalibrateConfig, sections: list[str]
) -> tuple[list[dict], list[dict]]:
    """Rows of the `mmse` and `pointwise` sections and the per-sample curves (one estimate of
    both: the caption kinds and "" at the same draws)."""
    items = pointwise_items(pair.oracle, cfg.n_items, cfg.data.seed)
    xs_m, xs_o = pair.encode([x for x, _ in items])
    queries = option_queries(
        xs_o,
        [list(caps.values()) for _, caps in items],
        [("calibrate-pointwise", cfg.data.seed, i) for i in range(len(items))],
    )
    sampler = LogsnrSampler(
        kind="uniform", low=cfg.curve_low, high=cfg.curve_high, mode="stratified"
    )
    ecfg = EngineConfig(
        n_samples=cfg.estimator.n_samples,
        sampler=sampler,
        max_batch=cfg.run.batch_size,
        seed=cfg.run.seed,
    )
    ests_m, ests_o = pair.estimate(with_x(queries, xs_m), queries, ecfg)
    x64 = xs_o.double()
    truth = _log_ratios(pair.oracle, items, x64)
    rng = f"uniform logsnr [{cfg.curve_low:g}, {cfg.curve_high:g}]"
    rows: list[dict] = []
    if "mmse" in sections:
        rows += _mmse_rows(pair.oracle, items, x64, ests_m, ests_o, rng)
    if "pointwise" in sections:
        rows += _pointwise_rows(ests_m, ests_o, truth, rng)
    curves = _curves(ests_m, ests_o) if "mmse" in sections else []
    return rows, curves


def _log_ratios(oracle: ShapesOracle, items: list, x64: torch.Tensor) -> dict[str, np.ndarray]:
    """Caption kind -> the exact log p(x|y) - log p(x) of every image."""
    base = oracle.log_prob(x64, "")  # [N]
    return {
        kind: np.array(
            [
                float(oracle.log_prob(x64[i : i + 1], caps[kind])[0] - base[i])
                for i, (_, caps) in enumerate(items)
            ]
        )
        for kind in KINDS
    }


def _mmse_rows(
    oracle: ShapesOracle,
    items: list,
    x64: torch.Tensor,
    ests_m: list[ItemEstimate],
    ests_o: list[ItemEstimate],
    rng: str,
) -> list[dict]:
    """The denoising loss (learned vs the exact MMSE) and both log-likelihood estimates against
    the exact log p(x|y), with the true caption and unconditionally."""
    rows = []
    k = len(KINDS)
    for label, j, cap in (("conditional (true caption)", 0, "true"), ("unconditional", k, "")):
        rows.append(
            row(
                "mmse",
                "denoising loss 1/2 int E||eps - eps_hat||^2",
                label,
                SAME_DRAWS,
                [e.score("mmse", j)[0] for e in ests_m],
                [e.score("mmse", j)[0] for e in ests_o],
                note=f"{rng}; the exact oracle's is the MMSE: learned - exact >= 0 on average",
            )
        )
        exact_lp = [
            float(oracle.log_prob(x64[i : i + 1], caps[cap] if cap else "")[0])
            for i, (_, caps) in enumerate(items)
        ]
        for who, ests in (("learned", ests_m), ("exact oracle", ests_o)):
            rows.append(
                row(
                    "mmse",
                    "log-likelihood estimate (nats)"
                    + ("" if who == "learned" else " of the exact oracle"),
                    label,
                    EXACT_LOGP,
                    [e.log_likelihood(j)[0] for e in ests],
                    exact_lp,
                    note=f"{rng}: both estimates miss the part outside it"
                    if who != "learned"
                    else rng,
                )
            )
    return rows


def _pointwise_rows(
    ests_m: list[ItemEstimate],
    ests_o: list[ItemEstimate],
    truth: dict[str, np.ndarray],
    rng: str,
) -> list[dict]:
    """i^s and i^o of each caption kind against the oracle's (same draws) and the exact log
    ratio, the oracle's own estimator error, and the true-minus-contradicting margins."""
    rows = []
    for j, kind in enumerate(KINDS):
        learned, exact = (
            {"i^s": [e.info_s(j)[0] for e in ests], "i^o": [e.info_o(j)[0] for e in ests]}
            for ests in (ests_m, ests_o)
        )
        for name in ("i^s", "i^o"):
            rows.append(
                row("pointwise", name, kind, SAME_DRAWS, learned[name], exact[name], note=rng)
            )
            rows.append(
                row("pointwise", name, kind, LOG_RATIO, learned[name], truth[kind], note=rng)
            )
        rows.append(
            row(
                "pointwise",
                "i^s of the exact oracle",
                kind,
                LOG_RATIO,
                exact["i^s"],
                truth[kind],
                note=f"{rng}: the estimator's own error (learned column = the oracle's estimate)",
            )
        )
    # why a score ranks as it does: its true caption's value minus the contradicting one's
    # (the relation set's two options); i^o of the exact oracle is negative here
    t, c = KINDS.index("true"), KINDS.index("contradicting")
    for name, fn in (("i^o", "info_o"), ("i^s", "info_s")):
        margin_m, margin_o = (
            [getattr(e, fn)(t)[0] - getattr(e, fn)(c)[0] for e in ests] for ests in (ests_m, ests_o)
        )
        rows.append(
            row(
                "pointwise",
                f"{name}(true) - {name}(contradicting)",
                "per image",
                SAME_DRAWS,
                margin_m,
                margin_o,
                note=f"{rng}; > 0: the score prefers the true caption",
            )
        )
    return rows


def _curves(ests_m: list[ItemEstimate], ests_o: list[ItemEstimate]) -> list[dict]:
    """curves.csv: the per-sample MMSE of both models, with the true caption and without."""
    curves = []
    k = len(KINDS)
    for i, (em, eo) in enumerate(zip(ests_m, ests_o, strict=True)):
        for cond, j in (("conditional", 0), ("unconditional", k)):
            for who, e in (("learned", em), ("exact", eo)):
                logsnr, mse = e.mmse_curve(j)
                curves += [
                    {
                        "item": i,
                        "condition": cond,
                        "model": who,
                        "logsnr": float(g),
                        "mmse": float(m),
                    }
                    for g, m in zip(logsnr.tolist(), mse.tolist(), strict=True)
                ]
    return curves

"""Adaptive sample allocation for ranking tasks (which caption option scores highest?).

Samples are spent in rounds. After each round, an item stops once the leading option's score
exceeds every other option's by more than `margin` standard errors of the paired difference
(the options share each (logsnr, eps) draw, so the difference is far less noisy than either
score), or once it reaches the fixed budget `max_samples`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.protocol import Denoiser


def per_sample_scores(e: ItemEstimate, score: str, n_options: int) -> torch.Tensor:
    """Weighted per-sample scores [n_options, S] whose sample mean is the option's ranking score."""
    return e.ranking_samples(score, n_options)


def concat(parts: list[ItemEstimate]) -> ItemEstimate:
    """Joins the samples of several estimates of the same query (pixel maps averaged by samples)."""
    if len(parts) == 1:
        return parts[0]
    cat = lambda name, dim: torch.cat([getattr(p, name) for p in parts], dim)  # noqa: E731
    n = torch.tensor([p.logsnr.numel() for p in parts], dtype=torch.float32)
    maps = {}
    for name in ("io_map", "is_map"):
        if parts[0].__dict__[name] is not None:
            maps[name] = sum(getattr(p, name) * k for p, k in zip(parts, n, strict=True)) / n.sum()
    return replace(
        parts[0],
        logsnr=cat("logsnr", 0),
        weight=cat("weight", 0),
        mse=cat("mse", 1),
        mse_gauss=cat("mse_gauss", 0),
        io=cat("io", 1),
        is_=cat("is_", 1),
        **maps,
    )


def is_decided(e: ItemEstimate, score: str, n_options: int, margin: float) -> bool:
    """True when the leader beats every other option by more than margin x stderr(difference)."""
    v = per_sample_scores(e, score, n_options)  # [O, S]
    lead = int(v.mean(-1).argmax())
    for j in range(n_options):
        if j == lead:
            continue
        mean, se = e.sampler.mean_and_stderr(v[lead] - v[j])
        if not float(mean) > margin * float(se):
            return False
    return True


def estimate_ranking(
    denoiser: Denoiser,
    queries: list[Query],
    n_options: list[int],
    cfg: EngineConfig,
    *,
    score: str = "io",
    margin: float = 3.0,
    round_samples: int = 10,
    min_samples: int = 20,
) -> tuple[list[ItemEstimate], list[int]]:
    """Adaptive version of `estimate` for ranking queries; cfg.n_samples is the cap per item.

    The first `n_options[i]` contrasts of query i are its options' scores. Returns the merged
    estimates and the number of samples each item used. No item stops before `min_samples`:
    the importance weights are heavy-tailed, so a standard error from very few samples is not
    trusted. Round r of item q draws with key
    (q.key, r), so the draws are reproducible and independent across rounds.
    """
    if round_samples < 2:
        raise ValueError(f"round_samples must be >= 2 for a standard error, got {round_samples}")
    parts: list[list[ItemEstimate]] = [[] for _ in queries]
    active = list(range(len(queries)))
    r = 0
    while active:
        take = min(round_samples, cfg.n_samples - r * round_samples)
        batch = [replace(queries[i], key=(queries[i].key, r)) for i in active]
        for i, e in zip(
            active, estimate(denoiser, batch, replace(cfg, n_samples=take)), strict=True
        ):
            parts[i].append(e)
        r += 1
        still = []
        for i in active:
            merged = concat(parts[i])
            n = merged.logsnr.numel()
            if n < cfg.n_samples and (
                n < min_samples or not is_decided(merged, score, n_options[i], margin)
            ):
                still.append(i)
        active = still
    merged = [replace(concat(p), key=q.key) for p, q in zip(parts, queries, strict=True)]
    return merged, [m.logsnr.numel() for m in merged]

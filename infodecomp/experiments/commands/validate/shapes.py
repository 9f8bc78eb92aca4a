"""ShapesWorld pointwise and average checks (2, 2p, 3) and the model-independent ones (4, 6)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.queries import option_queries
from infodecomp.experiments.commands.validate.table import (
    PAPER,
    PAPER_RANGE,
    SHAPES_FOCUS,
    SHAPES_WIDE,
    label,
    mean_se,
    row,
)
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.worlds import shapes as world

# exact references of the paper-sampler pointwise rows: eps draws on the paper's range (their
# relative Monte Carlo error is 0.01-0.1% for the wrong captions, ~1% for the true one)
PAPER_EXACT_DRAWS = 2**13


def canonical(scene: tuple[world.Obj, world.Obj]) -> str:
    a, b = sorted(world.describe(o) for o in scene)
    return f"a {a} and a {b}"


def _picks() -> list[int]:
    return [
        i
        for i, (a, b) in enumerate(world.scenes())
        if world.relation_between(a, b) and a.colour != b.colour and a.shape != b.shape
    ][::97][:3]


def _captions(a: world.Obj, b: world.Obj) -> dict[str, str]:
    rel = world.relation_between(a, b)
    return {
        "swapped relation": f"a {world.describe(b)} {rel} a {world.describe(a)}",
        "wrong binding": f"a {a.colour} {b.shape}",  # one object's colour, the other's shape
        "true relation": f"a {world.describe(a)} {rel} a {world.describe(b)}",
        "true, colour only": f"a {a.colour}",
    }


def shapes_pointwise(oracle: ShapesOracle, n_samples: int, seed: int, max_batch: int) -> list[dict]:
    """Check 2: i^s(x; y) for single images equals log p(x|y) - log p(x), right and wrong captions.

    Wrong captions carry hundreds of nats at high logsnr (wide proposal); the true captions a few
    nats at low logsnr (focused proposal, four times the samples). Rows whose relative standard
    error allows it also need a relative error below 3%; the others are z-tests, with their
    relative precision shown in rel_se. The queries are built by the commands' own builder
    (estimators.queries.option_queries): option j against "".
    """
    gen = torch.Generator().manual_seed(seed + 1)
    rows = []
    for k in _picks():
        a, b = world.scenes()[k]
        x = oracle.sample_scene(k, gen)
        caps = _captions(a, b)
        groups = (
            (SHAPES_WIDE, n_samples, ("swapped relation", "wrong binding")),
            (SHAPES_FOCUS, 4 * n_samples, ("true relation", "true, colour only")),
        )
        base = float(oracle.log_prob(x[None], ""))
        for sampler, n, names in groups:
            cfg = EngineConfig(n_samples=n, sampler=sampler, max_batch=max_batch, seed=seed)
            options = [caps[name] for name in names]
            (e,) = estimate(oracle, option_queries([x], [options], [("pointwise", k)]), cfg)
            for p, (name, cap) in enumerate(zip(names, options, strict=True)):
                exact = float(oracle.log_prob(x[None], cap)) - base
                est, se = e.info_s(p)
                rows.append(
                    row(
                        "2 shapes pointwise",
                        f"i^s '{cap}' ({name})",
                        exact,
                        est,
                        se,
                        rel="auto",
                        sampler=label(sampler),
                    )
                )
    return rows


def shapes_pointwise_paper(
    oracle: ShapesOracle,
    n_samples: int,
    seed: int,
    max_batch: int,
    n_draws: int = PAPER_EXACT_DRAWS,
) -> list[dict]:
    """Check 2p: i^o and i^s of one image's captions (swapped relation, wrong binding, true)
    under the paper's sampler against the exact values on its range [-5, 7] (the oracle's
    posteriors). The wrong captions' values are hundreds of nats with a relative standard error
    below 0.5%, so these rows take the relative criterion: a weight error of the paper's
    sampler as small as 5% fails them, on ShapesWorld as on the Gaussian pair (1p)."""
    gen = torch.Generator().manual_seed(seed + 1)
    k = _picks()[0]
    a, b = world.scenes()[k]
    x = oracle.sample_scene(k, gen)
    caps = _captions(a, b)
    names = ("swapped relation", "wrong binding", "true relation")
    options = [caps[name] for name in names]
    cfg = EngineConfig(n_samples=n_samples, sampler=PAPER, max_batch=max_batch, seed=seed)
    (e,) = estimate(oracle, option_queries([x], [options], [("pointwise-paper", k)]), cfg)
    lo, hi = (int(v) for v in PAPER_RANGE)
    rows = []
    for p, (name, cap) in enumerate(zip(names, options, strict=True)):
        ex = oracle.exact_info(x, cap, "", lo=lo, hi=hi, n_draws=n_draws, seed=seed + 17 * p)
        for info, key, fn in (("i^o", "io", "info_o"), ("i^s", "is", "info_s")):
            exact, exact_se = ex.total(key)
            est, se = getattr(e, fn)(p)
            rows.append(
                row(
                    "2p shapes pointwise, paper sampler",
                    f"{info} '{cap}' ({name}) on [{lo}, {hi}]",
                    exact,
                    est,
                    se,
                    rel="auto",
                    exact_se=exact_se,
                    sampler=label(PAPER),
                    note=f"exact from the posteriors, {n_draws} eps draws on [{lo}, {hi}]",
                )
            )
    return rows


def shapes_average(
    oracle: ShapesOracle, n_items: int, seed: int, max_batch: int, n_samples: int = 250
) -> list[dict]:
    """Check 3: the mean of i^o over (x, y) ~ p equals I(X;Y); y is the scene's 'and' caption."""
    gen = torch.Generator().manual_seed(seed + 2)
    k_all = torch.randint(len(world.scenes()), (n_items,), generator=gen)
    xs = [oracle.sample_scene(int(k), gen) for k in k_all]
    caps = [canonical(world.scenes()[int(k)]) for k in k_all]
    queries = option_queries(xs, [[c] for c in caps], [("avg", i) for i in range(n_items)])
    cfg = EngineConfig(n_samples=n_samples, sampler=SHAPES_FOCUS, max_batch=max_batch, seed=seed)
    ests = estimate(oracle, queries, cfg)
    # "Exact" I(X;Y): exact densities averaged over many independent draws of (x, y).
    n_mc = 20000
    k_mc = torch.randint(len(world.scenes()), (n_mc,), generator=gen)
    x_mc = oracle.means[k_mc].cpu() + oracle.sigma0 * torch.randn(
        n_mc, oracle.dim, generator=gen, dtype=torch.float64
    )
    caps_mc = [canonical(world.scenes()[int(k)]) for k in k_mc]
    pmi = torch.empty(n_mc, dtype=torch.float64)
    base = oracle.log_prob(x_mc, "")
    for cap in set(caps_mc):
        idx = torch.tensor([i for i, c in enumerate(caps_mc) if c == cap])
        pmi[idx] = oracle.log_prob(x_mc[idx], cap) - base[idx]
    exact, exact_se = float(pmi.mean()), float(pmi.std() / math.sqrt(n_mc))
    m, se = mean_se([e.info_o(0)[0] for e in ests])
    return [
        row(
            "3 shapes average",
            f"mean i^o = I(X;Y), {n_items} items x {n_samples} samples",
            exact,
            m,
            se,
            rel="auto",
            exact_se=exact_se,
            sampler=label(SHAPES_FOCUS),
            note=f"exact by {n_mc} draws with exact densities",
        )
    ]


PIXEL_SUM_TOL = 1e-4


def pixel_sum_checks(ests: list[ItemEstimate], what: str) -> list[dict]:
    """Check 4: pixel maps sum to the pointwise totals (every contrast of every item)."""

    def worst(maps: str, total: str) -> float:
        return max(
            abs(float(getattr(e, maps)[c].double().sum()) - getattr(e, total)(c)[0])
            / max(1.0, abs(getattr(e, total)(c)[0]))
            for e in ests
            for c in range(len(getattr(e, maps)))
        )

    reason = (
        "the map and the total are two reductions of the same per-sample errors: they differ "
        "by float32 rounding only; relative to max(1, |total|) so large totals are not held to "
        "an absolute bound"
    )
    return [
        row(
            "4 pixel sums",
            f"max |sum(i^{k} map) - i^{k}| / max(1, |i^{k}|) ({what})",
            0.0,
            worst({"o": "io_map", "s": "is_map"}[k], f"info_{k}"),
            0.0,
            tol=PIXEL_SUM_TOL,
            relative_to="max(1, |total|)",
            reason=reason,
        )
        for k in ("o", "s")
    ]


def chunk_invariance(
    denoiser, queries: list[Query], cfg: EngineConfig, what: str, rtol: float = 1e-5
) -> list[dict]:
    """Check 6: same seed, chunk 1 vs chunk 64 give equal per-sample errors (float tolerance).

    Differences are relative to the item's largest squared error, the scale every quantity
    (mse, i^o, i^s) is accumulated at; a UNet's float32 kernels differ slightly by batch size.
    """
    r1 = estimate(denoiser, queries, replace(cfg, max_batch=1))
    r64 = estimate(denoiser, queries, replace(cfg, max_batch=64))
    worst = 0.0
    for a, b in zip(r1, r64, strict=True):
        scale = max(float(b.mse.abs().max()), 1.0)
        for t1, t2 in ((a.mse, b.mse), (a.io, b.io), (a.is_, b.is_)):
            worst = max(worst, float((t1 - t2).abs().max()) / scale)
    return [
        row(
            "6 chunk invariance",
            f"max |chunk 1 - chunk 64| / max(1, max mse) ({what})",
            0.0,
            worst,
            0.0,
            tol=rtol,
            relative_to="max(1, the item's largest squared error)",
            reason="the same draws in batches of 1 and 64: only the kernels' float rounding "
            "may differ (float64 oracles: none; float32 networks: about 1e-5)",
        )
    ]

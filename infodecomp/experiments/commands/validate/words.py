"""Word checks (5, 5b, 7): CMI and MI of single words, maps and totals, through the commands' own
query builder (estimators.queries.word_queries), against the oracle's exact values."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, estimate
from infodecomp.estimators.queries import CMI, MI, word_queries
from infodecomp.experiments.commands.validate.table import (
    PAPER,
    PAPER_RANGE,
    SHAPES_FOCUS,
    label,
    row,
)
from infodecomp.experiments.exact import SUPPORT_FRACTION, support_iou
from infodecomp.models.oracles.exact import InfoIntegral, ShapesOracle
from infodecomp.worlds import shapes as world

MAP_L1_NOISE, MAP_IOU_MIN = 2.0, 0.9
WORD_KINDS = ("colour", "shape", "relation")


@dataclass(frozen=True)
class WordCase:
    """One (image, caption, word) with its exact information from the oracle's posteriors.

    A word item as the commands read one (caption, context, context_blank, word, item_id), so
    its queries come from the commands' builder. `exact` is the mean of two independent halves;
    `exact_noise` is |half A - half B| / 2 per pixel, distributed like the reference map's own
    Monte Carlo error. The context is formed here, from the definition (the caption's words
    without the word), not by the code under test.
    """

    kind: str  # colour | shape | relation
    scene: tuple[world.Obj, world.Obj]
    x: torch.Tensor
    caption: str
    context: str
    word: str
    exact: InfoIntegral
    exact_noise: torch.Tensor  # [H, W]
    item_id: str = ""

    @property
    def context_blank(self) -> str:
        return " ".join("_" if w == self.word else w for w in world.tokenize(self.caption))

    @property
    def mask(self) -> torch.Tensor:
        """The pixels of the object(s) the word describes (both objects for a relation)."""
        return world.word_mask(self.scene, self.caption, self.word)


@lru_cache(maxsize=64)
def _word_case(
    sigma0: float, seed: int, kind: str, j: int, scene: int, target: int, n_draws: int
) -> WordCase:
    """Exact references depend only on these arguments: cached, so a rerun in one process (the
    injection tests) does not recompute them."""
    oracle = ShapesOracle(sigma0=sigma0)
    gen = torch.Generator().manual_seed(seed * 7919 + 31 * j + WORD_KINDS.index(kind))
    x = oracle.sample_scene(scene, gen)
    a, b = world.scenes()[scene]
    rel = world.relation_between(a, b)
    caption = f"a {world.describe(a)} {rel} a {world.describe(b)}"
    obj = (a, b)[target]
    word = {"colour": obj.colour, "shape": obj.shape, "relation": rel}[kind]
    tokens = world.tokenize(caption)
    tokens.remove(word)  # the scenes here have distinct colours and shapes: the word is unique
    context = " ".join(tokens)
    halves = [
        oracle.exact_info(x, caption, context, n_draws=n_draws // 2, seed=2 * (seed + j) + h)
        for h in range(2)
    ]
    noise = (halves[0].map() - halves[1].map()).abs() / 2
    return WordCase(
        kind,
        (a, b),
        x,
        caption,
        context,
        word,
        InfoIntegral.average(halves),
        noise,
        item_id=f"word-{kind}-{j}",
    )


def word_cases(oracle: ShapesOracle, per_kind: int, seed: int, n_draws: int = 2**16) -> list:
    """`per_kind` related two-object scenes per word kind, with a word of either object."""
    gen = torch.Generator().manual_seed(seed + 5)
    pool = [
        i
        for i, (a, b) in enumerate(world.scenes())
        if world.relation_between(a, b) and a.colour != b.colour and a.shape != b.shape
    ]
    cases = []
    for kind in WORD_KINDS:
        for j in range(per_kind):
            scene = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            target = int(torch.randint(2, (1,), generator=gen))
            cases.append(_word_case(oracle.sigma0, seed, kind, j, scene, target, n_draws))
    return cases


def _never_covered() -> torch.Tensor:
    never = torch.ones(world.CANVAS, world.CANVAS, dtype=torch.bool)
    for s in world.scenes():
        never &= ~(world.object_mask(s[0]) | world.object_mask(s[1]))
    return never


def _halves(
    oracle: ShapesOracle, cases: list[WordCase], cfg: EngineConfig
) -> list[list[ItemEstimate]]:
    """Two independent estimates of every case's word queries (caption, context, word, ""), as
    localize builds them; half h reseeds the draws through the key only."""
    queries = word_queries(cases, [c.x for c in cases], blank=False)
    return [
        estimate(oracle, [replace(q, key=(q.key, "half", h)) for q in queries], cfg)
        for h in range(2)
    ]


def _pooled(
    halves: list[list[ItemEstimate]], idx: list[int], fn: str, contrast: int
) -> tuple[float, float]:
    """(sum over the items idx of the two halves' mean of `fn`(contrast), its standard error)."""
    parts = [
        (getattr(halves[0][i], fn)(contrast), getattr(halves[1][i], fn)(contrast)) for i in idx
    ]
    est = sum((a[0] + b[0]) / 2 for a, b in parts)
    return est, math.sqrt(sum((a[1] ** 2 + b[1] ** 2) / 4 for a, b in parts))


def _density_ratio(oracle: ShapesOracle, case: WordCase, with_: str, without: str) -> float:
    x = case.x[None]
    return float(oracle.log_prob(x, with_) - oracle.log_prob(x, without))


def _map_rows(
    kind: str, cases: list[WordCase], halves: list[list[ItemEstimate]], n_samples: int
) -> list[dict]:
    """Check 5 for one word kind: the CMI maps' relative L1 error and support IoU."""
    rows = []
    idx = [i for i, c in enumerate(cases) if c.kind == kind]
    exact_maps = [cases[i].exact.map() for i in idx]
    a_maps = [halves[0][i].io_map[CMI].double() for i in idx]
    b_maps = [halves[1][i].io_map[CMI].double() for i in idx]
    est_maps = [(a + b) / 2 for a, b in zip(a_maps, b_maps, strict=True)]
    mass = sum(float(x.abs().sum()) for x in exact_maps)
    l1 = sum(float((m - x).abs().sum()) for m, x in zip(est_maps, exact_maps, strict=True))
    # per pixel, the estimate's and the reference's noise combine in quadrature
    floor = sum(
        float(torch.hypot((a - b).abs() / 2, cases[i].exact_noise.double()).sum())
        for i, a, b in zip(idx, a_maps, b_maps, strict=True)
    )
    ious = [support_iou(m, x) for m, x in zip(est_maps, exact_maps, strict=True)]
    off_obj = [
        1 - float(x[cases[i].mask].sum() / x.sum()) for i, x in zip(idx, exact_maps, strict=True)
    ]
    words = ", ".join(sorted({cases[i].word for i in idx}))
    rows.append(
        row(
            "5 word CMI maps",
            f"{kind} words ({words}): rel. L1 error of the i^o_j map",
            0.0,
            l1 / mass,
            0.0,
            tol=MAP_L1_NOISE * floor / mass,
            relative_to="the exact map's L1 mass",
            reason=f"{MAP_L1_NOISE:g} x the noise floor {floor / mass:.3f}: the L1 error an "
            "unbiased estimate shows against a noisy reference (split halves)",
            sampler=label(SHAPES_FOCUS),
            note=f"{len(idx)} images x {n_samples} samples; exact maps put "
            f"{sum(off_obj) / len(off_obj):.0%} of the information off the word's object",
        )
    )
    rows.append(
        row(
            "5 word CMI maps",
            f"{kind} words: IoU of supports (> {SUPPORT_FRACTION:.0%} of max), mean",
            1.0,
            sum(ious) / len(ious),
            0.0,
            tol=1 - MAP_IOU_MIN,
            reason=f"IoU >= {MAP_IOU_MIN:g}: noise moves only pixels near the "
            f"{SUPPORT_FRACTION:.0%} edge of the support",
            sampler=label(SHAPES_FOCUS),
        )
    )
    return rows


def _total_rows(
    oracle: ShapesOracle, kind: str, cases: list[WordCase], halves: list[list[ItemEstimate]]
) -> list[dict]:
    """Check 5 for one word kind: the map totals against the exact CMI, i^s of the CMI and of the
    word's MI against exact log-density ratios."""
    idx = [i for i, c in enumerate(cases) if c.kind == kind]
    rows = []
    ex = [cases[i].exact.total("io") for i in idx]
    exact, exact_se = sum(v for v, _ in ex), math.sqrt(sum(s * s for _, s in ex))
    est, se = _pooled(halves, idx, "info_o", CMI)
    rows.append(
        row(
            "5 word CMI maps",
            f"{kind} words: sum of map totals = exact CMI",
            exact,
            est,
            se,
            exact_se=exact_se,
            sampler=label(SHAPES_FOCUS),
            rel="auto",
        )
    )
    for what, contrast, refs in (
        ("CMI i^s(x; word | context)", CMI, lambda c: (c.caption, c.context)),
        ("MI i^s(x; word)", MI, lambda c: (c.word, "")),
    ):
        exact = sum(_density_ratio(oracle, cases[i], *refs(cases[i])) for i in idx)
        est, se = _pooled(halves, idx, "info_s", contrast)
        rows.append(
            row(
                "5 word CMI maps",
                f"{kind} words: sum of {what} = exact log-density ratio",
                exact,
                est,
                se,
                sampler=label(SHAPES_FOCUS),
                rel="auto",
                note="contrast of the commands' word query; exact closed form, full range",
            )
        )
    return rows


def word_map_checks(
    oracle: ShapesOracle, cases: list[WordCase], n_samples: int, seed: int, max_batch: int
) -> tuple[list[dict], list[ItemEstimate]]:
    """Check 5: per word kind, the estimated pixel-wise CMI map i^o_j(x; word | context) against
    the exact map from the oracle's posteriors, pooled over the kind's images: the relative L1
    error, which must stay within 2x its Monte Carlo noise floor, the IoU of their supports
    (pixels above 5% of the map's maximum) and the map totals. Each map (the estimate and the
    exact reference) is the mean of two independent halves A, B; |A - B| / 2 has the
    distribution of its own noise, so the noise floor sum_j hypot of the two is the L1 error an
    unbiased estimate shows against the reference. Exact maps put
    part of a word's information off its object (the alternatives the context allows differ
    there), so these checks are not against object masks.

    The same estimates give i^s of the CMI and of the word's MI (the builder's second contrast,
    (word, "")), compared with log p(x | caption) - log p(x | context) and
    log p(x | word) - log p(x), exact closed forms: a wrong caption, context or word position in
    the builder fails these rows."""
    cfg = EngineConfig(
        n_samples=max(n_samples // 2, 2),
        sampler=SHAPES_FOCUS,
        max_batch=max_batch,
        seed=seed,
        pixel_maps=True,
    )
    halves = _halves(oracle, cases, cfg)
    ests = halves[0]
    never = _never_covered()
    rows = []
    for kind in WORD_KINDS:
        rows += _map_rows(kind, cases, halves, 2 * cfg.n_samples)
        rows += _total_rows(oracle, kind, cases, halves)
    worst = max(float(e.io_map[CMI][never].abs().max()) for e in ests)
    rows.append(
        row(
            "5b never-covered pixels",
            "max |i^o_j| on pixels no scene ever covers (structural)",
            0.0,
            worst,
            0.0,
            tol=1e-9,
            reason="every scene is 0 there, so every caption's denoiser agrees exactly",
            note=f"{int(never.sum())} pixels: checks the map layout, not the estimator",
        )
    )
    return rows, ests


def paper_word_totals(
    oracle: ShapesOracle, cases: list[WordCase], n_samples: int, seed: int, max_batch: int
) -> list[dict]:
    """Check 7: word CMI totals (i^o and i^s, summed over each kind's images) under the paper's
    sampler, against the exact values restricted to its range [-5, 7]; truncation_bias is the
    share of the full-range exact value outside that range, the bias the paper's estimates carry.
    The queries are the commands' CMI-only word queries (calibrate's)."""
    queries = word_queries(cases, [c.x for c in cases], blank=False, mi=False)
    queries = [replace(q, key=(q.key, "paper")) for q in queries]
    cfg = EngineConfig(n_samples=n_samples, sampler=PAPER, max_batch=max_batch, seed=seed)
    ests = estimate(oracle, queries, cfg)
    lo, hi = PAPER_RANGE
    rows = []
    for kind in WORD_KINDS:
        pairs = [(c, e) for c, e in zip(cases, ests, strict=True) if c.kind == kind]
        for name, key, fn in (("i^o", "io", "info_o"), ("i^s", "is", "info_s")):
            inside = [c.exact.total(key, lo, hi) for c, _ in pairs]
            exact = sum(v for v, _ in inside)
            exact_se = math.sqrt(sum(s * s for _, s in inside))
            full = sum(c.exact.total(key)[0] for c, _ in pairs)
            est = sum(getattr(e, fn)(CMI)[0] for _, e in pairs)
            se = math.sqrt(sum(getattr(e, fn)(CMI)[1] ** 2 for _, e in pairs))
            rows.append(
                row(
                    "7 word CMI, paper sampler",
                    f"{kind} words: sum of {name}(x; word | context) on [-5, 7]",
                    exact,
                    est,
                    se,
                    rel="auto",
                    exact_se=exact_se,
                    sampler=label(PAPER),
                    truncation=(full - exact) / full,
                    note=f"{len(pairs)} images x {n_samples} samples",
                )
            )
    return rows

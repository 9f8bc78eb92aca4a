"""Adaptive sample allocation for ranking tasks (which caption option scores highest?).

Samples are spent in rounds of fresh, independent draws. After each round, a score is decided
for an item once the leading option beats every other option by more than `margin` standard
errors of the paired difference (the options share each (logsnr, eps) draw, so the difference is
far less noisy than either score), and never before `min_samples`; an item stops once every
reported score is decided, or at the fixed budget `max_samples`. Each score keeps the answer it
was decided with (its own decision; the scores share the draws).

Why the boundary is 3 standard errors and the floor 30 samples: with at most ~10 looks, a
constant boundary of 3 keeps the chance of stopping on the wrong leader of a tie near 1%
(a Pocock-type group-sequential boundary), while 2 lets heavy-tailed importance-weighted terms
(their standard error is underestimated from few samples) stop early on the wrong option.

Stopping selects: the decision draws of an item that stopped early overstate its margin. So the
values and standard errors reported with an answer come from `report_samples` fresh draws that
took no part in the decision; with `report_samples=0` they are the decision draws' own values,
marked decision-only by the callers.

Modes: `iid`, `stratified` and `antithetic` draws are independent between rounds; each round's
standard error follows its own mode (antithetic pairs stay within a round) and the rounds are
pooled by their sample counts. `quadrature` is refused: every round would place its samples on
the same deterministic logsnr nodes, so more rounds would not reduce the node error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.protocol import Denoiser
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.scores import get_score

MIN_MARGIN = 3.0
MIN_SAMPLES = 30


@dataclass(frozen=True)
class StoppingRule:
    """When an item's answer is decided: margin (in standard errors of the paired difference),
    the floor of samples before any decision, the round size and the budget per item."""

    margin: float = MIN_MARGIN
    min_samples: int = MIN_SAMPLES
    round_samples: int = 10
    max_samples: int = 100

    def __post_init__(self) -> None:
        if self.margin < MIN_MARGIN:
            raise ValueError(
                f"adaptive margin {self.margin:g} < {MIN_MARGIN:g}: a boundary below 3 standard "
                "errors stops on the wrong option too often with heavy-tailed importance-weighted "
                "terms (and inflates the margins it stops on); use estimator.margin >= 3"
            )
        if self.min_samples < MIN_SAMPLES:
            raise ValueError(
                f"adaptive min_samples {self.min_samples} < {MIN_SAMPLES}: a standard error from "
                "fewer samples of heavy-tailed terms is not trusted for stopping"
            )
        if self.round_samples < 2:
            raise ValueError(
                f"round_samples must be >= 2 for a standard error, got {self.round_samples}"
            )
        if self.max_samples < 1:
            raise ValueError(f"the adaptive budget must be >= 1 sample, got {self.max_samples}")


def check_mode(sampler: LogsnrSampler) -> None:
    """A one-line error for the (adaptive x mode) combinations that cannot be honest."""
    if sampler.mode == "quadrature":
        raise ValueError(
            "estimator.adaptive=true cannot use estimator.mode=quadrature: every round would "
            "draw the same deterministic logsnr nodes, so extra rounds would not reduce the node "
            "error and the standard error would be wrong; use mode=stratified (randomised "
            "strata, independent between rounds) or mode=antithetic"
        )


def pooled_mean_se(
    sampler: LogsnrSampler, rounds: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error over independent rounds of weighted terms [..., n_r] each.

    Each round's standard error follows the sampler's mode (its strata or antithetic pairs lie
    within the round); the overall mean weights the rounds by their sample counts. Returns
    tensors of the leading shape [...].
    """
    n = sum(r.shape[-1] for r in rounds)
    mean = sum(r.sum(-1) for r in rounds) / n
    var = torch.zeros_like(mean)
    for r in rounds:
        _, se = sampler.mean_and_stderr(r)
        var = var + (r.shape[-1] / n) ** 2 * se.square()
    return mean, var.sqrt()


@dataclass
class Decision:
    """One score's answer for one item: the option picked, after how many samples, whether the
    boundary was crossed (False: the budget ran out), and the decision draws' mean and standard
    error per option (decision-only: biased in magnitude by the stopping)."""

    pick: int
    n_samples: int
    decided: bool
    mean: list[float]
    stderr: list[float]


@dataclass
class SequentialRanking:
    """The stopping rule applied to one item, round after round.

    `add(terms)` takes one round of per-sample weighted terms {score: [n_options, n]} whose
    means are the scores of the options (higher = better); `done` says whether the item stops.
    """

    scores: tuple[str, ...]
    n_options: int
    sampler: LogsnrSampler
    rule: StoppingRule
    rounds: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    n_samples: int = 0

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        n = next(iter(terms.values())).shape[-1]
        self.n_samples += n
        for score in self.scores:
            self.rounds.setdefault(score, []).append(terms[score].double())
        at_cap = self.n_samples >= self.rule.max_samples
        for score in self.scores:
            if score in self.decisions:
                continue
            parts = self.rounds[score]  # [n_options, n_r] each
            mean, se = pooled_mean_se(self.sampler, parts)
            lead = int(mean.argmax())  # ties: lowest index
            diff_mean, diff_se = pooled_mean_se(self.sampler, [p[lead] - p for p in parts])
            others = torch.arange(self.n_options) != lead
            ok = self.n_samples >= self.rule.min_samples and bool(
                (diff_mean[others] > self.rule.margin * diff_se[others]).all()
            )
            if ok or at_cap:
                self.decisions[score] = Decision(
                    lead, self.n_samples, ok, mean.tolist(), se.tolist()
                )

    @property
    def done(self) -> bool:
        return len(self.decisions) == len(self.scores)

    def next_round(self) -> int:
        return min(self.rule.round_samples, self.rule.max_samples - self.n_samples)


def ranking_terms(e: ItemEstimate, score: str, n_options: int) -> torch.Tensor:
    """Weighted per-sample terms [n_options, S] whose mean is sign x the score of each option."""
    return e.ranking_samples(score, n_options)


@dataclass
class RankingResult:
    """One item of an adaptive ranking run.

    decisions: per score, the answer and the decision draws' statistics (decision-only).
    report: the estimate from `report_samples` fresh draws behind the reported values, or None
        when report_samples=0 (then only the decision-only values exist).
    n_decision: samples the decision used (shared by the scores); n_report: fresh samples.
    """

    key: object
    decisions: dict[str, Decision]
    report: ItemEstimate | None
    n_decision: int
    n_report: int


def estimate_ranking(
    denoiser: Denoiser,
    queries: list[Query],
    n_options: list[int],
    cfg: EngineConfig,
    *,
    scores: Sequence[str] = ("io",),
    margin: float = MIN_MARGIN,
    round_samples: int = 10,
    min_samples: int = MIN_SAMPLES,
    report_samples: int = MIN_SAMPLES,
) -> list[RankingResult]:
    """Adaptive ranking: cfg.n_samples is the budget per item; see the module docstring.

    The first `n_options[i]` contrasts (or conditions, for condition scores) of query i are its
    options. Round r of query q draws with key (q.key, "round", r) and the report with
    (q.key, "report"), so all draws are reproducible and independent of each other.
    """
    scores = tuple(dict.fromkeys(scores))
    for s in scores:
        get_score(s)
    rule = StoppingRule(margin, min_samples, round_samples, cfg.n_samples)
    check_mode(cfg.sampler)
    if report_samples < 0:
        raise ValueError(f"report_samples must be >= 0, got {report_samples}")
    states = [SequentialRanking(scores, k, cfg.sampler, rule) for k in n_options]
    active = list(range(len(queries)))
    r = 0
    while active:
        by_size: dict[int, list[int]] = {}
        for i in active:
            by_size.setdefault(states[i].next_round(), []).append(i)
        for take, items in by_size.items():
            batch = [replace(queries[i], key=(queries[i].key, "round", r)) for i in items]
            for i, e in zip(
                items, estimate(denoiser, batch, replace(cfg, n_samples=take)), strict=True
            ):
                states[i].add({s: ranking_terms(e, s, n_options[i]) for s in scores})
        r += 1
        active = [i for i in active if not states[i].done]
    reports: list[ItemEstimate | None] = [None] * len(queries)
    if report_samples:
        batch = [replace(q, key=(q.key, "report")) for q in queries]
        reports = [
            replace(e, key=q.key)
            for e, q in zip(
                estimate(denoiser, batch, replace(cfg, n_samples=report_samples)),
                queries,
                strict=True,
            )
        ]
    return [
        RankingResult(q.key, st.decisions, rep, st.n_samples, report_samples)
        for q, st, rep in zip(queries, states, reports, strict=True)
    ]

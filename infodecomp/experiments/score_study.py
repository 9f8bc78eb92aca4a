"""Evaluations per answer, score by score, against the reference procedure of the SAME score.

Three scores rank the caption options of an item; each has its own reference procedure and its
own converged answer, and a scheme is only ever compared with those of its own score:

- `io`, i^o(x; y) = 1/2 int ||eps_hat(z|y) - eps_hat(z|"")||^2 dlogsnr over the published
  support [-7, 9] (the paper's Table 1 score). Reference: the published procedure, 100 iid
  draws of the truncated logistic loc 1, scale 2 at its effective clip 4 (the `--clip` option is
  ignored on the ARO path), every option and "" evaluated at each draw (rows: 100 x (K + 1)).
- `is`, i^s(x; y) = 1/2 int (||eps - eps_hat(z|"")||^2 - ||eps - eps_hat(z|y)||^2) dlogsnr over the
  same support. Reference: the published per-sample i^s, i.e. the same 100 x (K + 1) rows. Under
  shared draws the "" term is common to all options, so the ranking needs only the options' rows.
- `dl`, the denoising loss as DiffusionITM ranks by it: the expected per-element squared error
  ||eps - eps_hat(z_t|y)||^2 / D averaged over timesteps t uniform on the schedule's [0, 999]
  (SD 2.1 scaled-linear betas; lower is better). Reference: DiffusionITM's estimator, 10 fixed
  timesteps evenly spaced over [0, 999] (its scheduler's 10 inference steps), one noise tensor per
  timestep drawn once and shared by every item and caption, errors averaged over the elements and
  the timesteps (rows: 10 x K, no "").

The converged answer of each score comes from >= 2000 stratified draws of the published proposal
on the same items (one run serves all three scores: its draws cover both the published support
and the schedule's range; each score applies its own measure to the same per-sample errors).
`Answers` carries the score it answers, and comparing answers of two different scores raises.

Counting rule: every network row an answer needs. i^o cannot be formed without eps_hat(z|""),
so an i^o procedure that leaves out the empty prompt is refused (`Procedure`); i^s and the
denoising loss rank without it. A fitted proposal is fitted once per model on separate items;
its pilot rows are reported apart (`calibration_evals`), not per answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd
import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.samplers import LogsnrSampler, fit_logistic
from infodecomp.experiments.study_samplers import (
    FixedTimesteps,
    MixtureSampler,
    TimestepSampler,
    timestep_density,
)

SCORES = ("io", "is", "dl")
PUBLISHED_CLIP = 4.0  # what the published ARO path runs (protocols section 7)
PUBLISHED = LogsnrSampler(loc=1.0, scale=2.0, clip=PUBLISHED_CLIP)  # iid
PUBLISHED_SUPPORT = PUBLISHED.support  # (-7, 9): the integral i^o and i^s are defined over
PUBLISHED_SAMPLES = 100
DITM_STEPS = 10  # DiffusionITM's default sampling_steps
MIN_CONVERGED = 2000


@dataclass(frozen=True)
class Procedure:
    """How one answer of one score is computed, and what it costs in network rows.

    Args:
        name: label in the tables.
        score: "io", "is" or "dl".
        sampler: logsnr proposal and draw mode.
        n_samples: draws per item.
        with_empty: eps_hat(z|"") is evaluated at every draw (needed by i^o).
        shared_noise: one noise bank shared by all items and captions (DiffusionITM).
        reference: this is the score's reference procedure.
    """

    name: str
    score: str
    sampler: LogsnrSampler
    n_samples: int
    with_empty: bool = True
    shared_noise: bool = False
    reference: bool = False

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score '{self.score}' is not one of {SCORES}")
        if self.score == "io" and not self.with_empty:
            raise ValueError(
                f"procedure '{self.name}': i^o compares eps_hat(z|y) with eps_hat(z|\"\"); a "
                "scheme without the empty prompt does not compute i^o (count its rows too)"
            )

    def rows_per_draw(self, n_options: int) -> int:
        return n_options + (1 if self.with_empty else 0)

    def evals_per_answer(self, n_options: int) -> int:
        return self.n_samples * self.rows_per_draw(n_options)


def published_reference(score: str) -> Procedure:
    """The reference procedure of `score` (module docstring)."""
    if score in ("io", "is"):
        name = "published i^o" if score == "io" else "published per-sample i^s"
        return Procedure(name, score, PUBLISHED, PUBLISHED_SAMPLES, True, reference=True)
    if score == "dl":
        return Procedure(
            "DiffusionITM", "dl", FixedTimesteps(), DITM_STEPS, False, True, reference=True
        )
    raise ValueError(f"score '{score}' is not one of {SCORES}")


def reference_problems(proc: Procedure) -> list[str]:
    """What makes `proc` differ from its score's reference procedure (empty: faithful)."""
    ref = published_reference(proc.score)
    out = []
    s, r = proc.sampler, ref.sampler
    if type(s) is not type(r):
        out.append(f"proposal {type(s).__name__}, the reference draws {type(r).__name__}")
    else:
        for key in ("kind", "loc", "scale", "clip", "mode"):
            if getattr(s, key) != getattr(r, key):
                out.append(f"{key} {getattr(s, key)!r}, the reference uses {getattr(r, key)!r}")
    if proc.n_samples != ref.n_samples:
        out.append(f"{proc.n_samples} draws, the reference makes {ref.n_samples}")
    if proc.with_empty != ref.with_empty:
        out.append(
            "the empty prompt "
            + ("left out of" if ref.with_empty else "added to")
            + " every draw's batch"
        )
    if proc.shared_noise != ref.shared_noise:
        out.append(
            "noise " + ("per item" if ref.shared_noise else "shared") + " unlike the reference"
        )
    return out


@dataclass(frozen=True)
class Answers:
    """Picked option per item [N] for one score (`score`), with the per-option values [N, O]."""

    score: str
    picks: torch.Tensor
    values: torch.Tensor | None = None

    def correct(self, truth: Answers) -> torch.Tensor:
        """1.0 where this answer equals `truth`'s, per item; refuses another score's answer."""
        if truth.score != self.score:
            raise ValueError(
                f"agreement of a '{self.score}' answer with the converged '{truth.score}' answer: "
                "compare a scheme only with the converged answer of its own score"
            )
        return (self.picks == truth.picks).double()


def integrand(e: ItemEstimate, score: str, n_options: int) -> torch.Tensor:
    """Per-sample terms [n_options, S] whose mean ranks the options by `score` (higher wins).

    io / is: the weighted terms restricted to the published support (the same integral whatever
    the proposal); is drops the "" term, common to all options under shared draws. dl: the
    per-element error under the uniform-timestep measure, negated (lower loss wins).
    """
    w = e.weight
    if score in ("io", "is"):
        lo, hi = PUBLISHED_SUPPORT
        w = w * ((e.logsnr >= lo) & (e.logsnr <= hi))
        if score == "io":
            return 0.5 * w * e.io[:n_options]
        return -0.5 * w * e.mse[:n_options]
    if score == "dl":
        return -(w * timestep_density(e.logsnr)) * e.mse[:n_options] / e.dim
    raise ValueError(f"score '{score}' is not one of {SCORES}")


def answers(ests: Sequence[ItemEstimate], score: str, n_options: Sequence[int]) -> Answers:
    vals = [integrand(e, score, k).mean(-1) for e, k in zip(ests, n_options, strict=True)]
    o = max(n_options)
    table = torch.full((len(vals), o), float("-inf"), dtype=torch.float64)
    for i, v in enumerate(vals):
        table[i, : len(v)] = v
    return Answers(score, table.argmax(1), table)


def run_procedure(
    model, xs: torch.Tensor, options: Sequence[Sequence[str]], proc: Procedure, seed: int, tag
) -> list[ItemEstimate]:
    """The procedure's estimates of every item (its own draws; `tag` keeps runs apart)."""
    queries = []
    for i, (x, o) in enumerate(zip(xs, options, strict=True)):
        conds = (*o, "") if proc.with_empty else tuple(o)
        contrasts = tuple((j, len(o)) for j in range(len(o))) if proc.with_empty else ()
        key = (tag, "bank") if proc.shared_noise else (tag, i)
        queries.append(Query(x, conds, contrasts, key=key))
    cfg = EngineConfig(n_samples=proc.n_samples, sampler=proc.sampler, max_batch=150, seed=seed)
    return estimate(model, queries, cfg)


def fit_proposals(
    model,
    xs: torch.Tensor,
    options: Sequence[Sequence[str]],
    n_samples: int = 200,
    seed: int = 0,
) -> tuple[dict[str, LogsnrSampler], int]:
    """Per score, a logistic fitted to |integrand of the ranking difference| on pilot items
    (not the study's; one pilot run serves all scores), widened so its support covers the
    score's whole range. Returns them and the pilot's network rows (one-off per model)."""
    pilot = Procedure("pilot", "io", replace(PUBLISHED, mode="stratified"), n_samples)
    ests = run_procedure(model, xs, options, pilot, seed, "pilot")
    fitted = {}
    for score in SCORES:
        logsnr, weight, mag = [], [], []
        for e, o in zip(ests, options, strict=True):
            terms = integrand(e, score, len(o)) / e.weight  # unweighted integrand f [K, S]
            logsnr.append(e.logsnr)
            weight.append(e.weight)
            mag.append((terms - terms.mean(0)).abs().sum(0))  # [S] how much the options differ
        f = fit_logistic(torch.cat(logsnr), torch.cat(weight), torch.cat(mag))
        lo, hi = PUBLISHED_SUPPORT if score in ("io", "is") else TimestepSampler().support
        clip = max((f.loc - lo) / f.scale, (hi - f.loc) / f.scale, 4.0) + 1e-6
        fitted[score] = replace(f, clip=float(clip))
    rows = sum(pilot.evals_per_answer(len(o)) for o in options)
    return fitted, rows


@dataclass
class StudyResult:
    """One model's study: a table (one row per score x procedure) and its attributes."""

    table: pd.DataFrame
    attrs: dict = field(default_factory=dict)


def schemes_for(fitted: dict[str, LogsnrSampler]) -> list[Procedure]:
    """The engine's candidate schemes per score, after the three references.

    i^s schemes reuse the i^o schemes' draws and count the options' rows only (its ranking needs
    no ""); the denoising-loss schemes draw logsnr from a proposal fitted to its own ranking
    difference (weights carry the uniform-timestep measure).
    """
    anti = replace(PUBLISHED, mode="antithetic")
    fio = {m: replace(fitted["io"], mode=m) for m in ("stratified", "quadrature")}
    fdl = {m: replace(fitted["dl"], mode=m) for m in ("stratified", "quadrature")}
    mix = MixtureSampler(main=fio["stratified"], guard=PUBLISHED, frac=0.75)
    draws = [
        ("published proposal, antithetic", anti, 40),
        ("fitted to i^o, stratified", fio["stratified"], 33),
        ("fitted to i^o, stratified", fio["stratified"], 40),
        ("fitted to i^o, quadrature", fio["quadrature"], 33),
        ("fitted to i^o 3:1 published, stratified", mix, 36),
        ("fitted to i^o 3:1 published, stratified", mix, 40),
    ]
    out = [published_reference(s) for s in SCORES]
    out += [Procedure(name, "io", smp, n) for name, smp, n in draws]
    out += [Procedure(name + ', no ""', "is", smp, n, False) for name, smp, n in draws]
    out += [
        Procedure(
            "uniform timesteps, stratified", "dl", TimestepSampler(mode="stratified"), 5, False
        ),
        Procedure("fitted to the loss, stratified", "dl", fdl["stratified"], 5, False),
        Procedure("fitted to the loss, quadrature", "dl", fdl["quadrature"], 5, False),
        Procedure("fitted to the loss, quadrature", "dl", fdl["quadrature"], 4, False),
    ]
    return out


def study(
    model,
    xs: torch.Tensor,
    options: Sequence[Sequence[str]],
    pilot_xs: torch.Tensor,
    pilot_options: Sequence[Sequence[str]],
    repeats: int = 4,
    converged_samples: int = MIN_CONVERGED,
    seed: int = 0,
    schemes: Callable[[dict], list[Procedure]] = schemes_for,
    progress: Callable[[str], None] | None = None,
) -> StudyResult:
    """Agreement of every procedure with its own score's converged answer, over `repeats`.

    Rows: score, procedure, reference (bool), samples, evals_per_answer (mean over items, every
    row counted), agreement (items x repeats), diff_se (paired standard error of the agreement
    difference to the score's reference), matched (agreement >= reference - diff_se), var_ratio
    (variance over repeats of the estimated lead of the converged top option over the second,
    summed over items, relative to the reference's; the reference's own is 1) and
    evals_at_reference_variance (evals_per_answer x var_ratio: the rows this scheme would need
    for the reference's variance, if variance falls as 1 / rows). For DiffusionITM the variance
    is over redrawn noise banks at its fixed timesteps: its quadrature bias is not in it.
    """
    k = [len(o) for o in options]
    conv = Procedure("converged", "io", replace(PUBLISHED, mode="stratified"), converged_samples)
    conv_ests = run_procedure(model, xs, options, conv, seed + 999_983, "converged")
    truth = {s: answers(conv_ests, s, k) for s in SCORES}
    if progress:
        progress("converged")
    fitted, cal = fit_proposals(model, pilot_xs, pilot_options, seed=seed + 7)
    if progress:
        progress("fitted")
    procs = schemes(fitted)
    correct, diffs = _repeat(model, xs, options, procs, truth, repeats, seed, progress)
    rows = [_row(p, correct, diffs, k, repeats) for p in procs]
    table = pd.DataFrame(rows)
    attrs = {
        "items": len(k),
        "repeats": repeats,
        "converged_samples": converged_samples,
        "calibration_evals": cal,
        "fitted": {s: {"loc": f.loc, "scale": f.scale, "clip": f.clip} for s, f in fitted.items()},
    }
    return StudyResult(table, attrs)


def _repeat(
    model,
    xs: torch.Tensor,
    options: Sequence[Sequence[str]],
    procs: list[Procedure],
    truth: dict[str, Answers],
    repeats: int,
    seed: int,
    progress: Callable[[str], None] | None,
) -> tuple[dict[tuple, list[torch.Tensor]], dict[tuple, list[torch.Tensor]]]:
    """Every procedure in `repeats` repeats: per (score, name, samples), the agreement with the
    converged answer per item and the estimated lead of its top option over the second."""
    k = [len(o) for o in options]
    correct: dict[tuple[str, str, int], list[torch.Tensor]] = {}
    diffs: dict[tuple[str, str, int], list[torch.Tensor]] = {}
    # per score, the two options the converged answer ranks first and second (per item)
    top2 = {s: truth[s].values.topk(2, dim=1).indices for s in SCORES}  # [N, 2]
    cache: dict[tuple, list[ItemEstimate]] = {}
    for rep in range(repeats):
        for p in procs:
            # procedures with the same draws share one run; it evaluates "" too (a procedure
            # without "" reads only its options' rows, and the draws do not depend on the
            # conditions), and it is counted per procedure
            run_key = (p.sampler, p.n_samples, p.shared_noise)
            if run_key not in cache:  # each run its own draws (tag), fresh in every repeat
                tag = ("study", repr(run_key))
                run = replace(p, score="io", with_empty=True)
                cache[run_key] = run_procedure(model, xs, options, run, seed + 1000 * rep, tag)
            got = answers(cache[run_key], p.score, k)
            key = (p.score, p.name, p.n_samples)
            correct.setdefault(key, []).append(got.correct(truth[p.score]))
            pair = got.values.gather(1, top2[p.score])  # [N, 2]
            diffs.setdefault(key, []).append(pair[:, 0] - pair[:, 1])
        cache.clear()
        if progress:
            progress(f"repeat {rep + 1}/{repeats}")
    return correct, diffs


def _row(p: Procedure, correct: dict, diffs: dict, k: list[int], repeats: int) -> dict:
    """The study table's row of procedure `p` (see `study`)."""
    key = (p.score, p.name, p.n_samples)
    ref = published_reference(p.score)
    ref_key = (ref.score, ref.name, ref.n_samples)
    c, base = torch.cat(correct[key]), torch.cat(correct[ref_key])
    diff = c - base
    se = float(diff.std() / math.sqrt(diff.numel())) if diff.numel() > 1 else 0.0
    evals = sum(p.evals_per_answer(n) for n in k) / len(k)
    # variance over repeats of the estimated lead of the converged answer, summed over items,
    # relative to the reference's: evaluations at the reference's variance = evals x ratio
    if repeats > 1:
        var = torch.stack(diffs[key]).var(0).sum()
        var_ref = torch.stack(diffs[ref_key]).var(0).sum()
        var_ratio = float(var / var_ref) if float(var_ref) > 0 else float("nan")
    else:
        var_ratio = float("nan")
    return {
        "score": p.score,
        "procedure": p.name,
        "reference": p.reference,
        "samples": p.n_samples,
        "with_empty": p.with_empty,
        "evals_per_answer": evals,
        "agreement": float(c.mean()),
        "diff_se": se,
        "matched": bool(float(c.mean()) >= float(base.mean()) - se),
        "var_ratio": var_ratio,
        "evals_at_reference_variance": evals * var_ratio,
    }


def best_scheme(table: pd.DataFrame, score: str) -> dict:
    """The score's reference row and the cheapest engine scheme at equal agreement."""
    rows = table[table["score"] == score]
    ref = rows[rows["reference"]].iloc[0]
    ok = rows[(~rows["reference"]) & rows["matched"]]
    out = {
        "reference": ref["procedure"],
        "reference_evals_per_answer": float(ref["evals_per_answer"]),
        "reference_agreement": float(ref["agreement"]),
    }
    if ok.empty:
        return {**out, "scheme": None, "evals_per_answer": float("nan"), "eval_ratio": float("nan")}
    best = ok.loc[ok["evals_per_answer"].idxmin()]
    return {
        **out,
        "scheme": f"{best['procedure']}, {int(best['samples'])} draws",
        "evals_per_answer": float(best["evals_per_answer"]),
        "agreement": float(best["agreement"]),
        "diff_se": float(best["diff_se"]),
        "eval_ratio": float(best["evals_per_answer"] / ref["evals_per_answer"]),
        "var_ratio": float(best["var_ratio"]),
    }


STUDY_MODELS = ("tiny-sd", "shapes-learned", "oracle", "sd21-random")


def study_items(name: str, n_items: int, n_pilot: int, seed: int = 0, device: str = "cpu"):
    """(model, xs [N, ...], options, pilot xs, pilot options) for a study model (float32).

    tiny-sd, sd21-random: random images with two VG-like captions each (their answers have no
    ground truth, only their own converged ones). shapes-learned: relation and attribute items of its own world
    (two options each). oracle: the exact ShapesWorld denoiser on the noisy world (noise 3),
    relation, attribute and order items. Pilot items come from another seed.
    """
    from infodecomp.data.shapes import attribute_set, relation_set
    from infodecomp.data.spec import DataSpec

    if name == "oracle":
        from infodecomp.experiments.efficiency import ranking_items
        from infodecomp.models.oracles.exact import ShapesOracle

        model = ShapesOracle(sigma0=3.0)

        def items(n, s):
            its = ranking_items(max(1, -(-n // 3)), 3.0, s)[:n]
            return model.encode_images([it.image for it in its]), [tuple(it.options) for it in its]
    else:
        from infodecomp.experiments.config import ModelConfig
        from infodecomp.models.registry import load_model

        model = load_model(ModelConfig(name=name), torch.device(device), torch.float32)
        if getattr(model, "trained_world", None) == "shapes":

            def items(n, s):
                its = []
                for build, set_name in (
                    (relation_set, "shapes-relation"),
                    (attribute_set, "shapes-attribute"),
                ):
                    its += build(DataSpec(name=set_name, size=-(-n // 2), seed=s)).items
                its = its[:n]
                return (
                    model.encode_images([it.image for it in its]),
                    [tuple(it.options) for it in its],
                )
        else:
            from infodecomp.experiments.efficiency import item_options, random_images

            def items(n, s):
                opts = [tuple(f"{o} {s}" for o in pair) for pair in item_options(n)]
                return model.encode_images(random_images(n, model.image_size, s)), opts

    xs, options = items(n_items, seed)
    pxs, popts = items(n_pilot, seed + 7919)
    return model, xs, options, pxs, popts

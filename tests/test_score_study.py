"""Evaluations per answer score by score (experiments.score_study): counting rules, the reference
procedure of each score, and agreement only with the converged answer of the same score."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from infodecomp.estimators import engine
from infodecomp.estimators.engine import EngineConfig, Query
from infodecomp.experiments import reference
from infodecomp.experiments import score_study as ss
from infodecomp.experiments.config import BenchConfig, ModelConfig
from infodecomp.experiments.efficiency import item_options, random_images
from infodecomp.models.registry import load_model


# --- counting rules ------------------------------------------------------------------------------
def test_io_scheme_without_the_empty_prompt_is_refused() -> None:
    with pytest.raises(ValueError, match="empty prompt"):
        ss.Procedure("cheap", "io", ss.PUBLISHED, 30, with_empty=False)
    # the same scheme is a valid i^s / denoising-loss scheme: their rankings need no ""
    assert ss.Procedure("cheap", "is", ss.PUBLISHED, 30, with_empty=False).evals_per_answer(2) == 60
    assert (
        ss.Procedure("cheap", "dl", ss.PUBLISHED, 30, with_empty=False).evals_per_answer(5) == 150
    )


def test_every_row_is_counted() -> None:
    """Published: 100 x (options + 1): 300 per VG item, 600 per COCO/Flickr-Order item, for i^o
    and for i^s alike; DiffusionITM: 10 x options (a Winoground example, 2 captions x 2 images:
    40 network calls)."""
    io, is_, dl = (ss.published_reference(s) for s in ss.SCORES)
    assert io.evals_per_answer(2) == is_.evals_per_answer(2) == 300
    assert io.evals_per_answer(5) == is_.evals_per_answer(5) == 600
    assert dl.evals_per_answer(2) == 20 and 2 * dl.evals_per_answer(2) == 40
    scheme = ss.Procedure("fitted", "io", ss.PUBLISHED, 33)
    assert scheme.evals_per_answer(2) == 99  # the "" row of each draw is counted


# --- the reference of each score -----------------------------------------------------------------
def test_references_are_faithful() -> None:
    for score in ss.SCORES:
        assert ss.reference_problems(ss.published_reference(score)) == [], score
    io = ss.published_reference("io")
    assert io.sampler.support == (-7.0, 9.0) and io.sampler.mode == "iid"
    assert ss.FixedTimesteps().timesteps(10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]


WRONG = {
    "clip 3 (the stated, not the effective clip)": (
        "io",
        {"sampler": replace(ss.PUBLISHED, clip=3.0)},
    ),
    "stratified draws": ("io", {"sampler": replace(ss.PUBLISHED, mode="stratified")}),
    "50 draws": ("is", {"n_samples": 50}),
    "i^s without the empty prompt in the batch": ("is", {"with_empty": False}),
    "a noise bank per item": ("dl", {"shared_noise": False}),
    "random timesteps": ("dl", {"sampler": ss.TimestepSampler(mode="stratified")}),
    "9 timesteps": ("dl", {"n_samples": 9}),
    "the empty prompt added": ("dl", {"with_empty": True}),
}


@pytest.mark.parametrize("variant", sorted(WRONG))
def test_a_wrong_reference_is_detected(variant: str) -> None:
    score, change = WRONG[variant]
    assert ss.reference_problems(replace(ss.published_reference(score), **change)), variant


@pytest.fixture(scope="module")
def tiny():
    return load_model(ModelConfig(name="tiny-sd"), torch.device("cpu"), torch.float32)


def _count_unet(model, monkeypatch) -> list[int]:
    calls: list[int] = []

    def forward(sample, timestep, encoder_hidden_states=None, return_dict=True, **kw):
        calls.append(int(sample.shape[0]))
        out = torch.zeros_like(sample)
        return SimpleNamespace(sample=out) if return_dict else (out,)

    monkeypatch.setattr(model.unet, "forward", forward)
    return calls


RUNS = {
    "published": ({}, None),
    "clip 3": ({}, replace(reference.PAPER_SAMPLER, clip=3.0)),
    "4 draws per call": ({"draws_per_call": 4}, None),
    "one image per batch": ({"batch_items": 1}, None),
}


@pytest.mark.parametrize("variant", sorted(RUNS))
def test_reference_run_with_wrong_clip_or_batching_is_detected(tiny, variant, monkeypatch) -> None:
    """The bench's reference run is checked against the published procedure: clip 4 (what the
    published ARO path runs), options and "" of 10 VG images x 5 draws per call (150 rows),
    prompts encoded once per batch."""
    kw, sampler = RUNS[variant]
    _count_unet(tiny, monkeypatch)
    n = 20
    images, options = random_images(n, tiny.image_size, 0), item_options(n)
    smp = sampler or reference.PAPER_SAMPLER
    out = reference.reference_scores(tiny, images, options, 10, sampler=smp, **kw)
    problems = reference.published_problems(out, n, 2, 10, smp)
    assert (problems == []) == (variant == "published"), problems


# --- DiffusionITM's estimator ---------------------------------------------------------------------
def test_diffusionitm_losses_equal_the_study_dl_reference(tiny) -> None:
    """DiffusionITM's batching (4 images per call, one caption position, one call per timestep)
    gives the study's `dl` reference answer values on the same noise bank; a bank of 9 steps or
    a shifted one does not."""
    n = 5
    xs = tiny.encode_images(random_images(n, tiny.image_size, 3))
    options = item_options(n)
    proc = ss.published_reference("dl")
    ests = ss.run_procedure(tiny, xs, options, proc, seed=2, tag="t")
    q = Query(xs[0], tuple(options[0]), key=("t", "bank"))
    bank = engine.draw(q, EngineConfig(n_samples=10, sampler=proc.sampler, seed=2))[2]
    values = ss.answers(ests, "dl", [2] * n).values  # -(mean over steps of the per-element error)
    ditm = reference.diffusionitm_losses(tiny, xs, options, bank=bank)
    assert ditm["rows"] == [4] * 10 + [1] * 10 + [4] * 10 + [1] * 10  # per caption position
    assert ditm["evals"] == 10 * 2 * n
    assert torch.allclose(-values, ditm["loss"], rtol=1e-4), (values, ditm["loss"])
    wrong = reference.diffusionitm_losses(tiny, xs, options, bank=bank.roll(1, 0))
    assert not torch.allclose(-values, wrong["loss"], rtol=1e-4)


def test_timestep_measure() -> None:
    """Uniform timesteps on [0, 999] as a density over logsnr: it integrates to 1, and the
    timestep sampler's weight is its inverse (so weight x density = 1 at every draw)."""
    lo, hi = ss.TimestepSampler().support
    grid = torch.linspace(lo, hi, 200_001, dtype=torch.float64)
    mass = torch.trapezoid(ss.timestep_density(grid), grid)
    assert float(mass) == pytest.approx(1.0, abs=1e-3)
    logsnr, weight = ss.TimestepSampler(mode="stratified").sample(64)
    assert torch.allclose(weight * ss.timestep_density(logsnr), torch.ones(64, dtype=torch.float64))
    assert float(ss.timestep_density(torch.tensor([lo - 0.1, hi + 0.1])).abs().sum()) == 0


# --- agreement with the converged answer of the same score ---------------------------------------
def test_agreement_with_another_scores_answer_is_refused() -> None:
    a = ss.Answers("io", torch.tensor([0, 1, 1]))
    assert a.correct(ss.Answers("io", torch.tensor([0, 1, 0]))).tolist() == [1.0, 1.0, 0.0]
    for other in ("is", "dl"):
        with pytest.raises(ValueError, match="its own score"):
            a.correct(ss.Answers(other, torch.tensor([0, 1, 1])))


@pytest.fixture(scope="module")
def oracle_study():
    calls: list[tuple[str, str]] = []
    original = ss.Answers.correct

    def spy(self, truth):
        calls.append((self.score, truth.score))
        return original(self, truth)

    ss.Answers.correct = spy
    try:
        model, xs, options, pxs, popts = ss.study_items("oracle", 9, 3, seed=0)
        res = ss.study(model, xs, options, pxs, popts, repeats=1, converged_samples=2000)
    finally:
        ss.Answers.correct = original
    return res, calls, (model, xs, options)


def test_study_compares_each_scheme_with_its_own_score(oracle_study) -> None:
    res, calls, _ = oracle_study
    assert calls and all(mine == truth for mine, truth in calls), calls
    t = res.table
    assert set(t["score"]) == set(ss.SCORES)
    refs = t[t["reference"]]
    assert list(refs["score"]) == list(ss.SCORES)
    assert list(refs["procedure"]) == ["published i^o", "published per-sample i^s", "DiffusionITM"]
    assert (t[t["score"] == "io"]["with_empty"]).all()  # i^o is never counted without ""
    assert t["agreement"].between(0, 1).all() and (t["diff_se"] >= 0).all()
    for score in ss.SCORES:
        best = ss.best_scheme(t, score)
        if best["scheme"] is not None:
            rows = t[(t["score"] == score) & ~t["reference"] & t["matched"]]
            assert best["evals_per_answer"] == rows["evals_per_answer"].min()


def test_the_scores_have_different_converged_answers(oracle_study) -> None:
    """Why agreement must be measured against the same score: on the noisy oracle the converged
    i^o and i^s answers differ on some items, so a scheme held to the other score's answer
    would be credited or charged for the difference between the scores."""
    _, _, (model, xs, options) = oracle_study
    conv = ss.Procedure("converged", "io", replace(ss.PUBLISHED, mode="stratified"), 2000)
    ests = ss.run_procedure(model, xs, options, conv, 5, "c")
    k = [len(o) for o in options]
    io, is_ = ss.answers(ests, "io", k), ss.answers(ests, "is", k)
    assert bool((io.picks != is_.picks).any())


def test_bench_refuses_short_converged_answers() -> None:
    with pytest.raises(ValueError, match="2000"):
        BenchConfig(converged_samples=500)
    with pytest.raises(ValueError, match="study_models"):
        BenchConfig(study_models=["sd21-random-typo"])


def test_fitted_proposal_covers_the_scores_range(oracle_study) -> None:
    res, _, _ = oracle_study
    for score, f in res.attrs["fitted"].items():
        lo, hi = ss.PUBLISHED_SUPPORT if score != "dl" else ss.TimestepSampler().support
        assert f["loc"] - f["clip"] * f["scale"] <= lo + 1e-6
        assert f["loc"] + f["clip"] * f["scale"] >= hi - 1e-6


def test_gpu_bench_script_composes_a_valid_bench_config() -> None:
    """scripts/gpu_bench.sh (not run here: no GPU) names options the bench accepts: its
    overrides compose into a valid BenchConfig on sd21-random (float32 and bfloat16)."""
    import re
    import shlex
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from infodecomp.experiments.config import register
    from infodecomp.paths import config_dir

    text = Path(__file__).parents[1].joinpath("scripts", "gpu_bench.sh").read_text()
    command = re.search(r'"\$BIN/infodecomp" bench (.*?) 2>&1', text, re.S).group(1)
    args = [a for a in shlex.split(command.replace("\\\n", " ")) if "$OUT" not in a]
    register()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="bench", overrides=args))
    assert isinstance(cfg, BenchConfig)
    assert cfg.model.name == "sd21-random" and cfg.run.device == "cuda"
    assert cfg.engine_dtypes == ["float32", "bfloat16"]
    assert cfg.study_models == ["sd21-random"] and cfg.converged_samples >= 2000


def test_defensive_mixture_is_unbiased() -> None:
    """The fitted-plus-published mixture integrates a known function over the published range
    without bias (within 4 standard errors); weights computed with the wrong share (0.7 while
    0.75 of the draws come from the fitted part) are caught."""
    fitted = replace(ss.PUBLISHED, loc=-1.5, scale=0.9, clip=12.0, mode="stratified")
    mix = ss.MixtureSampler(main=fitted, guard=ss.PUBLISHED, frac=0.75)
    grid = torch.linspace(-7, 9, 100_001, dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(-((x - 2) ** 2) / 8) * ((x >= -7) & (x <= 9))

    exact = float(torch.trapezoid(f(grid), grid))

    def estimates(sampler) -> torch.Tensor:
        gen = torch.Generator().manual_seed(0)
        out = []
        for _ in range(3000):
            logsnr, _ = mix.sample(40, gen)
            out.append((sampler.weight(logsnr) * f(logsnr)).mean())
        return torch.stack(out)

    good = estimates(mix)
    assert abs(float(good.mean()) - exact) < 4 * float(good.std()) / 3000**0.5
    bad = estimates(replace(mix, frac=0.7))
    assert abs(float(bad.mean()) - exact) > 4 * float(bad.std()) / 3000**0.5
    with pytest.raises(ValueError, match="whole count"):
        mix.sample(33)

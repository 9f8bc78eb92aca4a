"""`infodecomp bench`: sample efficiency on the exact oracle, the speed comparison on tiny-sd, and
the published-procedure reference against the engine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from infodecomp.estimators import engine
from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments import reference
from infodecomp.experiments.commands import bench
from infodecomp.experiments.config import BenchConfig, ModelConfig
from infodecomp.experiments.efficiency import sample_efficiency
from infodecomp.experiments.precision import compare_scores
from infodecomp.experiments.reference import reference_scores
from infodecomp.models.registry import load_model

ENV = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def efficiency_table() -> pd.DataFrame:
    return sample_efficiency(n_per_set=6, seeds=1, budgets=(20,), margins=(3.0,))


def test_sample_efficiency_table(efficiency_table: pd.DataFrame) -> None:
    t = efficiency_table
    assert list(t.columns) == [
        "scheme",
        "proposal",
        "samples_per_item",
        "evals_per_item",
        "report_evals_per_item",
        "agreement",
        "diff_se",
    ]
    # baseline, fixed-20 x 3 (paper stratified / antithetic, fitted), adaptive margin 3 x 3
    assert len(t) == 7
    base = t.iloc[0]
    assert base["scheme"] == "fixed-100 (paper)" and base["proposal"] == "paper, iid"
    assert base["samples_per_item"] == 100 and base["diff_se"] == 0
    n_items = t.attrs["n_items"]
    assert n_items == 3 * 6  # relation, attribute and order sets
    mean_options = (t.attrs["published_evals_per_item"] / 100) - 1  # published: options + 1
    assert mean_options >= 2
    assert base["evals_per_item"] == pytest.approx(100 * mean_options)
    assert t["agreement"].between(0, 1).all() and (t["diff_se"] >= 0).all()
    fixed = t[t["scheme"] == "fixed-20"]
    assert (fixed["samples_per_item"] == 20).all()
    paper_fixed = fixed[fixed["proposal"] == "paper, stratified"].iloc[0]
    assert paper_fixed["evals_per_item"] == pytest.approx(20 * mean_options)
    fitted_fixed = fixed[fixed["proposal"] == "fitted, stratified"].iloc[0]
    # the fitted proposal carries its calibration cost spread over the study's items
    assert fitted_fixed["evals_per_item"] == pytest.approx(
        20 * mean_options + t.attrs["calibration_evals"] / n_items
    )
    anti = fixed[fixed["proposal"] == "paper, antithetic"].iloc[0]
    assert anti["evals_per_item"] == pytest.approx(20 * mean_options)  # no calibration cost
    adaptive = t[t["scheme"].str.startswith("adaptive")]
    assert len(adaptive) == 3
    assert (adaptive["samples_per_item"] <= 100).all() and (
        adaptive["samples_per_item"] >= 30
    ).all()
    # the fresh draws behind reported values are listed apart from the answer's evaluations
    assert adaptive["report_evals_per_item"].tolist() == pytest.approx([30 * mean_options] * 3)
    assert (t[~t["scheme"].str.startswith("adaptive")]["report_evals_per_item"] == 0).all()


def test_speed_on_tiny_sd() -> None:
    cfg = BenchConfig()
    cfg.model.name = "tiny-sd"
    cfg.run.device = "cpu"
    cfg.n_items, cfg.estimator.n_samples, cfg.repeats, cfg.precision_items = 2, 5, 1, 2
    out = bench.speed(cfg)
    assert out["model"] == "tiny-sd" and out["device"] == "cpu"
    assert set(out["engine"]) == {"float32", "bfloat16"}
    assert out["engine_dtype"] in out["engine"]
    for proc in [out["reference"], out["diffusionitm"], *out["engine"].values()]:
        for key in ("s_per_item", "s_per_eval", "cpu_s_per_item", "evals_per_s", "peak_mb"):
            assert proc[key] > 0 and math.isfinite(proc[key]), key
    # time per evaluation against each score's own reference batching
    for score, ref in (("io", "reference"), ("is", "reference"), ("dl", "diffusionitm")):
        for k, ratio in out["time_per_eval_ratio"][score].items():
            assert ratio == pytest.approx(out["engine"][k]["s_per_eval"] / out[ref]["s_per_eval"])
    # DiffusionITM's batching: 4 images per call, one call per timestep and caption position
    assert out["diffusionitm"]["rows_per_call"] == [2] and out["diffusionitm"]["calls"] == 20
    # the reference: one published call of 2 items x 5 draws x (2 options + "") rows
    ref = out["reference"]
    assert ref["calls"] == 1 and ref["rows_per_call"] == [2 * 5 * 3]
    assert ref["items_per_batch"] == 10 and ref["draws_per_call"] == 5
    assert ref["prompt_encodes"] == 2 * 2 + 1
    # both procedures make n_items x n_samples x (options + 1) evaluations
    assert ref["evals_per_s"] * ref["s_per_item"] * cfg.n_items == pytest.approx(2 * 5 * 3)
    check = out["precision"]["bfloat16"]
    assert check["items"] == 2 + 2 and set(check) >= {"passed", "rel_diff_max", "clear_items"}
    if not check["passed"]:
        assert out["engine_dtype"] == "float32"  # a dtype that fails its check is not used


@pytest.fixture(scope="module")
def tiny() -> object:
    return load_model(ModelConfig(name="tiny-sd"), torch.device("cpu"), torch.float32)


VG_OPTIONS = ("the man is beside the dog", "the dog is beside the man")
ORDER_OPTIONS = (
    "a dog on the grass",
    "a grass on the dog",
    "dog a on grass the",
    "a dog the on grass",
    "on the grass a dog",
)


def _items(n: int, options: tuple[str, ...]) -> list[tuple[str, ...]]:
    """n items, each with its own captions (the published batch encodes them all, once)."""
    return [tuple(f"{o} {i}" for o in options) for i in range(n)]


def _count_unet(model, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Replaces the UNet's forward by a counter (zeros out): the rows of every call."""
    calls: list[int] = []

    def forward(sample, timestep, encoder_hidden_states=None, return_dict=True, **kw):
        assert sample.dtype == torch.float32 and len(timestep) == len(sample)
        assert encoder_hidden_states.shape[0] == len(sample)
        calls.append(int(sample.shape[0]))
        out = torch.zeros_like(sample)
        return SimpleNamespace(sample=out) if return_dict else (out,)

    monkeypatch.setattr(model.unet, "forward", forward)
    return calls


# The published ARO code, from its description (reference section 6), not from reference.py:
# (task, options per item, items per batch, UNet calls per batch, rows per call, rows per item)
PUBLISHED = {"vg": (2, 10, 20, 150, 300), "coco-order": (5, 5, 20, 150, 600)}


def _is_published(task: str, calls: list[int], n_items: int, encodes: int) -> bool:
    k, bsz, calls_per_batch, rows_per_call, rows_per_item = PUBLISHED[task]
    batches = n_items // bsz
    return (
        len(calls) == batches * calls_per_batch
        and set(calls) == {rows_per_call}
        and sum(calls) == n_items * rows_per_item
        and encodes == batches * (k * bsz + 1)  # each distinct prompt once per batch
    )


REFERENCE_VARIANTS = {
    "published": (True, {}),
    "4 draws per call": (False, {"draws_per_call": 4}),
    "6 draws per call": (False, {"draws_per_call": 6}),
    "no empty prompt": (False, {"conditions": lambda options: tuple(options)}),
    "one image per batch": (False, {"batch_items": 1}),
}


@pytest.mark.parametrize("task", sorted(PUBLISHED))
@pytest.mark.parametrize("variant", sorted(REFERENCE_VARIANTS))
def test_reference_batches_as_published(
    tiny, task: str, variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows per call, calls, rows per item and prompt encodes of the reference equal the
    published code's for VG (300 rows/item) and COCO-Order (600); each variant that is off
    (a draw per call more or less, no empty prompt, unbatched images) is detected."""
    faithful, change = REFERENCE_VARIANTS[variant]
    change = dict(change)
    if "conditions" in change:
        monkeypatch.setattr(reference, "conditions_of", change.pop("conditions"))
    k, bsz = PUBLISHED[task][:2]
    n_items = 2 * bsz  # two batches: prompts are encoded again for the second
    calls = _count_unet(tiny, monkeypatch)
    images = bench.random_images(n_items, tiny.image_size, 0)
    options = _items(n_items, VG_OPTIONS if k == 2 else ORDER_OPTIONS)
    out = reference_scores(tiny, images, options, n_samples=100, seed=0, **change)
    assert out["calls"] == len(calls) and out["rows"] == calls and out["evals"] == sum(calls)
    assert _is_published(task, calls, n_items, out["prompt_encodes"]) == faithful, (
        len(calls),
        set(calls),
        sum(calls),
        out["prompt_encodes"],
    )


class _Reweighted(LogsnrSampler):
    """The published sampler (clip 4) with its weight multiplied by `factor` (an injected error)."""

    def __init__(self, factor: float) -> None:
        super().__init__(clip=reference.PAPER_SAMPLER.clip)
        object.__setattr__(self, "factor", factor)

    def weight(self, logsnr: torch.Tensor) -> torch.Tensor:
        return self.factor * super().weight(logsnr)


def _engine_and_reference(tiny, options, n_samples, sampler=None):
    """Engine estimates and reference scores of the same items on the same draws."""
    images = bench.random_images(len(options), tiny.image_size, 1)
    xs = tiny.encode_images(images)  # [N, 4, h, w]
    cfg = EngineConfig(n_samples=n_samples, sampler=reference.PAPER_SAMPLER, seed=5, max_batch=16)
    queries = [
        Query(xs[i], reference.conditions_of(o), tuple((j, len(o)) for j in range(len(o))), key=i)
        for i, o in enumerate(options)
    ]
    drawn = [engine.draw(q, cfg) for q in queries]
    draws = reference.ReferenceDraws(
        xs, torch.stack([d[0] for d in drawn]), torch.stack([d[2] for d in drawn])
    )
    kw = {"sampler": sampler} if sampler is not None else {}
    ref = reference_scores(tiny, images, options, n_samples, draws=draws, **kw)
    ests = estimate(tiny, queries, cfg)
    io = torch.tensor(
        [[e.info_o(j)[0] for j in range(len(o))] for e, o in zip(ests, options, strict=True)],
        dtype=torch.float64,
    )
    mmse = torch.tensor(
        [
            [e.score("mmse", j)[0] for j in range(len(o))]
            for e, o in zip(ests, options, strict=True)
        ],
        dtype=torch.float64,
    )
    return ref, io, mmse


def _agrees(ref: dict, io: torch.Tensor, mmse: torch.Tensor) -> bool:
    return torch.allclose(ref["io"], io, rtol=1e-4, atol=1e-6) and torch.allclose(
        ref["mmse"], mmse, rtol=1e-4
    )


@pytest.mark.parametrize("options", [VG_OPTIONS, ORDER_OPTIONS], ids=["vg", "coco-order"])
def test_reference_equals_the_engine_on_the_same_draws(tiny, options) -> None:
    """Given the engine's (latent, logsnr, eps) draws, the published batching (raw UNet call,
    nearest timestep, 5 draws per call) gives the engine's i^o and denoising loss."""
    items = _items(3, options)
    ref, io, mmse = _engine_and_reference(tiny, items, n_samples=10)
    assert (io > 0).all() and (mmse > 0).all()
    assert _agrees(ref, io, mmse), (ref["io"], io, ref["mmse"], mmse)


@pytest.mark.parametrize("factor", [1.05, 0.95, 0.5, -1.0])
def test_reference_check_fails_on_an_injected_weight_error(tiny, factor: float) -> None:
    """The same comparison with the reference's importance weight off by 5%, halved, or of the
    wrong sign fails."""
    ref, io, mmse = _engine_and_reference(tiny, _items(2, VG_OPTIONS), 10, _Reweighted(factor))
    assert not _agrees(ref, io, mmse)


def test_reference_draws_its_own_samples(tiny) -> None:
    images = bench.random_images(2, tiny.image_size, 0)
    options = _items(2, VG_OPTIONS)
    encodes = tiny.prompt_encodes
    ref = reference_scores(tiny, images, options, n_samples=8, seed=3)
    assert tiny.prompt_encodes == encodes  # prompts encoded anew, outside the adapter's cache
    assert ref["io"].shape == ref["mmse"].shape == (2, 2)
    assert (ref["io"] >= 0).all() and (ref["mmse"] > 0).all()
    assert ref["rows"] == [2 * 3 * 5, 2 * 3 * 3]  # 8 samples: 5 draws, then 3
    again = reference_scores(tiny, images, options, n_samples=8, seed=3)
    assert torch.equal(again["io"], ref["io"])  # its own generator, seeded by `seed`
    other = reference_scores(tiny, images, options, n_samples=8, seed=4)
    assert not torch.allclose(other["io"], ref["io"])


def test_bench_command(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    res = subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", "bench", f"run.out_dir={out}"]
        + ["n_items=2", "estimator.n_samples=5", "repeats=1", "run.device=cpu"]
        + ["precision_items=2", "study_items=4", "study_pilot_items=2", "study_repeats=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    # no figure mixes scores: the old speedup / eval_fraction / cost_ratio keys are gone
    for key in ("speedup", "eval_fraction", "cost_ratio", "evals_per_answer"):
        assert key not in result, key
    table = pd.read_csv(out / "study_oracle.csv")
    assert list(table[table["reference"]]["score"]) == ["io", "is", "dl"]
    scores = result["scores"]["oracle"]
    assert set(scores) == {"io", "is", "dl"}
    for score, b in scores.items():
        rows = table[table["score"] == score]
        ref = rows[rows["reference"]].iloc[0]
        assert b["reference_evals_per_answer"] == pytest.approx(ref["evals_per_answer"])
        assert "cost_ratio" not in b  # the oracle is not the timed model: no time figure
        if b["scheme"] is not None:
            assert b["eval_ratio"] == pytest.approx(b["evals_per_answer"] / ref["evals_per_answer"])
    assert set(result["peak_memory_mb"]) == {
        "reference",
        "diffusionitm",
        "engine_float32",
        "engine_bfloat16",
    }
    assert "not measured here (no GPU)" in result["gpu"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"] == "bench" and meta["config"]["model"]["name"] == "tiny-sd"
    assert "oracle io: reference (published i^o)" in res.stdout
    assert f"\n{bench.CPU_NOTE}\n" in res.stdout and result["note"] == bench.CPU_NOTE
    assert "bench speed" in res.stderr and "bench study (oracle)" in res.stderr


def test_cost_ratio_is_per_score() -> None:
    """cost_ratio of a score = its time ratio (engine vs that score's reference batching) x its
    evaluation ratio; only dtypes that passed their precision check are costed."""
    table = pd.DataFrame(
        [
            ("io", "published i^o", True, 100, True, 300.0, 0.90, 0.0, True, 1.0),
            ("io", "fitted", False, 33, True, 99.0, 0.89, 0.02, True, 0.9),
            ("is", "published per-sample i^s", True, 100, True, 300.0, 0.95, 0.0, True, 1.0),
            ("is", 'fitted, no ""', False, 33, False, 66.0, 0.80, 0.02, False, 1.1),
            ("dl", "DiffusionITM", True, 10, False, 20.0, 0.9, 0.0, True, 1.0),
            ("dl", "fitted", False, 5, False, 10.0, 0.9, 0.05, True, 1.2),
        ],
        columns=[
            "score",
            "procedure",
            "reference",
            "samples",
            "with_empty",
            "evals_per_answer",
            "agreement",
            "diff_se",
            "matched",
            "var_ratio",
        ],
    )
    speed = {
        "time_per_eval_ratio": {
            "io": {"float32": 1.0, "bfloat16": 0.6},
            "is": {"float32": 1.0, "bfloat16": 0.6},
            "dl": {"float32": 0.5, "bfloat16": 0.3},
        },
        "usable_dtypes": ["float32"],
    }
    out = bench.scores_of(speed, table, timed=True)
    assert out["io"]["eval_ratio"] == pytest.approx(0.33)
    assert out["io"]["cost_ratio"] == {"float32": pytest.approx(0.33)}  # bfloat16 not usable
    assert out["is"]["scheme"] is None and math.isnan(out["is"]["eval_ratio"])
    assert out["dl"]["cost_ratio"]["float32"] == pytest.approx(0.5 * 0.5)
    assert "cost_ratio" not in bench.scores_of(speed, table, timed=False)["io"]


@pytest.fixture(scope="module")
def dtype_scores(tiny) -> tuple[torch.Tensor, torch.Tensor]:
    """i^o [N, 2] of the same 16 items and draws from the float32 and the bfloat16 tiny-sd."""
    low = load_model(ModelConfig(name="tiny-sd"), torch.device("cpu"), torch.bfloat16)
    assert low.dtype == torch.bfloat16
    n = 16
    images, options = bench.random_images(n, tiny.image_size, 2), bench.item_options(n)
    cfg = EngineConfig(n_samples=10, max_batch=96, seed=1)
    return (
        bench._engine_items(tiny, images, options, cfg),
        bench._engine_items(low, images, options, cfg),
    )


def test_bfloat16_denoiser_within_tolerance(dtype_scores) -> None:
    """bfloat16 UNet, float32 accumulation: i^o within [-2%, +5%] of float32 on the same draws
    and the same answer on every clear-margin item."""
    f32, bf16 = dtype_scores
    check = compare_scores(f32, bf16)
    assert check["passed"], check
    assert check["clear_items"] >= 4 and check["ranking_agreement_clear"] >= 0.99
    assert 0 < check["rel_diff_max"] <= 0.05  # rounding noise can only inflate i^o on average


@pytest.mark.parametrize(
    "error",
    ["weight x 1.05", "weight x 0.95", "weight x 0.5", "sign", "swapped options"],
)
def test_precision_check_fails_on_injected_errors(dtype_scores, error: str) -> None:
    f32, bf16 = dtype_scores
    broken = {
        "weight x 1.05": 1.05 * bf16,
        "weight x 0.95": 0.95 * bf16,
        "weight x 0.5": 0.5 * bf16,
        "sign": -bf16,
        "swapped options": bf16.flip(1),
    }[error]
    assert not compare_scores(f32, broken)["passed"]


@pytest.mark.gpu
def test_gpu_cost_figures() -> None:
    """The GPU figures the README's cost table lacks: evals/s of the faithful reference and of
    the bfloat16 engine on sd21-random and peak memory. No GPU was available when the bench was
    written, so none are recorded; run this (or scripts/gpu_bench.sh) on one and copy them
    into README.md."""
    if not torch.cuda.is_available():
        pytest.skip(
            "needs CUDA: GPU figures (sd21-random evals/s reference vs bfloat16 engine, peak "
            "memory) not measured, no GPU was available"
        )
    cfg = BenchConfig()
    cfg.model.name, cfg.run.device = "sd21-random", "cuda"
    cfg.n_items, cfg.estimator.n_samples, cfg.repeats, cfg.precision_items = 10, 10, 3, 10
    out = bench.speed(cfg)
    assert out["precision"]["bfloat16"]["passed"], out["precision"]
    assert out["engine"]["bfloat16"]["peak_mb"] > 0
    assert out["time_per_eval_ratio"]["io"]["bfloat16"] < 1


@pytest.mark.skip(
    reason="unfinished: CUDA graphs for the fixed chunk shape, pinned host memory and a measured "
    "largest-batch search are not implemented; they only pay on a GPU and none was available to "
    "measure them (model.compile, model.channels_last and SDPA attention exist, unmeasured)"
)
def test_cuda_graphs_pinned_memory_and_batch_search() -> None:
    raise AssertionError("not implemented")

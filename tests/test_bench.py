"""`infodecomp bench`: sample efficiency on the exact oracle, the speed comparison on tiny-sd, and
the published-procedure reference against the engine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from infodecomp.estimators import engine
from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments import bench
from infodecomp.experiments.config import BenchConfig, ModelConfig
from infodecomp.experiments.efficiency import eval_fraction, sample_efficiency
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
    # baseline, fixed-20 x 2 proposals, adaptive margin 3 x 2 proposals
    assert len(t) == 5
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
    adaptive = t[t["scheme"].str.startswith("adaptive")]
    assert len(adaptive) == 2
    assert (adaptive["samples_per_item"] <= 100).all() and (
        adaptive["samples_per_item"] >= 30
    ).all()
    # the fresh draws behind reported values are listed apart from the answer's evaluations
    assert adaptive["report_evals_per_item"].tolist() == pytest.approx([30 * mean_options] * 2)
    assert (t[~t["scheme"].str.startswith("adaptive")]["report_evals_per_item"] == 0).all()


def test_eval_fraction_on_the_computed_table(efficiency_table: pd.DataFrame) -> None:
    fraction, scheme = eval_fraction(efficiency_table)
    if scheme == "none matched":
        assert math.isnan(fraction)
    else:
        assert 0 < fraction and scheme.split(" (")[0] in set(efficiency_table["scheme"])


def _table(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=[
            "scheme",
            "proposal",
            "samples_per_item",
            "evals_per_item",
            "agreement",
            "diff_se",
        ],
    )


def test_eval_fraction_picks_the_cheapest_matched_scheme() -> None:
    table = _table(
        [
            ("fixed-100 (paper)", "paper, iid", 100.0, 200.0, 0.90, 0.0),
            ("fixed-30", "paper, stratified", 30.0, 60.0, 0.80, 0.02),  # worse by 5 se
            ("fixed-50", "paper, stratified", 50.0, 100.0, 0.89, 0.02),  # within one se
            ("adaptive margin 3", "paper, stratified", 40.0, 80.0, 0.95, 0.01),  # better
        ]
    )
    fraction, scheme = eval_fraction(table)
    assert fraction == pytest.approx(80.0 / 200.0)
    assert scheme == "adaptive margin 3 (paper, stratified)"


def test_eval_fraction_none_matched() -> None:
    table = _table(
        [
            ("fixed-100 (paper)", "paper, iid", 100.0, 200.0, 0.90, 0.0),
            ("fixed-30", "paper, stratified", 30.0, 60.0, 0.70, 0.05),
            ("adaptive margin 2", "fitted, stratified", 20.0, 40.0, 0.80, 0.01),
        ]
    )
    fraction, scheme = eval_fraction(table)
    assert math.isnan(fraction) and scheme == "none matched"


def test_speed_on_tiny_sd() -> None:
    cfg = BenchConfig()
    cfg.model.name = "tiny-sd"
    cfg.run.device = "cpu"
    cfg.n_items, cfg.estimator.n_samples, cfg.repeats = 1, 4, 1
    out = bench.speed(cfg)
    assert out["model"] == "tiny-sd" and out["device"] == "cpu" and out["engine_dtype"] == "float32"
    for key in (
        "reference_s_per_item",
        "engine_s_per_item",
        "reference_evals_per_s",
        "engine_evals_per_s",
    ):
        assert out[key] > 0 and math.isfinite(out[key]), key
    assert math.isfinite(out["speedup"]) and out["speedup"] > 0
    assert out["speedup"] == pytest.approx(out["reference_s_per_item"] / out["engine_s_per_item"])
    # both procedures make n_items x n_samples x (options + 1) evaluations
    ref_evals = out["reference_evals_per_s"] * out["reference_s_per_item"] * cfg.n_items
    assert ref_evals == pytest.approx(1 * 4 * (len(bench.OPTIONS) + 1))


@pytest.fixture(scope="module")
def tiny() -> object:
    return load_model(ModelConfig(name="tiny-sd"), torch.device("cpu"), torch.float32)


def test_reference_counts_and_signs(tiny) -> None:
    image = bench._images(1, tiny.image_size, 0)[0]
    ref = reference_scores(tiny, image, bench.OPTIONS, n_samples=8, batch=5, seed=3)
    assert int(ref["evals"]) == 8 * (len(bench.OPTIONS) + 1)  # batch 5 does not divide 8
    assert ref["io"].shape == ref["mmse"].shape == (len(bench.OPTIONS),)
    assert (ref["io"] >= 0).all() and (ref["mmse"] > 0).all()
    again = reference_scores(tiny, image, bench.OPTIONS, n_samples=8, batch=150, seed=3)
    assert torch.allclose(again["io"], ref["io"], rtol=1e-4)  # the UNet batch changes nothing
    other = reference_scores(tiny, image, bench.OPTIONS, n_samples=8, batch=150, seed=4)
    assert not torch.allclose(other["io"], ref["io"])  # its own generator, seeded by `seed`


def test_reference_matches_the_engine_on_the_same_draws(
    tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference draws (logsnr, eps) from the paper's logistic iid proposal with its own
    torch.Generator(seed); the engine seeds per item from (seed, key). Given the engine the very
    same generator, i^o and the MMSE integral must agree."""
    assert EngineConfig().sampler == LogsnrSampler(
        kind="logistic", loc=1.0, scale=2.0, clip=3.0, mode="iid"
    )
    image = bench._images(1, tiny.image_size, 0)[0]
    seed, n = 3, 8
    ref = reference_scores(tiny, image, bench.OPTIONS, n_samples=n, batch=5, seed=seed)
    x = tiny.encode_images([image])[0]
    query = Query(x, (*bench.OPTIONS, ""), ((0, 2), (1, 2)), key="bench")

    default = estimate(tiny, [query], EngineConfig(n_samples=n, seed=seed))[0]
    monkeypatch.setattr(engine, "item_generator", lambda s, key: torch.Generator().manual_seed(s))
    same = estimate(tiny, [query], EngineConfig(n_samples=n, seed=seed))[0]

    io = torch.tensor([same.info_o(j)[0] for j in range(len(bench.OPTIONS))], dtype=torch.float32)
    mmse = torch.tensor([same.score("mmse", j)[0] for j in range(len(bench.OPTIONS))])
    assert torch.allclose(io, ref["io"], rtol=1e-4, atol=1e-5), (io, ref["io"])
    assert torch.allclose(mmse.float(), ref["mmse"], rtol=1e-4), (mmse, ref["mmse"])
    # with its own per-item draws the engine estimates the same quantities from other samples
    io_default = torch.tensor([default.info_o(j)[0] for j in range(len(bench.OPTIONS))])
    assert not torch.allclose(io_default.float(), ref["io"], rtol=1e-4)
    assert (io_default >= 0).all()


def test_bench_command(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    res = subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", "bench", f"run.out_dir={out}"]
        + ["n_items=1", "estimator.n_samples=4", "repeats=1", "oracle_items=2", "run.device=cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads((out / "bench.json").read_text())
    assert result["speedup"] > 0 and result["speedup"] == result["speed"]["speedup"]
    assert result["eval_fraction"] == result["efficiency"]["eval_fraction"]
    table = pd.read_csv(out / "efficiency.csv")
    assert table["scheme"].iloc[0] == "fixed-100 (paper)" and len(table) == 7
    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"] == "bench" and meta["config"]["model"]["name"] == "tiny-sd"
    assert "speedup" in res.stdout and "eval_fraction" in res.stdout
    # on a CPU the command says what its numbers mean, in the console and in bench.json
    assert f"\n{bench.CPU_NOTE}\n" in res.stdout and result["note"] == bench.CPU_NOTE
    # progress for both phases (warm-up + reference/engine rounds; 9 schemes x 6 repeats)
    assert "bench speed" in res.stderr and "4/4" in res.stderr
    assert "bench samples (exact oracle)" in res.stderr and "42/42" in res.stderr

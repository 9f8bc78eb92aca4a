"""Every command end to end on every new family's tiny pipeline (and validate on the oracle wrappers).

The commands run in-process through their `run(cfg)` with tiny settings (the Hydra layer is the
same for every model and is covered by tests/test_experiments.py; here `--cfg job` checks that
the presets resolve). Each (command, family) runs once per module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from infodecomp import cli
from infodecomp.experiments.commands import aro, bench, intervene, localize, validate, visualize
from infodecomp.experiments.config import (
    AroConfig,
    InterveneConfig,
    LocalizeConfig,
    ModelConfig,
    ValidateConfig,
    VisualizeConfig,
)

FAMILIES = ("tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-pixart", "shapes-learned")
COMMANDS = {
    "aro": (aro, AroConfig, "shapes-relation", {}),
    "localize": (localize, LocalizeConfig, "shapes-localize", {"steps": [4], "daam_steps": 2}),
    "intervene": (
        intervene,
        InterveneConfig,
        "shapes-intervene",
        {"n_sigmas": 4, "n_boot": 20, "daam_steps": 2},
    ),
    "visualize": (
        visualize,
        VisualizeConfig,
        "shapes-localize",
        {"n_curve_samples": 8, "daam_steps": 2},
    ),
}


def _cfg(schema, model: str, out: Path, data: str | None = None, **fields):
    cfg = schema()
    cfg.model = ModelConfig.of(model)
    if data:
        cfg.data.name, cfg.data.size = data, 4
    cfg.run.limit, cfg.run.device, cfg.run.progress = 2, "cpu", False
    cfg.run.out_dir = str(out)
    cfg.estimator.n_samples = 4
    for key, value in fields.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("families")
    done: dict[tuple[str, str], Path] = {}

    def get(command: str, model: str) -> Path:
        if (command, model) not in done:
            module, schema, data, extra = COMMANDS[command]
            out = root / f"{command}-{model}"
            module.run(_cfg(schema, model, out, data, **extra))
            done[command, model] = out
        return done[command, model]

    return get


@pytest.mark.parametrize("model", FAMILIES)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_runs_on_the_family(command: str, model: str, runs) -> None:
    out = runs(command, model)
    results = pd.read_csv(out / "results.csv")
    summary = json.loads((out / "summary.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert results["item_id"].nunique() == 2 and summary["items/done"] == 2
    assert meta["config"]["model"]["name"] == model
    assert meta["model_source"]["family"] == model
    if command == "aro":
        assert {"accuracy/io", "accuracy/is", "accuracy/mmse"} <= set(summary)
    elif command == "localize":  # the attention baselines run on every family
        assert set(results["method"]) == {"cmi", "mi", "attention", "attn_info", "whole"}
        for key in ("miou/cmi", "miou/attention", "miou/attn_info"):
            assert 0.0 <= summary[key] <= 1.0, key
    elif command == "intervene":
        assert results["attn_total"].notna().all() and (results["change_total"] > 0).all()
        assert -1.0 <= summary["pixel_r/cmi/omit"] <= 1.0
        assert len(list((out / "images").glob("*.png"))) >= 4
    else:
        assert summary["figures"] == 4 and len(list((out / "figures").glob("*.png"))) == 4


@pytest.mark.parametrize("model", FAMILIES)
def test_validate_passes_on_the_family(model: str, tmp_path: Path, capsys) -> None:
    out = validate.run(_cfg(ValidateConfig, model, tmp_path / "v"))  # exits 1 on a failed check
    table = pd.read_csv(out / "validate.csv")
    # 5 model-independent rows and the conversion rows of the family's own schedule
    assert table["passed"].all() and (table["check"] != "8 conversions").sum() == 5
    conv = table[table["check"] == "8 conversions"]
    assert conv["quantity"].str.startswith("max |time input").sum() == 1 and len(conv) >= 3
    assert f"{len(table)}/{len(table)} checks passed" in capsys.readouterr().out


def test_presets_resolve_on_the_command_line(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv for Hydra
    for name in ("tiny-sd3", "sdxl", "flux-dev", "pixart-sigma", "shapes-oracle-flow"):
        assert cli.main(["aro", f"model={name}", "--cfg", "job"]) == 0
        assert yaml.safe_load(capsys.readouterr().out)["model"]["name"] == name
    assert cli.main(["aro", "model=flux-schnell", "model.guidance=2.0", "--cfg", "job"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["guidance"] == 2.0


def test_bench_reference_runs_through_a_flow_family() -> None:
    import torch

    from infodecomp.experiments.efficiency import OPTIONS, random_images
    from infodecomp.experiments.reference import reference_scores
    from infodecomp.models.registry import load_model

    model = load_model(ModelConfig.of("tiny-flux"), torch.device("cpu"), torch.float32)
    image = random_images(1, model.image_size, 0)[0]
    ref = reference_scores(model, [image], [OPTIONS], n_samples=6, seed=1)
    assert ref["evals"] == 6 * (len(OPTIONS) + 1) and ref["rows"] == [15, 3]
    assert (ref["io"] > 0).all() and (ref["mmse"] > 0).all()
    assert model.prompt_encodes == 0  # the reference encodes anew, outside the cache


@pytest.mark.parametrize("model", ["gaussian-oracle-flow", "gaussian-oracle-v"])
def test_validate_exact_checks_pass_on_the_gaussian_wrappers(model: str, tmp_path: Path) -> None:
    out = validate.run(_cfg(ValidateConfig, model, tmp_path / "v", n_items=10))  # 2000 pairs
    table = pd.read_csv(out / "validate.csv")
    assert table["passed"].all() and set(table["check"]) == {
        "1 gaussian",
        "1p gaussian, paper sampler",
    } | ({"8 conversions"} if model.endswith("flow") else set())
    assert json.loads((out / "meta.json").read_text())["model_source"]["family"] == model


@pytest.mark.slow
@pytest.mark.parametrize("model", ["shapes-oracle-flow", "shapes-oracle-v"])
def test_validate_exact_checks_pass_on_the_shapes_wrappers(model: str, tmp_path: Path) -> None:
    """The full exact table (as on the plain oracle) through the flow / v conversions."""
    out = validate.run(_cfg(ValidateConfig, model, tmp_path / "v"))
    table = pd.read_csv(out / "validate.csv")
    assert table["passed"].all() and len(table) >= 50
    assert ("8 conversions" in set(table["check"])) == model.endswith("flow")


def test_bench_speed_on_a_flow_family() -> None:
    from infodecomp.experiments.config import BenchConfig

    cfg = BenchConfig()
    cfg.model.name, cfg.run.device = "tiny-sd3", "cpu"
    cfg.n_items, cfg.estimator.n_samples, cfg.repeats = 1, 4, 1
    cfg.engine_dtypes = ["float32"]
    out = bench.speed(cfg)
    assert out["model"] == "tiny-sd3" and out["engine_dtype"] == "float32"
    assert out["reference"]["evals_per_s"] > 0 and out["engine"]["float32"]["evals_per_s"] > 0
    assert out["diffusionitm"]["evals_per_s"] > 0
    assert all(r["float32"] > 0 for r in out["time_per_eval_ratio"].values())


@pytest.mark.skip(
    reason="unfinished: the README's evaluations-per-second figures for SDXL, SD 3.5, Flux.1 and "
    "PixArt-Sigma need their real architectures built with random weights on a GPU (published "
    "configs, bfloat16, the engine's batch size); no GPU and no hub access were available, so "
    "there is no builder like models/tiny/sd21_arch.py for them yet"
)
def test_real_architecture_cost_per_evaluation_on_a_gpu() -> None:
    raise AssertionError("not implemented")

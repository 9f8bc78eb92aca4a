"""The four experiment commands end to end, their run directories, sweeps, aggregation, bad input.

Every command runs as a subprocess (`python -m infodecomp.cli ...`) with tiny settings, once on
the embedded ShapesWorld oracle and once on the offline random-weight tiny-sd pipeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from infodecomp import cli
from infodecomp.experiments.commands import aro, intervene, localize, visualize
from infodecomp.reporting import writer
from infodecomp.reporting.store import RunView

ENV = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODULES = {"aro": aro, "localize": localize, "intervene": intervene, "visualize": visualize}
COMMON = (
    "run.limit=2",
    "data.size=4",
    "estimator.n_samples=4",
    "run.device=cpu",
    "run.progress=false",
)
TINY = {
    "aro": (),
    "localize": ("steps=[4]", "daam_steps=2"),
    "intervene": ("n_sigmas=4", "n_boot=50", "daam_steps=2"),
    "visualize": ("n_curve_samples=8", "daam_steps=2"),
}
MODELS = ("shapes-oracle", "tiny-sd")


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`infodecomp <args>` in a subprocess, run in a temporary cwd so nothing lands in the repo."""
    return subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv for Hydra


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("experiments")


@pytest.fixture(scope="module")
def runs(workdir: Path):
    """run(command, model) -> (run dir, completed process); each (command, model) runs once."""
    done: dict[tuple[str, str], tuple[Path, subprocess.CompletedProcess]] = {}

    def get(command: str, model: str) -> tuple[Path, subprocess.CompletedProcess]:
        if (command, model) not in done:
            out = workdir / f"{command}-{model}"
            res = run_cli(
                command,
                f"model={model}",
                f"run.out_dir={out}",
                *COMMON,
                *TINY[command],
                cwd=workdir,
            )
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
            done[command, model] = (out, res)
        return done[command, model]

    return get


def _expected_keys(command: str, model: str) -> set[str]:
    keys = {
        "aro": {"accuracy/io", "accuracy/is", "accuracy/mmse"},
        "localize": {"miou/cmi", "miou/mi", "miou/whole"},
        "intervene": {"pixel_r/cmi/omit"},
        "visualize": {"figures", "mean_cmi"},
    }[command] | {"items/done", "items/skipped"}
    if model == "tiny-sd" and command == "localize":
        keys |= {"miou/attention", "miou/attn_info"}
    if model == "tiny-sd" and command == "intervene":
        keys |= {"pixel_r/attention/omit"}
    return keys


def test_documented_columns_match_the_commands() -> None:
    assert aro.COLUMNS == writer.ARO_COLUMNS
    assert localize.COLUMNS == writer.LOCALIZE_COLUMNS
    assert intervene.COLUMNS == writer.INTERVENE_COLUMNS


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("command", sorted(TINY))
def test_command_end_to_end(command: str, model: str, runs) -> None:
    out, res = runs(command, model)
    assert f"{command}: 2 items, 0 skipped" in res.stdout and str(out) in res.stdout

    results = pd.read_csv(out / "results.csv", keep_default_na=False, na_values=[""])
    assert list(results.columns) == MODULES[command].COLUMNS
    assert results["item_id"].nunique() == 2
    with RunView(out) as view:  # the store's finished items are the exported ones
        assert sorted(view.done()) == sorted(results["item_id"].unique())
        assert view.skipped() == {}

    summary = json.loads((out / "summary.json").read_text())
    expected = _expected_keys(command, model)
    assert expected <= set(summary), sorted(expected - set(summary))
    assert summary["items/done"] == 2 and summary["items/skipped"] == 0

    if command == "aro":
        assert len(results) == 2 * 2 * 3  # items x options x estimators
        for key in ("accuracy/io", "accuracy/is", "accuracy/mmse"):
            assert 0.0 <= summary[key] <= 1.0
        assert (results["n_samples"] == 4).all()
    elif command == "localize":
        methods = {"cmi", "mi", "whole"} | (
            {"attention", "attn_info"} if model == "tiny-sd" else {"exact"}
        )
        # no attention maps without cross-attention, no exact maps without exact information
        assert set(results["method"]) == methods
        # the oracle's CMI maps are also scored against the exact map
        extra = 0 if model == "tiny-sd" else 2
        assert len(results) == 2 * len(methods) + extra and set(results["n_steps"]) == {4}
        refs = results.groupby("reference")["method"].unique()
        assert set(refs["object mask"]) == methods
        if model != "tiny-sd":
            assert list(refs["exact map"]) == ["cmi"]
            assert "miou/exact" in summary and "miou_vs_exact_map/cmi@4" in summary
        for key in expected - {"items/done", "items/skipped"}:
            assert 0.0 <= summary[key] <= 1.0, (key, summary[key])
        if model != "tiny-sd":
            assert "miou/attention" not in summary
    elif command == "intervene":
        assert set(results["edit"]) <= {"omit", "swap"} and "omit" in set(results["edit"])
        assert results["change_total"].notna().all() and (results["change_total"] >= 0).all()
        assert -1.0 <= summary["pixel_r/cmi/omit"] <= 1.0
        assert results["attn_total"].notna().all() == (model == "tiny-sd")
        # the oracle records the exact CMI beside the estimate; a learned model cannot
        assert results["exact_total"].notna().all() == (model != "tiny-sd")
        assert (results["cmi_stderr"] > 0).all() and results["word_type"].notna().all()
        pngs = sorted((out / "images").glob("*.png"))
        names = {p.name for p in pngs}
        for item in results["item_id"].unique():
            assert {f"{item}-orig.png", f"{item}-omit.png"} <= names
        for p in pngs:
            with Image.open(p) as im:
                im.load()
                assert im.size[0] > 0 and im.mode == "RGB"
    else:  # visualize
        assert len(results) == 2 and summary["figures"] == 4
        figures = sorted((out / "figures").glob("*.png"))
        assert len(figures) == 4
        listed = set(results["panel"]) | set(results["curves"])
        assert {str(p.relative_to(out)) for p in figures} == listed
        for p in figures:
            with Image.open(p) as im:
                im.verify()
            with Image.open(p) as im:
                assert im.size[0] > 50 and im.size[1] > 50

    # console: no matplotlib INFO chatter; a log file only when something was logged
    assert "matplotlib" not in res.stdout + res.stderr
    log = out / f"{command}.log"
    assert not log.exists() or log.stat().st_size > 0
    if (command, model) == ("aro", "tiny-sd"):  # ShapesWorld images converted for an image model
        assert "converted to RGB" in log.read_text()

    meta = json.loads((out / "meta.json").read_text())
    assert meta["command"] == command
    if command != "aro":  # the run says which attention aggregation it used
        assert meta["config"]["attention"] == "daam"
    assert meta["config"]["model"]["name"] == model
    assert meta["config"]["estimator"]["n_samples"] == 4
    assert meta["versions"]["torch"] and meta["versions"]["infodecomp"]
    assert meta["wall_time_s"] > 0
    assert meta["items_done"] == 2 and meta["items_skipped"] == 0
    hydra_cfg = yaml.safe_load((out / ".hydra" / "config.yaml").read_text())
    assert hydra_cfg["model"]["name"] == model and hydra_cfg["run"]["limit"] == 2


def test_aggregate_demo_runs(runs, workdir: Path) -> None:
    """aro (relation and attribute), localize and intervene on the oracle -> Tables 1-4."""
    aro_rel, _ = runs("aro", "shapes-oracle")
    loc, _ = runs("localize", "shapes-oracle")
    inter, _ = runs("intervene", "shapes-oracle")
    attr = workdir / "aro-attribute"
    res = run_cli("aro", "data=shapes-attribute", f"run.out_dir={attr}", *COMMON, cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    tables = workdir / "tables"
    res = run_cli(
        "aggregate", f"runs=[{aro_rel},{attr},{loc},{inter}]", f"out_dir={tables}", cwd=workdir
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for k in (1, 2, 3, 4):
        for ext in ("md", "tex", "csv"):
            path = tables / f"table{k}.{ext}"
            assert path.exists() and path.stat().st_size > 0, path
    t1 = pd.read_csv(tables / "table1.csv")
    assert {"shapes-relation", "shapes-attribute"} <= set(t1.columns)
    summary = json.loads((aro_rel / "summary.json").read_text())
    row = t1[(t1["model"] == "shapes-oracle") & (t1["method"] == "Info. i^s")]
    assert len(row) == 1
    assert row["shapes-relation"].iloc[0] == pytest.approx(100 * summary["accuracy/is"])
    assert "Table 3" in (tables / "table3.md").read_text()
    assert "CMI" in (tables / "table4.md").read_text()
    assert "Table 1" in res.stdout


def test_sweep_then_aggregate(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    res = run_cli(
        "aro",
        "-m",
        "estimator.n_samples=4,8",
        f"run.out_dir={sweep}",
        "data.size=6",
        "run.progress=false",
        "run.device=cpu",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    run_dirs = sorted(p.parent for p in sweep.glob("*/meta.json"))
    assert len(run_dirs) == 2, list(sweep.iterdir())
    used = sorted(int(pd.read_csv(d / "results.csv")["n_samples"].iloc[0]) for d in run_dirs)
    assert used == [4, 8]
    for d in run_dirs:
        assert pd.read_csv(d / "results.csv")["item_id"].nunique() == 6
        assert (d / ".hydra" / "config.yaml").exists()

    tables = tmp_path / "tables"
    res = run_cli("aggregate", f"runs=[{sweep}]", f"out_dir={tables}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    curve = pd.read_csv(tables / "accuracy_vs_samples.csv")
    assert sorted(curve["n_samples"]) == [4, 8]
    assert (tables / "accuracy_vs_samples.md").exists()
    assert (tables / "table1.md").exists()
    assert sorted(pd.read_csv(tables / "table1.csv")["n_samples"].unique()) == [4, 8]


def test_attention_option_is_validated() -> None:
    from infodecomp.experiments.config import (
        ATTENTION_AGGREGATIONS,
        InterveneConfig,
        LocalizeConfig,
        VisualizeConfig,
    )
    from infodecomp.models.attention.capture import AGGREGATIONS

    assert ATTENTION_AGGREGATIONS == AGGREGATIONS == ("daam", "layer-mean")
    # localize also takes attention=concept (ConceptAttention, joint-attention models)
    allowed = {
        LocalizeConfig: "daam, layer-mean, concept",
        InterveneConfig: "daam, layer-mean",
        VisualizeConfig: "daam, layer-mean",
    }
    for schema, names in allowed.items():
        assert schema().attention == "daam" and schema(attention="layer-mean")
        with pytest.raises(ValueError, match=rf"^attention=mean is not one of: {names}$"):
            schema(attention="mean")
    assert LocalizeConfig(attention="concept")
    with pytest.raises(ValueError, match="not one of: daam, layer-mean$"):
        VisualizeConfig(attention="concept")


def _cfg_job(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert cli.main([*argv, "--cfg", "job"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


# What the published code ran (kxh001/Info-Decomp): its ARO and localisation paths never pass
# --clip to the logistic sampler (default clip 4); Attention+Information hard-codes clip 3; the
# intervention code spans the model's trained logsnr range with clip 3 at 20 x 120 draws and
# correlates the change with the i^s total.
PUBLISHED = {
    "table1": {"loc": 1.0, "scale": 2.0, "clip": 4.0, "n_samples": 100},
    "table3": {"loc": 1.0, "scale": 2.0, "clip": 4.0},
    "table4": {"loc": 0.8527, "scale": 2.0722, "clip": 3.0, "n_samples": 2400},
}
STATED = {"loc": 1.0, "scale": 2.0, "clip": 3.0}


def _presets(capsys: pytest.CaptureFixture, suffix: str = "") -> tuple[dict, dict, dict]:
    t1 = _cfg_job(
        capsys, "aro", f"+experiment=paper-table1{suffix}", "data=aro-vg-relation", "data.root=/x"
    )
    t3 = _cfg_job(
        capsys,
        "localize",
        f"+experiment=paper-table3{suffix}",
        "data.root=/x",
        "data.manifest=/x/m.csv",
    )
    t4 = _cfg_job(
        capsys,
        "intervene",
        f"+experiment=paper-table4{suffix}",
        "data.root=/x",
        "data.manifest=/x/m.csv",
    )
    return t1, t3, t4


def test_paper_experiment_presets(capsys: pytest.CaptureFixture) -> None:
    t1, t3, t4 = _presets(capsys)
    for name, cfg in zip(("table1", "table3", "table4"), (t1, t3, t4), strict=True):
        assert cfg["model"]["name"] == "sd-2.1-base"
        assert cfg["model"]["latent"] == "sample"
        assert cfg["estimator"]["sampler"] == "logistic"
        for key, value in PUBLISHED[name].items():
            assert cfg["estimator"][key] == value, (name, key, cfg["estimator"])
        assert cfg["run"]["dtype"] == "float32" and cfg["run"]["batch_size"] == 150
    # the published ARO range is [-7, 9]; Table 4's is SD 2.1 base's trained range
    assert t1["estimator"]["loc"] + 4 * t1["estimator"]["scale"] == 9.0
    lo = t4["estimator"]["loc"] - 3 * t4["estimator"]["scale"]
    hi = t4["estimator"]["loc"] + 3 * t4["estimator"]["scale"]
    assert lo == pytest.approx(-5.364, abs=1e-3) and hi == pytest.approx(7.069, abs=1e-3)
    assert t1["data"]["name"] == "aro-vg-relation" and t1["data"]["root"] == "/x"
    assert t1["estimator"]["mode"] == "iid" and t1["estimators"] == ["io", "is", "mmse"]
    assert t3["data"]["name"] == "coco-it" and t3["steps"] == [50, 100, 200]
    assert t3["daam_steps"] == 50 and "attention" in t3["methods"]
    assert t3["attention"] == "daam" and t4["attention"] == "daam"  # DAAM's aggregation
    assert t3["attn_info_clip"] == 3.0
    # localisation as the published scripts ran it (README "Table 3 as the published scripts
    # ran it"); the [0, 1] baseline bug only in the -published-bug preset
    assert t3["mi_prompt"] == "label" and t3["map_draws"] == "batch-published"
    assert (t3["model"]["resample"], t3["model"]["mask_resample"]) == ("bilinear", "nearest")
    assert t3["data"]["wl_mask"] == "all-objects-published" and t3["baseline_input"] == "model"
    bug = _cfg_job(
        capsys,
        "localize",
        "+experiment=paper-table3-published-bug",
        "data=coco-wl",
        "data.root=/x",
        "data.manifest=/x/m.csv",
    )
    assert bug["baseline_input"] == "zero-one-published-bug" and bug["mi_prompt"] == "label"
    assert bug["data"]["name"] == "coco-wl" and bug["data"]["wl_mask"] == "all-objects-published"
    assert t4["data"]["name"] == "coco100-it" and t4["n_sigmas"] == 100
    assert t4["edits"] == ["omit", "swap"] and t4["image_score"] == "is"
    # Table 4 as the published script ran it (tests/test_intervene_published.py checks each)
    assert (t4["ode_solver"], t4["ode_ends"]) == ("heun", "sigma-min")
    assert t4["attention_path"] == "regeneration" and t4["regeneration_autocast"] == "float16"
    assert t4["data"]["swaps"] == "published" and t4["daam_steps"] is None


def test_paper_presets_for_the_stated_range(capsys: pytest.CaptureFixture) -> None:
    t1, t3, t4 = _presets(capsys, "-stated")
    for cfg in (t1, t3, t4):
        assert cfg["model"]["name"] == "sd-2.1-base"
        for key, value in STATED.items():
            assert cfg["estimator"][key] == value, (key, cfg["estimator"])
    assert t1["estimator"]["n_samples"] == 100 and t1["estimators"] == ["io", "is", "mmse"]
    assert t3["steps"] == [50, 100, 200] and t3["attn_info_clip"] == 3.0
    assert t3["mi_prompt"] == "label" and t3["map_draws"] == "batch-published"
    assert t4["estimator"]["n_samples"] == 100 and t4["image_score"] == "io"
    assert t4["ode_ends"] == "sigma-min" and t4["data"]["swaps"] == "published"


def test_missing_aro_root_names_the_path(tmp_path: Path) -> None:
    res = run_cli(
        "aro",
        "data=aro-vg-relation",
        "data.root=/nonexistent",
        f"run.out_dir={tmp_path / 'run'}",
        "run.progress=false",
        cwd=tmp_path,
    )
    assert res.returncode != 0
    assert "/nonexistent" in res.stderr and "data.root" in res.stderr


def test_missing_coco_manifest_names_the_path(tmp_path: Path) -> None:
    res = run_cli(
        "localize",
        "data=coco-it",
        "data.root=/nonexistent",
        "data.manifest=/nonexistent.csv",
        f"run.out_dir={tmp_path / 'run'}",
        "run.progress=false",
        cwd=tmp_path,
    )
    assert res.returncode != 0
    assert "/nonexistent.csv" in res.stderr and "manifest" in res.stderr


def test_unknown_model_lists_the_models(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["aro", "model=nope"])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "nope" in err
    for name in ("shapes-oracle", "tiny-sd", "sd-2.1-base"):
        assert name in err

    # a model config that the registry does not know (e.g. a typo in model.name) suggests one
    import torch

    from infodecomp.experiments.config import ModelConfig
    from infodecomp.models.registry import load_model

    with pytest.raises(ValueError, match="Did you mean 'tiny-sd'"):
        load_model(ModelConfig(name="tiny_sd"), torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("mode", ["iid", "stratified"])
def test_localize_nests_step_counts_in_one_draw(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """steps=[2, 4] with iid draws: one 4-sample estimate whose first 2 samples give the 2-step
    maps (4 samples per item, not 6); stratified draws cannot be nested and run per step count."""
    from infodecomp.experiments.config import LocalizeConfig, ModelConfig

    calls = []
    real = localize.shared.info_maps

    def counting(model, queries, ecfg):
        calls.append((ecfg.n_samples, tuple(sorted(ecfg.prefixes))))
        return real(model, queries, ecfg)

    monkeypatch.setattr(localize.shared, "info_maps", counting)
    cfg = LocalizeConfig()
    cfg.model = ModelConfig(name="shapes-oracle")
    cfg.data.name, cfg.data.size = "shapes-localize", 2
    cfg.run.device, cfg.run.progress, cfg.run.out_dir = "cpu", False, str(tmp_path / "loc")
    cfg.steps, cfg.methods = [2, 4], ["cmi", "mi"]
    cfg.estimator.mode = mode
    out = localize.run(cfg)
    results = pd.read_csv(out / "results.csv")
    assert set(results["n_steps"]) == {2, 4}
    assert calls == ([(4, (2, 4))] if mode == "iid" else [(2, ()), (4, ())])
    by_steps = results[results["method"] == "cmi"].groupby("n_steps")["value"].apply(list)
    assert by_steps[2] != by_steps[4]  # the prefix is its own estimate


def test_aro_ranks_by_the_denoising_loss_without_the_empty_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """estimators=[mmse] needs no "" pass: the same draws and values at options / (options + 1)
    of the denoiser rows of the full run."""
    from infodecomp.experiments.config import AroConfig, ModelConfig
    from infodecomp.models.oracles.exact import ShapesOracle

    rows = []
    real = ShapesOracle.eps_hat

    def counting(self, z, logsnr, cond):
        rows.append(len(z))
        return real(self, z, logsnr, cond)

    monkeypatch.setattr(ShapesOracle, "eps_hat", counting)

    def run(estimators: list[str], name: str) -> tuple[pd.DataFrame, int]:
        rows.clear()
        cfg = AroConfig()
        cfg.model = ModelConfig(name="shapes-oracle")
        cfg.data.name, cfg.data.size = "shapes-relation", 4
        cfg.run.device, cfg.run.progress, cfg.run.out_dir = "cpu", False, str(tmp_path / name)
        cfg.estimator.n_samples, cfg.estimators = 6, estimators
        out = aro.run(cfg)
        return pd.read_csv(out / "results.csv"), sum(rows)

    full, full_rows = run(["io", "is", "mmse"], "full")
    loss, loss_rows = run(["mmse"], "mmse")
    k = 2  # shapes-relation: two options per item
    assert loss_rows * (k + 1) == full_rows * k
    key = ["item_id", "option"] if "option" in full.columns else ["item_id"]
    a = full[full["estimator"] == "mmse"].sort_values(key)["value"].to_numpy()
    b = loss[loss["estimator"] == "mmse"].sort_values(key)["value"].to_numpy()
    assert len(a) == len(b) > 0 and (abs(a - b) <= 1e-9 * abs(a)).all()

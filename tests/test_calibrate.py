"""`infodecomp calibrate`: same draws for both models, the self-calibration exactness control,
an injected error that the control catches, and an end-to-end run on the untrained learned model."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from infodecomp.experiments.commands import calibrate as cal
from infodecomp.experiments.commands.calibrate.pair import SAME_DRAWS, Pair
from infodecomp.experiments.commands.calibrate.pointwise import pointwise_sections
from infodecomp.experiments.config import CalibrateConfig, EstimatorConfig, RunConfig
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.reporting.calibration import CALIBRATION_COLUMNS, compare

# One family of tiny settings: seconds per run.
TINY = {
    "n_items": 3,
    "word_items": 3,
    "exact_draws": 2**10,
    "n_sigmas": 3,
    "daam_steps": 2,
    "n_figures": 1,
}


def tiny_cfg(tmp_path: Path, **kw: Any) -> CalibrateConfig:
    cfg = CalibrateConfig(**{**TINY, **kw})
    cfg.estimator = EstimatorConfig(n_samples=6)
    cfg.run = RunConfig(out_dir=str(tmp_path), progress=False, batch_size=256)
    return cfg


class Recording:
    """A denoiser seen through a recorder of every (z, logsnr) it is asked about."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: Any) -> torch.Tensor:
        self.calls.append((z.detach().clone(), logsnr.detach().clone()))
        return self.inner.eps_hat(z, logsnr, cond)


class Scaled:
    """The oracle with its noise prediction off by a factor (an injected calibration error)."""

    def __init__(self, inner: ShapesOracle, factor: float) -> None:
        self.inner, self.factor = inner, factor
        self.sigma_range = inner.sigma_range

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.factor * self.inner.eps_hat(z, logsnr, cond)


def agreement_failures(table: pd.DataFrame, tol: float) -> list[str]:
    """Rows against the oracle at the same draws where the model and the oracle disagree:
    learned != exact, bias != 0, slope != 1 or corr != 1 beyond `tol` (relative)."""
    bad = []
    rows = table[table["reference"].str.contains(SAME_DRAWS, regex=False)]
    assert len(rows), "no rows against the oracle at the same draws"
    for r in rows.itertuples(index=False):
        scale = max(1.0, abs(r.exact))
        checks = [
            abs(r.learned - r.exact) <= tol * scale,
            math.isnan(r.bias) or abs(r.bias) <= tol * scale,
            math.isnan(r.slope) or abs(r.slope - 1) <= tol,
            math.isnan(r.corr) or abs(r.corr - 1) <= tol,
        ]
        if not all(checks):
            bad.append(f"{r.section} | {r.quantity} | {r.group}: {r.learned} vs {r.exact}")
    return bad


@pytest.fixture(scope="module")
def learned_random() -> Any:
    from infodecomp.experiments.config import ModelConfig
    from infodecomp.models.registry import load_model

    return load_model(ModelConfig(name="shapes-learned-random"), torch.device("cpu"), torch.float32)


def test_compare_statistics() -> None:
    same = compare([1.0, 2.0, 4.0], [1.0, 2.0, 4.0])
    assert same["bias"] == 0 and same["slope"] == pytest.approx(1) and same["corr"] == 1
    off = compare([2.1, 4.1, 8.1], [1.0, 2.0, 4.0])
    assert off["slope"] == pytest.approx(2) and off["bias"] == pytest.approx((1.1 + 2.1 + 4.1) / 3)
    flat = compare([1.0, 1.0], [3.0, 3.0])  # no spread in the reference: no slope, no r
    assert math.isnan(flat["slope"]) and math.isnan(flat["corr"]) and flat["bias"] == -2
    unpaired = compare(0.75, 0.5, paired=False)
    assert unpaired["bias"] == 0.25 and math.isnan(unpaired["slope"])


def test_both_models_see_the_same_draws(tmp_path: Path, learned_random: Any) -> None:
    """The learned model and the oracle are asked about the same noisy points at the same
    logsnr, item for item: the draws are shared, not merely alike."""
    cfg = tiny_cfg(tmp_path, sections=["pointwise"])
    model, oracle = Recording(learned_random), Recording(ShapesOracle())
    pointwise_sections(Pair(model, oracle), cfg, ["pointwise"])
    z_m = torch.cat([z for z, _ in model.calls])
    z_o = torch.cat([z for z, _ in oracle.calls])
    assert z_m.shape[0] == cfg.n_items * 4 * cfg.estimator.n_samples  # 3 captions and ""
    assert torch.equal(z_m, z_o)
    assert torch.equal(
        torch.cat([g for _, g in model.calls]), torch.cat([g for _, g in oracle.calls])
    )


def test_self_calibration_is_exact(tmp_path: Path) -> None:
    """The oracle calibrated against itself through the same code: bias 0, slope 1, r 1, equal
    accuracies, IoU 1, in every section."""
    cfg = tiny_cfg(tmp_path, sets=["shapes-relation", "shapes-winoground"])
    table, curves, _ = cal.calibrate(ShapesOracle(), ShapesOracle(), cfg, tmp_path)
    assert set(table["section"]) == {"mmse", "pointwise", "ranking", "localize", "intervene"}
    assert agreement_failures(table, 1e-9) == []
    pw = table[(table["section"] == "pointwise") & (table["reference"] == SAME_DRAWS)]
    spread = pw[pw["group"] == "contradicting"]  # the captions whose values differ by image
    assert len(spread) == 2 and ((spread["slope"] - 1).abs() < 1e-9).all()
    assert (spread["corr"] > 1 - 1e-12).all()
    ious = table[table["quantity"].str.startswith("IoU") & table["reference"].str.contains("same")]
    assert (ious["learned"] == 1.0).all()
    wide = curves.pivot_table(index=["item", "condition", "logsnr"], columns="model", values="mmse")
    assert (wide["learned"] == wide["exact"]).all()


def test_self_calibration_through_the_v_conversion(tmp_path: Path) -> None:
    """model=shapes-oracle-v (the oracle seen through the v-prediction conversion) calibrates
    to the oracle up to float32 rounding."""
    from infodecomp.experiments.config import ModelConfig
    from infodecomp.models.registry import load_model

    model = load_model(ModelConfig(name="shapes-oracle-v"), torch.device("cpu"), torch.float32)
    cfg = tiny_cfg(tmp_path, sections=["mmse", "pointwise", "ranking"], sets=["shapes-order"])
    table, _, _ = cal.calibrate(model, ShapesOracle(), cfg, tmp_path)
    assert agreement_failures(table, 1e-3) == []


@pytest.mark.parametrize("factor", [1.05, -1.0])
def test_an_injected_error_fails_the_control(tmp_path: Path, factor: float) -> None:
    """eps off by 5% (or its sign flipped) shows as slope != 1 or bias != 0 against the oracle."""
    cfg = tiny_cfg(tmp_path, sections=["mmse", "pointwise"])
    table, _, _ = cal.calibrate(Scaled(ShapesOracle(), factor), ShapesOracle(), cfg, tmp_path)
    failures = agreement_failures(table, 1e-3)
    assert failures
    io = table[
        (table["quantity"] == "i^o")
        & (table["group"] == "contradicting")
        & (table["reference"] == SAME_DRAWS)
    ].iloc[0]
    if factor == 1.05:  # i^o is quadratic in eps_hat: exactly 1.05^2 of the oracle's
        assert io["slope"] == pytest.approx(1.05**2, rel=1e-4)
    loss = table[table["quantity"].str.startswith("denoising loss")]
    assert (loss["bias"] > 0).all()  # the oracle's is the minimum: any error adds to it


def test_calibrate_end_to_end_on_the_untrained_model(tmp_path: Path) -> None:
    """`infodecomp calibrate model=shapes-learned-random` with tiny sizes writes the run
    directory: table, curves, maps, meta and summary."""
    from infodecomp.experiments.config import ModelConfig

    cfg = tiny_cfg(tmp_path, sets=["shapes-relation"])
    cfg.model = ModelConfig(name="shapes-learned-random")
    out = cal.run(cfg)
    table = pd.read_csv(out / "calibration.csv")
    assert list(table.columns) == list(CALIBRATION_COLUMNS)
    assert set(table["section"]) == {"mmse", "pointwise", "ranking", "localize", "intervene"}
    assert table["learned"].notna().sum() > 0.8 * len(table)
    assert (table["quantity"] == "IoU of supports (> 5% of max), attention (DAAM)").any()
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["model"]) == {"learned", "exact"}
    assert set(curves["condition"]) == {"conditional", "unconditional"}
    assert len(list((out / "figures").glob("maps-*.png"))) == 1
    meta = json.loads((out / "meta.json").read_text())
    assert (
        meta["command"] == "calibrate"
        and meta["config"]["model"]["name"] == "shapes-learned-random"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert any(k.startswith("calibrate/pointwise/") for k in summary)


def test_an_rgb_model_is_refused_in_one_line(tmp_path: Path) -> None:
    from infodecomp.experiments.errors import ConfigError

    class Rgb:  # an image model that is not trained on ShapesWorld pixels
        image_size = 16

        def preview(self, image): ...
        def decode_latents(self, latents): ...
        def mask_transform(self, mask, size=None): ...
        def upsample_map(self, heat, size): ...

    cfg = tiny_cfg(tmp_path)
    with pytest.raises(ConfigError, match="takes RGB images"):
        cal.check_model(Rgb(), cfg, 0.25)


def test_bad_sections_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="sections="):
        CalibrateConfig(sections=["nope"])
    with pytest.raises(ValueError, match="sets="):
        replace(CalibrateConfig(), sets=["shapes-localize"])


def test_aggregate_and_report_show_the_calibration(tmp_path: Path) -> None:
    """A calibrate run directory becomes the calibration table (aggregate) and a report
    section with the MMSE curves and the side-by-side maps."""
    from infodecomp.reporting.aggregate import aggregate
    from infodecomp.reporting.html import write_report

    cfg = tiny_cfg(tmp_path / "run", sections=["mmse", "localize"])
    cfg.run.out_dir = None
    out = tmp_path / "run"
    out.mkdir()
    table, curves, n = cal.calibrate(ShapesOracle(), ShapesOracle(), cfg, out)
    table.to_csv(out / "calibration.csv", index=False)
    curves.to_csv(out / "curves.csv", index=False)
    from infodecomp.reporting.meta import write_meta

    write_meta(out, {"model": {"name": "shapes-oracle"}, "estimator": {"n_samples": 6}},
               device="cpu", dtype="float32", seed=0, wall_time_s=1.0, items_done=n,
               items_skipped=0, command="calibrate")  # fmt: skip
    tables = aggregate([out], tmp_path / "tables")
    got = tables["calibration"]
    assert set(got["section"]) == {"mmse", "localize"}
    assert (got["setting"] == "shapes-oracle, 6 samples, seed 0").all()
    assert (tmp_path / "tables" / "calibration.tex").is_file()
    index = write_report([out], tmp_path / "report")
    html = index.read_text()
    assert 'id="calibration"' in html and "calibration-run-mmse.png" in html
    assert (tmp_path / "report" / "figures" / "calibration-run-mmse.png").is_file()
    assert list((tmp_path / "report" / "assets" / "run").glob("maps-*.png"))

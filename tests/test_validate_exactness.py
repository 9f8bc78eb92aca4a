"""`infodecomp validate` can fail: under an injected error in the importance weight, the sign of
i^s or the factor 1/2, the exact checks fail; without one they pass. Also the closed forms the
Gaussian checks rest on."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from infodecomp.estimators import engine
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.commands import validate
from infodecomp.experiments.config import ValidateConfig
from infodecomp.models.oracles.exact import GaussianOracle, ShapesOracle

ORIGINAL_WEIGHT = LogsnrSampler.weight
# the engine's reduction of one item's predictions into its ItemEstimate
ORIGINAL_RESULT = engine._ItemAccumulator.result


def _small() -> ValidateConfig:
    """A reduced validate (about a quarter of the default cost): rows too imprecise for the
    relative criterion fall back to z-tests by themselves, so it passes on the correct engine."""
    cfg = ValidateConfig()
    cfg.n_items, cfg.pointwise_samples = 40, 500
    cfg.word_images, cfg.map_samples, cfg.paper_samples = 1, 500, 500
    return cfg


def _checks() -> pd.DataFrame:
    return pd.DataFrame(validate.oracle_checks(_small(), ShapesOracle()))


def _scaled_weight(factor: float):
    def weight(self, logsnr):
        return factor * ORIGINAL_WEIGHT(self, logsnr)

    return weight


def _flipped_is(self):
    e = ORIGINAL_RESULT(self)
    return replace(e, is_=-e.is_, is_map=None if e.is_map is None else -e.is_map)


def _no_half(self):
    """Every per-sample integrand doubled: the reducer forgot the 1/2 of eq. 3-6."""
    e = ORIGINAL_RESULT(self)
    twice = lambda t: None if t is None else 2 * t  # noqa: E731
    return replace(
        e,
        mse=2 * e.mse,
        mse_gauss=2 * e.mse_gauss,
        io=2 * e.io,
        is_=2 * e.is_,
        io_map=twice(e.io_map),
        is_map=twice(e.is_map),
    )


def test_small_validate_passes_on_the_correct_engine() -> None:
    rows = _checks()
    failed = rows[~rows["passed"]]
    assert failed.empty, failed.to_string()
    for prefix in ("1 ", "1p ", "2 ", "3 ", "4 ", "5 ", "5b ", "6 ", "7 "):
        assert any(c.startswith(prefix) for c in rows["check"]), prefix


@pytest.mark.parametrize(
    ("injection", "must_fail"),
    [
        ("weight x0.95", ("1 gaussian", "1p gaussian, paper sampler", "2 shapes pointwise")),
        ("weight x1.05", ("1 gaussian", "1p gaussian, paper sampler", "2 shapes pointwise")),
        ("i^s sign", ("1 gaussian", "2 shapes pointwise", "7 word CMI, paper sampler")),
        ("dropped 1/2", ("1 gaussian", "3 shapes average", "5 word CMI maps")),
    ],
)
def test_validate_fails_under_an_injected_error(
    injection: str, must_fail: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    if injection.startswith("weight"):
        monkeypatch.setattr(LogsnrSampler, "weight", _scaled_weight(float(injection[-4:])))
    else:
        reducer = _flipped_is if injection == "i^s sign" else _no_half
        monkeypatch.setattr(engine._ItemAccumulator, "result", reducer)
    rows = _checks()
    failed = rows[~rows["passed"]]
    assert not failed.empty, f"validate passed with {injection}"
    for check in must_fail:
        assert check in set(failed["check"]), (check, failed[["check", "quantity"]].to_string())
    if injection.startswith("weight"):
        # a 5% error fails the precise Gaussian rows by the relative criterion, not by luck
        gauss = failed[failed["check"] == "1 gaussian"]
        assert (gauss["criterion"].str.contains("rel < 3%") & (gauss["rel_error"] > 0.03)).any()


def test_gaussian_exact_pointwise_averages_to_the_mutual_information() -> None:
    """The closed-form pointwise i^o and i^s of the Gaussian checks average to I(X;Y) (the
    identity E i^o = E i^s = I), also on the paper's range."""
    oracle = GaussianOracle(seed=0)
    x, y = oracle.sample(20000, torch.Generator().manual_seed(5))
    io, is_ = validate.gaussian_pointwise_exact(oracle, x, y)
    for values in (io, is_):
        se = float(values.std()) / len(values) ** 0.5
        assert abs(float(values.mean()) - oracle.mutual_information()) < 4 * se
    torch.testing.assert_close(
        is_, oracle.log_prob(x, y) - oracle.log_prob(x), rtol=1e-6, atol=1e-6
    )
    io_p, is_p = validate.gaussian_pointwise_exact(oracle, x, y, -5.0, 7.0)
    target = oracle.mutual_information(-5.0, 7.0)
    for values in (io_p, is_p):
        se = float(values.std()) / len(values) ** 0.5
        assert abs(float(values.mean()) - target) < 4 * se
    assert (io >= 0).all() and float((io - io_p).min()) >= 0


@pytest.mark.skip(
    reason="unfinished: the true-caption pointwise rows (check 2: relative se 1.5-6%) and the "
    "paper-sampler word CMI totals (check 7: about 5%) are too imprecise for the 3% relative "
    "criterion within validate's one-minute budget, so they are z-tests (see the criterion "
    "column); they need variance reduction over eps (antithetic or quasi-random draws) or "
    "10-50x the samples"
)
def test_every_pointwise_and_word_row_has_the_relative_criterion() -> None:
    rows = pd.DataFrame(validate.oracle_checks(ValidateConfig(), ShapesOracle()))
    rows = rows[rows["check"].isin(["2 shapes pointwise", "7 word CMI, paper sampler"])]
    assert rows["criterion"].str.contains("rel < 3%").all()

"""`infodecomp validate` can fail: under an injected error in the importance weight, the sign of
i^s or the factor 1/2, the exact checks fail; without one they pass. Also the closed forms the
Gaussian checks rest on, and the four errors an earlier validate missed, kept as permanent
mutants: a wrong caption / context / word position in the commands' query builder, a shifted
continuous logsnr -> t rule, a wrong flow time and a 5% weight error of the paper's sampler
alone (which must fail a ShapesWorld row too)."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
import torch

from infodecomp.estimators import engine, queries
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.commands import validate
from infodecomp.experiments.config import ValidateConfig
from infodecomp.models.dynamics import conversions
from infodecomp.models.dynamics.schedule import ContinuousSchedule, DiscreteSchedule
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
    for prefix in ("1 ", "1p ", "2 ", "2p ", "3 ", "4 ", "5 ", "5b ", "6 ", "7 ", "8 "):
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


# ------------------------------------------------------- the four misses, as permanent mutants


def _mutate(monkeypatch: pytest.MonkeyPatch, fn, mutant) -> None:
    """A source-level mutant: `fn`'s code replaced in place (its module's globals kept), so every
    module that imported `fn` by name runs the mutant, as after an edit of its source."""
    monkeypatch.setattr(fn, "__code__", mutant.__code__)


def _failed(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    return table[~table["passed"]]


# Mutants of the commands' query builder (estimators.queries); names resolve in that module, and
# each keeps word_queries' signature (its defaults stay the original's).
def _wrong_caption(items, xs, blank, mi=True, mi_prompt="word", logsnr_keys=None, key_suffix=None):
    """The CMI's caption is another item's."""
    return [
        Query(  # noqa: F821
            xs[i].cpu(),
            (items[(i + 1) % len(items)].caption, context_of(it, blank),  # noqa: F821
             mi_prompt_of(it, mi_prompt), "")[: 4 if mi else 2],  # noqa: F821
            ((0, 1), (2, 3))[: 2 if mi else 1],
            key=str(it.item_id),
        )
        for i, it in enumerate(items)
    ]  # fmt: skip


def _wrong_context(items, xs, blank, mi=True, mi_prompt="word", logsnr_keys=None, key_suffix=None):
    """The context keeps the word (the caption in its place)."""
    return [
        Query(  # noqa: F821
            xs[i].cpu(),
            (it.caption, it.caption, mi_prompt_of(it, mi_prompt), "")[: 4 if mi else 2],  # noqa: F821
            ((0, 1), (2, 3))[: 2 if mi else 1],
            key=str(it.item_id),
        )
        for i, it in enumerate(items)
    ]  # fmt: skip


def _word_position(items, xs, blank, mi=True, mi_prompt="word", logsnr_keys=None, key_suffix=None):
    """The word and "" exchanged: MI = ("", word)."""
    return [
        Query(  # noqa: F821
            xs[i].cpu(),
            (it.caption, context_of(it, blank), "", mi_prompt_of(it, mi_prompt))[: 4 if mi else 2],  # noqa: F821
            ((0, 1), (2, 3))[: 2 if mi else 1],
            key=str(it.item_id),
        )
        for i, it in enumerate(items)
    ]  # fmt: skip


def _option_reversed(xs, options, keys, unconditional=True):  # contrast j = ("", option j)
    return [
        Query(xs[i].cpu(), (*opts, ""), tuple((len(opts), j) for j in range(len(opts))),  # noqa: F821
              key=keys[i])
        for i, opts in enumerate(options)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def word_setup():
    oracle = ShapesOracle()
    return oracle, validate.word_cases(oracle, 1, 0, 2**14)


def _query_rows(oracle, cases) -> list[dict]:
    rows, _ = validate.word_map_checks(oracle, cases, 400, 0, 1024)
    return rows + validate.shapes_pointwise(oracle, 300, 0, 1024)


def test_query_rows_pass_with_the_commands_builder(word_setup) -> None:
    failed = _failed(_query_rows(*word_setup))
    assert failed.empty, failed.to_string()


@pytest.mark.parametrize(
    ("mutant", "fn", "must_fail"),
    [
        (_wrong_caption, "word_queries", "5 word CMI maps"),
        (_wrong_context, "word_queries", "5 word CMI maps"),
        (_word_position, "word_queries", "5 word CMI maps"),
        (_option_reversed, "option_queries", "2 shapes pointwise"),
    ],
    ids=["wrong caption", "wrong context", "word position", "option contrast reversed"],
)
def test_a_wrong_query_in_the_commands_builder_fails_validate(
    mutant, fn: str, must_fail: str, word_setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Miss 1: validate runs its word and caption rows through estimators.queries, the builder
    localize, intervene, visualize, calibrate, aro and the API use."""
    _mutate(monkeypatch, getattr(queries, fn), mutant)
    failed = _failed(_query_rows(*word_setup))
    assert must_fail in set(failed["check"]), failed[["check", "quantity"]].to_string()
    if mutant is _word_position:  # the MI row of the word's own contrast catches it
        assert failed["quantity"].str.contains("MI i\\^s").any()


def _conversion_failures(model=None) -> pd.DataFrame:
    cfg = ValidateConfig()
    cfg.n_items = 40
    return _failed(validate._conversion_checks(cfg, model or ShapesOracle()))


ORIGINAL_TIMESTEP = DiscreteSchedule.timestep


def _shifted_continuous(self, logsnr, rule="nearest"):
    """The continuous logsnr -> t rule shifted by a quarter timestep."""
    t = ORIGINAL_TIMESTEP(self, logsnr, rule)
    return t + 0.25 if rule == "continuous" else t


def _shifted_nearest(self, logsnr, rule="nearest"):
    """The nearest rule one timestep off."""
    t = ORIGINAL_TIMESTEP(self, logsnr, rule)
    return (t + 1).clamp(max=self.num_train_timesteps - 1) if rule == "nearest" else t


def test_every_conversion_passes_by_default() -> None:
    failed = _conversion_failures()
    assert failed.empty, failed.to_string()


def test_a_shifted_continuous_time_rule_fails_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Miss 2: by default (no model named) and for a continuous-rule model."""
    monkeypatch.setattr(DiscreteSchedule, "timestep", _shifted_continuous)
    failed = _conversion_failures()
    assert failed["quantity"].str.contains("eps, continuous t").any(), failed.to_string()
    assert not failed["quantity"].str.contains("nearest t").any()


def test_a_shifted_continuous_schedule_fails_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ContinuousSchedule.timestep
    monkeypatch.setattr(
        ContinuousSchedule, "timestep", lambda self, lv, rule="continuous": original(self, lv) + 1
    )
    failed = _conversion_failures()
    assert failed["quantity"].str.contains("continuous schedule").any(), failed.to_string()


def test_validate_model_runs_the_models_own_time_rule(
    tiny_sd_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate model=tiny-sd` runs the conversion rows of tiny-sd's schedule and time rule:
    each rule passes as is and fails when shifted."""
    from infodecomp.models.families.sd import StableDiffusionDenoiser

    for rule, mutant in (("continuous", _shifted_continuous), ("nearest", _shifted_nearest)):
        model = StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu", time_rule=rule)
        assert _conversion_failures(model).empty
        with monkeypatch.context() as m:
            m.setattr(DiscreteSchedule, "timestep", mutant)
            failed = _conversion_failures(model)
        assert failed["quantity"].str.contains(f"eps, {rule} t").any(), (rule, failed)


def _flow_time_swapped(logsnr):  # mutant of conversions.flow_time: t and 1 - t exchanged
    lv = logsnr.detach().double()
    return torch.sigmoid(lv / 2), torch.sigmoid(-lv / 2)


def test_a_wrong_flow_time_fails_validate_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Miss 3: the flow conversion runs by default, not only with model=shapes-oracle-flow."""
    _mutate(monkeypatch, conversions.flow_time, _flow_time_swapped)
    failed = _conversion_failures()
    flow = failed[failed["quantity"].str.contains("flow, 1000 t")]
    assert flow["quantity"].str.contains("time input").any(), failed.to_string()
    assert flow["quantity"].str.contains("eps converted").any()


def _paper_only(factor: float):
    def weight(self, logsnr):
        w = ORIGINAL_WEIGHT(self, logsnr)
        paper = (self.kind, self.loc, self.scale, self.clip) == ("logistic", 1.0, 2.0, 3.0)
        return factor * w if paper else w

    return weight


@pytest.mark.parametrize("factor", [0.95, 1.05])
def test_a_paper_sampler_weight_error_fails_a_shapesworld_row(
    factor: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Miss 4: a 5% weight error of the paper's sampler alone fails the paper-sampler rows of
    the Gaussian pair and of ShapesWorld (2p: relative criterion, not chance)."""
    monkeypatch.setattr(LogsnrSampler, "weight", _paper_only(factor))
    failed = _checks().pipe(lambda t: t[~t["passed"]])
    checks = set(failed["check"])
    assert "1p gaussian, paper sampler" in checks, failed.to_string()
    shapes = failed[failed["check"] == "2p shapes pointwise, paper sampler"]
    assert (shapes["criterion"].str.contains("rel < 3%") & (shapes["rel_error"] > 0.03)).any()
    assert not checks & {"1 gaussian", "2 shapes pointwise", "3 shapes average"}

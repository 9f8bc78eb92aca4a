"""The channel in each family's variables (models/dynamics/conversions.py), the flow schedule, and the exact
oracles seen through the v and flow parametrisations (models/oracles/converted.py).

Every conversion is checked exactly on synthetic data, and each check is shown to fail when the
conversion is broken the way it could plausibly be (t for 1 - t, a missing scale, 1000 t for t).
"""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.estimators.channel import noisy_channel
from infodecomp.experiments.commands import validate
from infodecomp.models.capabilities import ExactLikelihood, ProbabilityFlow
from infodecomp.models.dynamics import conversions as conv
from infodecomp.models.dynamics.flow import FlowSchedule
from infodecomp.models.oracles import converted
from infodecomp.models.oracles.converted import ConvertedOracle
from infodecomp.models.oracles.exact import GaussianOracle, ShapesOracle

LOGSNR = torch.linspace(-12.0, 20.0, 33, dtype=torch.float64)


def _draw(shape=(33, 4, 5, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64), torch.randn(
        shape, generator=gen, dtype=torch.float64
    )


def test_flow_time_matches_the_snr_and_the_scale() -> None:
    t, one_minus_t = conv.flow_time(LOGSNR)
    assert torch.allclose(t + one_minus_t, torch.ones_like(t), atol=1e-15)
    # (1 - t)^2 / t^2 = exp(logsnr): the flow channel has the VP channel's signal-to-noise ratio
    assert torch.allclose(2 * (one_minus_t.log() - t.log()), LOGSNR, atol=1e-9)
    assert torch.allclose(conv.logsnr_of_flow_time(t), LOGSNR, atol=1e-8)
    x, eps = _draw()
    z_vp = noisy_channel(x, LOGSNR, eps)
    z_flow = (1 - t).view(-1, 1, 1, 1) * x + t.view(-1, 1, 1, 1) * eps
    assert torch.allclose(conv.vp_to_flow(z_vp, LOGSNR), z_flow, atol=1e-12)
    assert conv.flow_timestep(torch.tensor([0.0]), 1000.0).item() == pytest.approx(500.0)


def test_flow_to_eps_is_exact_for_the_true_velocity() -> None:
    x, eps = _draw()
    z_vp = noisy_channel(x, LOGSNR, eps)
    got = conv.flow_to_eps(eps - x, z_vp, LOGSNR)  # the velocity target v = eps - x
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), eps, atol=1e-5)


def test_v_to_eps_is_exact_for_the_true_v() -> None:
    x, eps = _draw()
    a, s = conv.alpha_sigma64(LOGSNR)
    v = a.view(-1, 1, 1, 1) * eps - s.view(-1, 1, 1, 1) * x
    z = noisy_channel(x, LOGSNR, eps)
    assert torch.allclose(conv.v_to_eps(v, z, LOGSNR).double(), eps, atol=1e-5)


@pytest.mark.parametrize("shift", [1.5, 3.0])
def test_a_schedule_shift_is_a_logsnr_translation(shift: float) -> None:
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    shifted = conv.shift_time(t, shift)
    assert torch.allclose(
        conv.logsnr_of_flow_time(shifted),
        conv.shift_logsnr(conv.logsnr_of_flow_time(t), shift=shift),
        atol=1e-10,
    )
    mu = math.log(shift)  # Flux's dynamic shift exp(mu) / (exp(mu) + 1/t - 1) with the same mu
    flux = math.exp(mu) / (math.exp(mu) + 1 / t - 1)
    assert torch.allclose(
        conv.logsnr_of_flow_time(flux),
        conv.shift_logsnr(conv.logsnr_of_flow_time(t), mu=mu),
        atol=1e-10,
    )
    with pytest.raises(ValueError, match="exactly one"):
        conv.shift_logsnr(t, shift=2.0, mu=0.1)


def test_flow_schedule_range_sigmas_and_warning() -> None:
    sched = FlowSchedule.from_config({"num_train_timesteps": 1000, "shift": 3.0})
    lo, hi = sched.trained_range
    assert lo == -math.inf and hi == pytest.approx(2 * math.log(999))
    assert sched.sigma_range == pytest.approx((1 / 999, 999.0))
    assert sched.shift == 3.0  # recorded, not used
    assert sched.logsnr_table[-1] == -math.inf and bool((sched.logsnr_table.diff() < 0).all())
    with pytest.warns(RuntimeWarning, match="finest trained level 13.81"):
        sched.warn_out_of_range(torch.tensor([0.0, 15.0]))
    sched.warn_out_of_range(torch.tensor([16.0]))  # once per schedule


# ------------------------------------------------------------------ oracles through conversions


@pytest.mark.parametrize("kind", ["v", "flow"])
@pytest.mark.parametrize("oracle_name", ["shapes", "gaussian"])
def test_converted_oracle_equals_the_oracle(kind: str, oracle_name: str) -> None:
    oracle = ShapesOracle() if oracle_name == "shapes" else GaussianOracle()
    wrapped = ConvertedOracle(oracle, kind)
    assert isinstance(wrapped, ExactLikelihood) and wrapped.world == oracle.world
    assert isinstance(wrapped, ProbabilityFlow) == isinstance(oracle, ProbabilityFlow)
    gen = torch.Generator().manual_seed(1)
    if oracle_name == "shapes":
        x = torch.stack([oracle.sample_scene(k, gen) for k in range(0, 33 * 26, 26)])
        cond = oracle.encode_conditions(["a red circle"] * 17 + [""] * 16)
    else:
        x, y = oracle.sample(33, gen)
        x = x.float()
        cond = oracle.encode_conditions([tuple(r.tolist()) for r in y[:17]] + [""] * 16)
    eps = torch.randn(x.shape, generator=gen)
    lv = LOGSNR.float()
    z = noisy_channel(x, lv, eps)
    ref = oracle.eps_hat(z, lv, cond)
    got = wrapped.eps_hat(z, lv, cond)
    assert got.dtype == z.dtype
    assert torch.allclose(got, ref, atol=2e-5, rtol=1e-5), float((got - ref).abs().max())


def _broken_flow(monkeypatch: pytest.MonkeyPatch, bug: str) -> None:
    """Breaks one piece of the flow conversion where the wrapper (and the adapters) call it."""
    good_time = conv.flow_timestep
    if bug == "t for 1 - t":

        def to_eps(v, z, logsnr):
            t, _ = conv.flow_time(logsnr)
            z_flow = conv.flow_scale(logsnr).view(-1, *[1] * (z.dim() - 1)) * z.double()
            return (z_flow + t.view(-1, *[1] * (z.dim() - 1)) * v.double()).float()

        monkeypatch.setattr(converted, "flow_to_eps", to_eps)
    elif bug == "no input scale":
        monkeypatch.setattr(converted, "vp_to_flow", lambda z, logsnr: z)
    else:
        monkeypatch.setattr(converted, "flow_timestep", lambda logsnr, scale: good_time(logsnr, 1))


@pytest.mark.parametrize("bug", ["t for 1 - t", "no input scale", "timestep not scaled"])
def test_a_broken_flow_conversion_fails_the_exact_check(
    bug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate's Gaussian check (i^o, i^s = I(X;Y), log p(x)) passes on the flow wrapper and
    fails with each plausible bug injected into the conversion it shares with the adapters."""
    wrapped = ConvertedOracle(GaussianOracle(), "flow")
    rows = validate.gaussian_checks(2000, 0, 8192, like=wrapped)
    assert all(r["passed"] for r in rows), rows
    _broken_flow(monkeypatch, bug)
    rows = validate.gaussian_checks(2000, 0, 8192, like=wrapped)
    assert not all(r["passed"] for r in rows), (bug, rows)


def test_a_broken_v_conversion_fails_the_exact_check(monkeypatch: pytest.MonkeyPatch) -> None:
    wrapped = ConvertedOracle(GaussianOracle(), "v")
    assert all(r["passed"] for r in validate.gaussian_checks(2000, 0, 8192, like=wrapped))

    def swapped(v, z, logsnr):  # eps = s v + a z: the coefficients exchanged
        lv = logsnr.to(torch.float32).view(-1, *[1] * (z.dim() - 1))
        return torch.sigmoid(-lv).sqrt() * v.float() + torch.sigmoid(lv).sqrt() * z.float()

    monkeypatch.setattr(converted, "v_to_eps", swapped)
    assert not all(r["passed"] for r in validate.gaussian_checks(2000, 0, 8192, like=wrapped))


def test_unknown_conversion_kind_is_one_line() -> None:
    with pytest.raises(ValueError, match="conversion kind 'x' is not one of: v, flow"):
        ConvertedOracle(GaussianOracle(), "x")

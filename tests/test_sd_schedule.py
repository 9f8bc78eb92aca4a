"""Discrete schedule in logsnr terms, time rules, v -> eps, and the DDPM samplers' math."""

from __future__ import annotations

import warnings

import pytest
import torch

from infodecomp.models.dynamics.schedule import DiscreteSchedule, betas_from_config, v_to_eps
from infodecomp.models.tiny.sd21_arch import SCHEDULER_CONFIG


@pytest.fixture(scope="module")
def sched() -> DiscreteSchedule:
    return DiscreteSchedule.from_config(SCHEDULER_CONFIG)


def test_sd_trained_range(sched: DiscreteSchedule) -> None:
    lo, hi = sched.trained_range
    assert lo == pytest.approx(-5.364, abs=1e-3)
    assert hi == pytest.approx(7.069, abs=1e-3)
    assert float(sched.alphas_cumprod[0]) == pytest.approx(0.99915, abs=1e-5)
    assert float(sched.alphas_cumprod[-1]) == pytest.approx(0.004660, abs=1e-5)
    assert torch.all(sched.logsnr_table[1:] < sched.logsnr_table[:-1])


def test_ddim_clean_level_follows_set_alpha_to_one(sched: DiscreteSchedule) -> None:
    # SD configs: set_alpha_to_one = false, so DDIM's clean end is abar_0 (diffusers' DDIM)
    assert sched.set_alpha_to_one is False
    assert sched.ddim_clean_logsnr == pytest.approx(7.069, abs=1e-3)
    assert sched.ddim_clean_logsnr == float(sched.logsnr_table[0])
    default = DiscreteSchedule.from_config(
        {k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"}
    )
    assert default.ddim_clean_logsnr == float("inf")  # DDIMScheduler's default: truly clean


def test_betas_kinds() -> None:
    lin = betas_from_config(
        {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 2e-2, "num_train_timesteps": 10}
    )
    assert torch.allclose(lin, torch.linspace(1e-4, 2e-2, 10, dtype=torch.float64))
    sl = betas_from_config(SCHEDULER_CONFIG)
    assert float(sl[0]) == pytest.approx(0.00085) and float(sl[-1]) == pytest.approx(0.012)
    with pytest.raises(ValueError, match="beta_schedule 'cosine'"):
        betas_from_config({"beta_schedule": "cosine"})


def test_integer_timesteps_round_trip_under_both_rules(sched: DiscreteSchedule) -> None:
    t = torch.arange(0, 1000, 7, dtype=torch.float64)
    lv = sched.logsnr_at(t)
    assert torch.equal(lv, sched.logsnr_table[t.long()])
    assert torch.equal(sched.timestep(lv, "nearest"), t)
    assert torch.allclose(sched.timestep(lv, "continuous"), t, atol=1e-9)


def test_continuous_logsnr_round_trip_and_nearest_rule(sched: DiscreteSchedule) -> None:
    lv = torch.linspace(-5.3, 7.0, 257, dtype=torch.float64)
    t = sched.timestep(lv, "continuous")
    assert torch.allclose(sched.logsnr_at(t), lv, atol=1e-10)
    assert torch.all(t[1:] < t[:-1])  # higher logsnr, earlier timestep
    nearest = sched.timestep(lv, "nearest").long()
    brute = (sched.logsnr_table[None] - lv[:, None]).abs().argmin(1)
    assert torch.equal(nearest, brute)
    assert torch.all((t - nearest).abs() <= 1.0)


def test_out_of_range_clamps_and_warns_once() -> None:
    sched = DiscreteSchedule.from_config(SCHEDULER_CONFIG)
    lv = torch.tensor([-9.0, 0.0, 12.0])
    assert sched.out_of_range(lv) == 2
    assert sched.timestep(lv, "continuous")[[0, 2]].tolist() == [999.0, 0.0]
    assert sched.timestep(lv, "nearest")[[0, 2]].tolist() == [999.0, 0.0]
    with pytest.warns(RuntimeWarning, match="2 of 3 logsnr values lie outside"):
        sched.warn_out_of_range(lv)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.warn_out_of_range(lv)  # second time: silent
    fresh = DiscreteSchedule.from_config(SCHEDULER_CONFIG)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.warn_out_of_range(torch.tensor([0.0, 5.0]))  # in range: silent


def test_v_to_eps_exact_on_synthetic_data() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, 8, 8, generator=gen)
    eps = torch.randn(16, 4, 8, 8, generator=gen)
    logsnr = torch.linspace(-6, 8, 16)
    a = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1)
    s = torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1)
    z, v = a * x + s * eps, a * eps - s * x
    assert torch.allclose(v_to_eps(v, z, logsnr), eps, atol=1e-5)
    # the timestep's logsnr (nearest rule) is not the channel's: the identity would break
    wrong = v_to_eps(v, z, logsnr + 0.3)
    assert (wrong - eps).abs().max() > 1e-2


def test_rejects_unknown_prediction_type_and_rule(sched: DiscreteSchedule) -> None:
    with pytest.raises(ValueError, match="sample"):
        DiscreteSchedule(sched.betas, "sample")
    with pytest.raises(ValueError, match="time rule 'round'"):
        sched.timestep(torch.zeros(2), "round")

"""logsnr samplers: support, exact importance weights, integrals, strata, stderr calibration."""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.estimators.channel import alpha_sigma, noisy_channel
from infodecomp.estimators.samplers import MODES, LogsnrSampler

KINDS = {
    "logistic": dict(kind="logistic", loc=1.0, scale=2.0, clip=3.0),
    "uniform": dict(kind="uniform", low=-5.0, high=7.0),
}


def _normal_mass(lo: float, hi: float, mu: float = 0.5, sd: float = 2.5) -> float:
    cdf = lambda v: 0.5 * (1 + math.erf((v - mu) / (sd * math.sqrt(2))))  # noqa: E731
    return cdf(hi) - cdf(lo)


def _normal_pdf(x: torch.Tensor, mu: float = 0.5, sd: float = 2.5) -> torch.Tensor:
    return torch.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _logistic_cdf(s: LogsnrSampler, logsnr: torch.Tensor) -> torch.Tensor:
    """CDF of the truncated logistic, written independently of the sampler's quantile."""
    lo, hi = (
        torch.sigmoid(torch.tensor(-s.clip, dtype=torch.float64)),
        torch.sigmoid(torch.tensor(s.clip, dtype=torch.float64)),
    )
    return (torch.sigmoid((logsnr - s.loc) / s.scale) - lo) / (hi - lo)


@pytest.mark.parametrize("loc,scale,clip", [(1.0, 2.0, 3.0), (-0.5, 0.7, 6.0), (2.0, 3.0, 0.5)])
def test_logistic_quantile_stays_in_support(loc: float, scale: float, clip: float) -> None:
    s = LogsnrSampler(loc=loc, scale=scale, clip=clip)
    t = torch.cat(
        [
            torch.tensor([0.0, 1.0]),
            torch.rand(5000, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
        ]
    )
    q = s.quantile(t.double())
    lo, hi = loc - scale * clip, loc + scale * clip
    assert s.support == pytest.approx((lo, hi))
    assert float(q.min()) >= lo - 1e-9 and float(q.max()) <= hi + 1e-9
    assert float(q[0]) == pytest.approx(lo, abs=1e-9) and float(q[1]) == pytest.approx(hi, abs=1e-9)
    for mode in MODES:  # every mode's draws map into the support
        logsnr, _ = LogsnrSampler(loc=loc, scale=scale, clip=clip, mode=mode).sample(
            101, torch.Generator().manual_seed(1)
        )
        assert float(logsnr.min()) >= lo - 1e-9 and float(logsnr.max()) <= hi + 1e-9


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_weight_is_inverse_density(kind: str) -> None:
    s = LogsnrSampler(**KINDS[kind])
    t = torch.linspace(0.01, 0.99, 57, dtype=torch.float64)
    h = 1e-6
    dq_dt = (s.quantile(t + h) - s.quantile(t - h)) / (2 * h)  # = 1 / q(logsnr)
    logsnr = s.quantile(t)
    torch.testing.assert_close(s.weight(logsnr), dq_dt, rtol=1e-6, atol=0)
    if kind == "logistic":  # and from the CDF directly: density = dCDF / dlogsnr
        dens = (_logistic_cdf(s, logsnr + h) - _logistic_cdf(s, logsnr - h)) / (2 * h)
        torch.testing.assert_close(s.weight(logsnr), 1 / dens, rtol=1e-6, atol=0)
        torch.testing.assert_close(_logistic_cdf(s, logsnr), t, rtol=0, atol=1e-12)


def test_uniform_weight_is_the_interval_length_not_the_density() -> None:
    s = LogsnrSampler(kind="uniform", low=-3.0, high=9.0)
    logsnr, weight = s.sample(50, torch.Generator().manual_seed(0))
    assert torch.all(weight == 12.0)  # (high - low); 1 / 12 would be the published-code pitfall
    assert float(logsnr.min()) >= -3.0 and float(logsnr.max()) <= 9.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_weighted_mean_integrates_known_functions(kind: str, mode: str) -> None:
    s = LogsnrSampler(**KINDS[kind], mode=mode)
    lo, hi = s.support
    n = 4000 if mode == "quadrature" else 20000
    logsnr, w = s.sample(n, torch.Generator().manual_seed(3))
    cases = {
        "length": (torch.ones_like(logsnr), hi - lo),
        "gauss": (_normal_pdf(logsnr), _normal_mass(lo, hi)),
        "linear": (logsnr, 0.5 * (hi**2 - lo**2)),
    }
    for name, (f, exact) in cases.items():
        mean, se = s.mean_and_stderr(w * f)
        tol = (
            1e-4 * max(1.0, abs(exact))
            if mode == "quadrature"
            else 5 * float(se) + 1e-9 * abs(exact)
        )
        assert abs(float(mean) - exact) <= tol, (name, float(mean), exact, float(se))


def test_stratified_has_one_point_per_stratum() -> None:
    for n in (1, 7, 64):
        t = LogsnrSampler(mode="stratified").points(n, torch.Generator().manual_seed(n))
        assert torch.equal(torch.floor(t * n).long(), torch.arange(n))


@pytest.mark.parametrize("n", [2, 10, 64])
def test_antithetic_pairs_sum_to_one(n: int) -> None:
    s = LogsnrSampler(mode="antithetic")
    t = s.points(n, torch.Generator().manual_seed(0))
    half = n // 2
    torch.testing.assert_close(
        t[:half] + t[half:], torch.ones(half, dtype=torch.float64), rtol=0, atol=1e-15
    )
    # the first half is stratified over [0, 1/2): one point per stratum
    assert torch.equal(torch.floor(t[:half] * 2 * half).long(), torch.arange(half))
    logsnr = s.quantile(t)  # the logistic is symmetric about loc, so mirrored logsnr pairs too
    torch.testing.assert_close(
        logsnr[:half] + logsnr[half:], torch.full((half,), 2 * s.loc, dtype=torch.float64)
    )


@pytest.mark.parametrize("n", [1, 3, 5])
def test_antithetic_odd_n_is_unbiased(n: int) -> None:
    """Odd n used to drop the mirror of the last stratum, biasing the mean (n=1: t always < 1/2)."""
    s = LogsnrSampler(kind="uniform", low=0.0, high=1.0, mode="antithetic")
    gen = torch.Generator().manual_seed(0)
    t = torch.stack([s.points(n, gen) for _ in range(4000)])  # [reps, n]
    means, _ = s.mean_and_stderr(s.weight(s.quantile(t)) * s.quantile(t))
    # E[mean of t] must be 1/2; the old scheme gave 0.25 (n=1), 0.458 (n=3), 0.483 (n=5)
    assert abs(float(means.mean()) - 0.5) < 5 * float(means.std()) / math.sqrt(len(means))


def test_quadrature_is_deterministic_midpoints() -> None:
    s = LogsnrSampler(mode="quadrature")
    a = s.points(8, torch.Generator().manual_seed(0))
    b = s.points(8, torch.Generator().manual_seed(99))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, (torch.arange(8, dtype=torch.float64) + 0.5) / 8)


def test_random_modes_follow_the_generator() -> None:
    for mode in ("iid", "stratified", "antithetic"):
        s = LogsnrSampler(mode=mode)
        a = s.sample(16, torch.Generator().manual_seed(5))[0]
        b = s.sample(16, torch.Generator().manual_seed(5))[0]
        c = s.sample(16, torch.Generator().manual_seed(6))[0]
        assert torch.equal(a, b) and not torch.equal(a, c)


def _repeat(s: LogsnrSampler, n: int, reps: int, noise: float) -> tuple[float, float]:
    """(empirical std of the mean, mean reported stderr) over `reps` independent estimates."""
    gen = torch.Generator().manual_seed(11)
    t = torch.stack([s.points(n, gen) for _ in range(reps)])  # [reps, n]
    logsnr = s.quantile(t)
    f = _normal_pdf(logsnr) + noise * torch.randn(t.shape, generator=gen, dtype=torch.float64)
    means, ses = s.mean_and_stderr(s.weight(logsnr) * f)  # [reps] each
    return float(means.std()), float(ses.mean())


@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_iid_stderr_is_calibrated(noise: float) -> None:
    emp, rep = _repeat(LogsnrSampler(mode="iid"), 40, 600, noise)
    assert 1 / 1.5 < rep / emp < 1.5, (rep, emp)


@pytest.mark.parametrize("mode", ["stratified", "antithetic"])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_stratified_stderr_is_not_optimistic(mode: str, noise: float) -> None:
    emp, rep = _repeat(LogsnrSampler(mode=mode), 40, 600, noise)
    assert rep >= 0.7 * emp, (rep, emp)


def test_stderr_batches_over_leading_axes() -> None:
    s = LogsnrSampler(mode="stratified")
    v = torch.randn(3, 5, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, se = s.mean_and_stderr(v)
    assert mean.shape == se.shape == (3, 5)
    m1, se1 = s.mean_and_stderr(v[1, 2])
    assert float(mean[1, 2]) == pytest.approx(float(m1)) and float(se[1, 2]) == pytest.approx(
        float(se1)
    )
    _, se_one = s.mean_and_stderr(v[..., :1])  # one sample: no error estimate, not zero
    assert torch.isinf(se_one).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kind="gamma"), "sampler kind 'gamma'"),
        (dict(mode="sobol"), "sampler mode 'sobol'"),
        (dict(scale=0.0), "scale > 0"),
        (dict(clip=-1.0), "clip > 0"),
        (dict(kind="uniform", low=2.0, high=2.0), "high > low"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LogsnrSampler(**kwargs)


def test_bad_sample_count_and_unknown_keys_raise() -> None:
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        LogsnrSampler().sample(0)
    with pytest.raises(TypeError, match="gamma"):
        LogsnrSampler("logistic", gamma=1.0)  # type: ignore[call-arg]
    s = LogsnrSampler("uniform", low=-1, high=3, mode="stratified")
    assert (s.kind, s.mode, s.support) == ("uniform", "stratified", (-1.0, 3.0))


def test_channel_scales() -> None:
    logsnr = torch.linspace(-12, 12, 25, dtype=torch.float64)
    a, s = alpha_sigma(logsnr)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(logsnr))
    torch.testing.assert_close(torch.log(a**2 / s**2), logsnr)
    x = torch.randn(25, 2, 3, dtype=torch.float64)
    eps = torch.randn(25, 2, 3, dtype=torch.float64)
    z = noisy_channel(x, logsnr, eps)
    torch.testing.assert_close(z, a.view(-1, 1, 1) * x + s.view(-1, 1, 1) * eps)

"""Exact oracles against independent closed forms and brute force."""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.models.oracles.exact import GaussianOracle, ShapesOracle
from infodecomp.worlds import shapes as world


@pytest.fixture(scope="module")
def shapes() -> ShapesOracle:
    return ShapesOracle()


def _xhat_gaussian(
    z: torch.Tensor, a: torch.Tensor, s: torch.Tensor, m: torch.Tensor, cov: torch.Tensor
) -> torch.Tensor:
    """E[x | z] for x ~ N(m, cov), z = a x + s eps, via a linear solve (textbook form)."""
    d = cov.shape[0]
    out = []
    for i in range(z.shape[0]):
        cz = a[i] ** 2 * cov + s[i] ** 2 * torch.eye(d, dtype=torch.float64)  # Cov(z)
        out.append(m[i] + a[i] * cov @ torch.linalg.solve(cz, z[i] - a[i] * m[i]))
    return torch.stack(out)


@pytest.mark.parametrize("logsnr", [-4.0, 0.0, 2.5, 6.0])
def test_gaussian_eps_hat_matches_closed_form(logsnr: float) -> None:
    o = GaussianOracle(dx=6, dy=3, seed=4)
    gen = torch.Generator().manual_seed(1)
    b = 5
    z = torch.randn(b, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(b, 3, generator=gen, dtype=torch.float64)
    ls = torch.full((b,), logsnr, dtype=torch.float64)
    a, s = torch.sigmoid(ls).sqrt(), torch.sigmoid(-ls).sqrt()
    # conditional: E[x|y] and Cov(x|y) from the joint covariance by solves, not from the oracle
    cov = o.cov
    sxx, sxy, syy = cov[:6, :6], cov[:6, 6:], cov[6:, 6:]
    m_cond = torch.linalg.solve(syy, y.T).T @ sxy.T  # [b, 6]
    cov_cond = sxx - sxy @ torch.linalg.solve(syy, sxy.T)
    cond = o.encode_conditions([tuple(r.tolist()) for r in y] + ["", None])  # [b + 2, 1 + dy]
    # mix conditional and unconditional rows in one batch
    zz = torch.cat([z, z[:2]])
    lss = torch.cat([ls, ls[:2]])
    got = o.eps_hat(zz, lss, cond)
    want_c = (z - a[:, None] * _xhat_gaussian(z, a, s, m_cond, cov_cond)) / s[:, None]
    zero = torch.zeros(2, 6, dtype=torch.float64)
    want_u = (z[:2] - a[:2, None] * _xhat_gaussian(z[:2], a[:2], s[:2], zero, sxx)) / s[:2, None]
    torch.testing.assert_close(got[:b], want_c, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(got[b:], want_u, rtol=1e-8, atol=1e-8)


def test_gaussian_mutual_information_and_log_prob() -> None:
    o = GaussianOracle(dx=8, dy=4, seed=0)
    cov = o.cov
    sxx, syy = cov[:8, :8], cov[8:, 8:]
    # I(X;Y) = 1/2 [log det Sxx + log det Syy - log det S]: an identity independent of Cov(x|y)
    want = 0.5 * float(torch.logdet(sxx) + torch.logdet(syy) - torch.logdet(cov))
    assert o.mutual_information() == pytest.approx(want, rel=1e-9)
    assert o.mutual_information() > 0.05
    assert GaussianOracle(seed=0, coupling=0.0).mutual_information() == pytest.approx(0.0, abs=1e-9)
    x, y = o.sample(4, torch.Generator().manual_seed(0))
    joint = torch.distributions.MultivariateNormal(torch.zeros(12, dtype=torch.float64), cov)
    marg_y = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), syy)
    torch.testing.assert_close(
        o.log_prob(x, y), joint.log_prob(torch.cat([x, y], 1)) - marg_y.log_prob(y)
    )
    with pytest.raises(ValueError, match="must have 4 entries"):
        o.encode_conditions([(1.0, 2.0)])


def _brute_eps_hat(
    o: ShapesOracle, z: torch.Tensor, logsnr: torch.Tensor, members: torch.Tensor
) -> torch.Tensor:
    """Posterior over the allowed scenes from explicit Gaussian densities N(z; a m_k, v I)."""
    zf = z.double().flatten(1)  # [B, D]
    a2 = torch.sigmoid(logsnr.double())
    a, s = a2.sqrt(), torch.sigmoid(-logsnr.double()).sqrt()
    v = a2 * o.sigma0**2 + s**2  # [B]
    means = o.means[members]  # [M, D]
    out = []
    for i in range(zf.shape[0]):
        dens = torch.distributions.Normal(a[i] * means, v[i].sqrt()).log_prob(zf[i]).sum(-1)  # [M]
        post = torch.softmax(dens, 0)
        xbar = post @ means
        out.append(s[i] * (zf[i] - a[i] * xbar) / v[i])
    return torch.stack(out).view_as(z)


@pytest.mark.parametrize(
    "caption", ["", "a red circle", "a red circle above a blue square", "a _ and a green triangle"]
)
def test_shapes_conditional_equals_restricted_brute_force(
    shapes: ShapesOracle, caption: str
) -> None:
    gen = torch.Generator().manual_seed(3)
    b = 4
    x = torch.stack([shapes.sample_scene(k, gen) for k in (0, 100, 400, 800)]).double()
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    logsnr = torch.tensor([-3.0, 0.0, 2.0, 5.0], dtype=torch.float64)
    a, s = torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()
    z = a.view(-1, 1, 1, 1) * x + s.view(-1, 1, 1, 1) * eps
    got = shapes.eps_hat(z, logsnr, shapes.encode_conditions([caption] * b))
    want = _brute_eps_hat(shapes, z, logsnr, world.scene_set(caption))
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_shapes_high_snr_is_the_single_scene_gaussian(shapes: ShapesOracle) -> None:
    """At high logsnr the posterior sits on the true scene: eps_hat = s (z - a m_k) / v."""
    gen = torch.Generator().manual_seed(0)
    ks = (7, 250, 777)
    x = torch.stack([shapes.sample_scene(k, gen) for k in ks]).double()
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    logsnr = torch.full((3,), 12.0, dtype=torch.float64)
    a, s = math.sqrt(torch.sigmoid(logsnr[0])), math.sqrt(torch.sigmoid(-logsnr[0]))
    z = a * x + s * eps
    got = shapes.eps_hat(z, logsnr, shapes.encode_conditions(["", "", ""]))
    v = a**2 * shapes.sigma0**2 + s**2
    m = shapes.means[list(ks)].view_as(x)
    torch.testing.assert_close(got, s * (z - a * m) / v, rtol=1e-9, atol=1e-12)
    # the noise is then nearly unpredictable: the error is almost all of ||eps||^2
    assert float(got.square().sum() / eps.square().sum()) < 1e-3


def test_shapes_low_snr_is_the_mixture_mean(shapes: ShapesOracle) -> None:
    """At low logsnr eps_hat ~ s z and the implied E[x|z] tends to the caption's mixture mean."""
    gen = torch.Generator().manual_seed(1)
    x = torch.stack([shapes.sample_scene(k, gen) for k in (3, 500)]).double()
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    logsnr = torch.full((2,), -20.0, dtype=torch.float64)
    a, s = math.sqrt(torch.sigmoid(logsnr[0])), math.sqrt(torch.sigmoid(-logsnr[0]))
    z = a * x + s * eps
    for caption in ("", "a blue triangle"):
        got = shapes.eps_hat(z, logsnr, shapes.encode_conditions([caption] * 2))
        assert float((got - s * z).norm() / (s * z).norm()) < 1e-3
        v = a**2 * shapes.sigma0**2 + s**2
        xbar = (z - got * v / s) / a  # invert eps_hat = s (z - a xbar) / v
        mix = shapes.means[world.scene_set(caption)].mean(0).view(3, 16, 16)
        assert float((xbar - mix).abs().max()) < 1e-2
    other = shapes.means[world.scene_set("a blue triangle")].mean(0) - shapes.means.mean(0)
    assert float(other.abs().max()) > 0.1  # the two mixture means differ, so the check has teeth


def test_shapes_log_prob_is_the_mixture_density(shapes: ShapesOracle) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.stack([shapes.sample_scene(k, gen) for k in (10, 420)])
    comp = torch.distributions.Normal(shapes.means, shapes.sigma0)  # [K, D]
    logs = torch.stack([comp.log_prob(xi.double().flatten()).sum(-1) for xi in x])  # [N, K]
    k = len(world.scenes())
    torch.testing.assert_close(shapes.log_prob(x, ""), torch.logsumexp(logs, -1) - math.log(k))
    members = world.scene_set("a red circle")
    want = torch.logsumexp(logs[:, members], -1) - math.log(int(members.sum()))
    torch.testing.assert_close(shapes.log_prob(x, "a red circle"), want)


def test_shapes_condition_encodings_are_cached(shapes: ShapesOracle) -> None:
    o = ShapesOracle()
    i1 = o.encode_conditions(["", "a red circle", ""])
    i2 = o.encode_conditions(["a red circle", None])
    assert i1.tolist() == [0, 1, 0] and i2.tolist() == [1, 0]
    assert o.condition_encodes == 2
    with pytest.raises(ValueError, match="'purple'"):
        o.encode_conditions(["a purple circle"])


def test_gaussian_mutual_information_on_a_logsnr_range() -> None:
    """The range-restricted I(X;Y) against a direct quadrature of 1/2 (mmse_x - mmse_x|y)."""
    o = GaussianOracle(seed=0)
    lam_x = torch.linalg.eigvalsh(o.cov_x)
    lam_xy = torch.linalg.eigvalsh(o.cov_x_given_y)
    g = torch.linspace(-5.0, 7.0, 120001, dtype=torch.float64)
    gap = torch.sigmoid(g[:, None] + lam_x.log()).sum(-1) - torch.sigmoid(
        g[:, None] + lam_xy.log()
    ).sum(-1)
    want = 0.5 * float(torch.trapezoid(gap, g))
    assert o.mutual_information(-5.0, 7.0) == pytest.approx(want, rel=1e-8)
    full = o.mutual_information()
    assert o.mutual_information(None, None) == full
    assert o.mutual_information(-math.inf, 1.0) + o.mutual_information(1.0, math.inf) == (
        pytest.approx(full, rel=1e-12)
    )
    assert 0 < o.mutual_information(-5.0, 7.0) < full


@pytest.fixture(scope="module")
def colour_case(shapes: ShapesOracle):
    gen = torch.Generator().manual_seed(4)
    k = next(
        i
        for i, (a, b) in enumerate(world.scenes())
        if world.relation_between(a, b) == "above" and a.colour != b.colour and a.shape != b.shape
    )
    a, b = world.scenes()[k]
    x = shapes.sample_scene(k, gen)
    caption = f"a {a.colour} {a.shape} above a {b.colour} {b.shape}"
    context = f"a {a.shape} above a {b.colour} {b.shape}"
    return x, caption, context, shapes.exact_info(x, caption, context, n_draws=2**14, seed=1)


def test_exact_info_i_s_equals_the_log_density_ratio(shapes: ShapesOracle, colour_case) -> None:
    """Over the full logsnr range, the quadrature of the exact i^s integrand is
    log p(x | caption) - log p(x | context), computed independently from the mixture density."""
    x, caption, context, ex = colour_case
    want = float(shapes.log_prob(x[None], caption) - shapes.log_prob(x[None], context))
    value, se = ex.total("is")
    assert 0 < se < 0.06
    assert abs(value - want) < 4 * se
    io, io_se = ex.total("io")
    assert io > 0 and io_se > 0


def test_exact_info_ranges_and_map(colour_case) -> None:
    _, _, _, ex = colour_case
    total = ex.total("io")[0]
    parts = ex.total("io", -math.inf, -5)[0] + ex.total("io", -5, 7)[0] + ex.total("io", 7)[0]
    assert parts == pytest.approx(total, rel=1e-12)
    assert float(ex.map().sum()) == pytest.approx(total, rel=1e-9)
    assert float(ex.map(-5, 7).sum()) == pytest.approx(ex.total("io", -5, 7)[0], rel=1e-9)
    assert (ex.map() >= 0).all()
    # a colour word's information sits where the context's scenes differ: never on the margins
    never = torch.ones(world.CANVAS, world.CANVAS, dtype=torch.bool)
    for s in world.scenes():
        never &= ~(world.object_mask(s[0]) | world.object_mask(s[1]))
    assert float(ex.map()[never].abs().max()) < 1e-12 * float(ex.map().max())
    with pytest.raises(ValueError, match="not a panel edge"):
        ex.total("io", -5.5, 7)
    avg = type(ex).average([ex, ex])
    assert avg.total("io")[0] == pytest.approx(total)
    assert avg.total("io")[1] == pytest.approx(ex.total("io")[1] / math.sqrt(2))

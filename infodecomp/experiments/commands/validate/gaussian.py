"""Check 1: the Gaussian pair, whose pointwise i^o and i^s are closed form (1p: under the
paper's sampler, against the exact values on its range)."""

from __future__ import annotations

import math
from typing import Any

import torch

from infodecomp.estimators.engine import EngineConfig, estimate
from infodecomp.estimators.queries import option_queries
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.commands.validate.table import GAUSS_WIDE, PAPER, label, mean_se, row
from infodecomp.models.oracles.exact import GaussianOracle


def gaussian_pointwise_exact(
    oracle: GaussianOracle,
    x: torch.Tensor,
    y: torch.Tensor,
    lo: float = -30.0,
    hi: float = 30.0,
    nodes: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact pointwise i^o(x; y) and i^s(x; y) [N] of the Gaussian pair, on logsnr in [lo, hi].

    The optimal denoisers are linear: eps_hat_S(z) = s A_S (z - a m_S) with
    A_S = (a^2 S + s^2 I)^-1, so at each logsnr the expectations over eps are closed form:
    E||eps_hat_u - eps_hat_c||^2 = ||mu||^2 + ||B||_F^2 with z = a x + s eps,
    mu = s a [(A_u - A_c) x + A_c m_c], B = s^2 (A_u - A_c), and
    E||eps - eps_hat_S||^2 = ||s a A_S (x - m_S)||^2 + ||I - s^2 A_S||_F^2.
    The logsnr integral is Gauss-Legendre on unit panels (the integrands are smooth).
    """
    import numpy as np

    t, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(nodes))
    edges = torch.arange(lo, hi, dtype=torch.float64)
    gs = (edges[:, None] + 0.5 * (t[None, :] + 1.0)).flatten()
    ws = (0.5 * w).repeat(len(edges))
    x, m = x.double(), y.double() @ oracle.gain.T  # [N, dx]
    (lam_u, u_u), (lam_c, u_c) = oracle._eig
    eye = torch.eye(oracle.dx, dtype=torch.float64)
    io = torch.zeros(len(x), dtype=torch.float64)
    is_ = torch.zeros(len(x), dtype=torch.float64)
    for g, wq in zip(gs.tolist(), ws.tolist(), strict=True):
        a2, s2 = 1 / (1 + math.exp(-g)), 1 / (1 + math.exp(g))
        a, s = math.sqrt(a2), math.sqrt(s2)
        a_u = u_u @ torch.diag(1 / (a2 * lam_u + s2)) @ u_u.T
        a_c = u_c @ torch.diag(1 / (a2 * lam_c + s2)) @ u_c.T
        mu = s * a * (x @ (a_u - a_c).T + m @ a_c.T)
        f_o = mu.square().sum(-1) + (s2 * (a_u - a_c)).square().sum()
        mse_u = (s * a * x @ a_u.T).square().sum(-1) + (eye - s2 * a_u).square().sum()
        mse_c = (s * a * (x - m) @ a_c.T).square().sum(-1) + (eye - s2 * a_c).square().sum()
        io += wq * 0.5 * f_o
        is_ += wq * 0.5 * (mse_u - mse_c)
    return io, is_


def gaussian_checks(
    n_items: int,
    seed: int,
    max_batch: int,
    like: Any = None,
    samplers: tuple[tuple[str, LogsnrSampler, bool], ...] = (
        ("1 gaussian", GAUSS_WIDE, False),
        ("1p gaussian, paper sampler", PAPER, True),
    ),
    identities: bool = True,
    tag: str = "",
) -> list[dict]:
    """Check 1: the Gaussian pair. Per item the exact pointwise i^o and i^s are closed form, so the
    estimates are compared with them item by item (their mean difference has only Monte Carlo
    noise); with `identities` also the means over (x, y) ~ p against I(X;Y) and log p(x).
    `samplers`: (check, sampler, on its support); a sampler marked True (the paper's, [-5, 7])
    is compared with the exact values on its support, the part outside reported as
    truncation_bias; the others (wide proposals) with the full-range values.

    `like`: a converted oracle (models/oracles/converted.py) whose conversion the Gaussian oracle is
    seen through, so the eps / v / flow wrappers are checked here too; None: the plain oracle.
    `tag` is appended to each quantity (the conversion's name).
    """
    oracle = GaussianOracle(seed=seed)
    if like is not None and hasattr(like, "with_inner"):
        oracle = like.with_inner(oracle)
    x, y = oracle.sample(n_items, torch.Generator().manual_seed(seed))
    queries = option_queries(
        x.float(), [[tuple(v.tolist())] for v in y], [("gauss", i) for i in range(n_items)]
    )
    full = gaussian_pointwise_exact(oracle, x, y)
    rows = []
    for check, sampler, truncated in samplers:
        ests = estimate(
            oracle,
            queries,
            EngineConfig(n_samples=100, sampler=sampler, max_batch=max_batch, seed=seed),
        )
        rows += _pointwise_rows(
            oracle, x, y, ests, full, check, sampler, truncated, identities, tag
        )
        if identities and not truncated:
            err = [
                e.log_likelihood(1)[0] - float(lp)
                for e, lp in zip(ests, oracle.log_prob(x.double()), strict=True)
            ]
            m, se = mean_se(err)
            rows.append(
                row(
                    check,
                    f"log p(x) error (nats){tag}",
                    0.0,
                    m,
                    se,
                    sampler=label(sampler),
                    note="estimate minus exact, per item",
                )
            )
    return rows


def _pointwise_rows(
    oracle: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    ests: list,
    full: tuple[torch.Tensor, torch.Tensor],
    check: str,
    sampler: LogsnrSampler,
    truncated: bool,
    identities: bool,
    tag: str,
) -> list[dict]:
    """Check 1 under one sampler: i^o and i^s against the exact pointwise values (on the
    sampler's support when `truncated`), and with `identities` their means against I(X;Y)."""
    lo, hi = sampler.support
    ref = gaussian_pointwise_exact(oracle, x, y, lo, hi) if truncated else full
    mi = oracle.mutual_information()
    target = oracle.mutual_information(lo, hi) if truncated else mi
    where = f" on [{lo:g}, {hi:g}]" if truncated else ""
    name, n_items = label(sampler), len(ests)
    rows = []
    for k, (info, fn) in enumerate((("i^o", "info_o"), ("i^s", "info_s"))):
        est = torch.tensor([getattr(e, fn)(0)[0] for e in ests], dtype=torch.float64)
        m, se = mean_se(est - ref[k])
        exact = float(ref[k].mean())
        rows.append(
            row(
                check,
                f"{info}(x;y) vs exact pointwise, mean of {n_items}{where}{tag}",
                exact,
                exact + m,
                se,
                rel="auto",
                sampler=name,
                truncation=float((full[k].mean() - ref[k].mean()) / full[k].mean()),
                note="paired: se is the Monte Carlo error only",
            )
        )
        if identities:
            m, se = mean_se(est)
            rows.append(
                row(
                    check,
                    f"mean {info} = I(X;Y){where}{tag}",
                    target,
                    m,
                    se,
                    sampler=name,
                    truncation=(mi - target) / mi,
                    note="identity over (x, y) ~ p; item-to-item spread sets the se, so z only",
                )
            )
    return rows

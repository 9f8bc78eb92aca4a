"""Exact oracles: denoisers whose optimal eps_hat, log-densities and information are closed form.

Both follow the Denoiser protocol on the channel z = a x + s eps (a^2 = sigmoid(logsnr),
s^2 = sigmoid(-logsnr)). For x ~ N(m, S) the optimal noise prediction is
eps_hat(z) = s (a^2 S + s^2 I)^-1 (z - a m), written in this form because it stays accurate
when s -> 0 (the textbook (z - a x_hat) / s cancels catastrophically there).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from infodecomp.worlds import shapes as world


class GaussianOracle:
    """Jointly Gaussian (x, y) with zero mean; conditions are y vectors (None or "" = unconditional).

    Args:
        dx, dy: dimensions of x and y.
        seed: seed of the random joint covariance.
        coupling: scale of the cross-covariance (larger -> more information).
    """

    def __init__(self, dx: int = 8, dy: int = 4, seed: int = 0, coupling: float = 0.8) -> None:
        gen = torch.Generator().manual_seed(seed)
        n = dx + dy
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        lam = torch.logspace(math.log10(0.05), math.log10(5.0), n, dtype=torch.float64)
        cov = q @ torch.diag(lam) @ q.T
        cov[:dx, dx:] *= coupling
        cov[dx:, :dx] *= coupling
        self.dx, self.dy = dx, dy
        self.cov = cov
        self.device = torch.device("cpu")
        self.world, self.noise = "gaussian", 0.0  # ExactLikelihood capability
        sxx, sxy, syy = cov[:dx, :dx], cov[:dx, dx:], cov[dx:, dx:]
        self.gain = sxy @ torch.linalg.inv(syy)  # [dx, dy]: E[x | y] = gain y
        self.cov_x = sxx
        self.cov_x_given_y = sxx - self.gain @ sxy.T
        self._eig = [torch.linalg.eigh(c) for c in (self.cov_x, self.cov_x_given_y)]

    def mutual_information(self, lo: float | None = None, hi: float | None = None) -> float:
        """I(X; Y) = 1/2 log det Cov(x) / det Cov(x | y), in nats; with (lo, hi) the part of its
        logsnr integral inside [lo, hi].

        The eps-prediction MMSE of N(m, S) at logsnr g is sum_i sigmoid(g + log lambda_i(S)), so
        I(X; Y) = 1/2 int [mmse_x(g) - mmse_x|y(g)] dg and each term integrates to a softplus.
        """
        if lo is None and hi is None:
            return 0.5 * float(torch.logdet(self.cov_x) - torch.logdet(self.cov_x_given_y))
        lo = -math.inf if lo is None else lo
        hi = math.inf if hi is None else hi

        def part(lam: torch.Tensor) -> float:  # int_lo^hi sum_i sigmoid(g + log lam_i) dg
            b = lam.log()
            top = (hi + b) if math.isfinite(hi) else None
            low = torch.nn.functional.softplus(lo + b) if math.isfinite(lo) else torch.zeros_like(b)
            if (
                top is None
            ):  # softplus(hi + b) -> hi + b: the divergent parts cancel in the difference
                return float((b - low).sum())
            return float((torch.nn.functional.softplus(top) - low).sum())

        return 0.5 * (part(self._eig[0][0]) - part(self._eig[1][0]))

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """n joint draws: x [n, dx], y [n, dy] (float64)."""
        chol = torch.linalg.cholesky(self.cov)
        xy = torch.randn(n, self.dx + self.dy, generator=generator, dtype=torch.float64) @ chol.T
        return xy[:, : self.dx], xy[:, self.dx :]

    def log_prob(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log p(x) or log p(x | y) for x [n, dx], y [n, dy]."""
        if y is None:
            dist = torch.distributions.MultivariateNormal(
                torch.zeros(self.dx, dtype=torch.float64), self.cov_x
            )
            return dist.log_prob(x)
        mean = y @ self.gain.T
        dist = torch.distributions.MultivariateNormal(mean, self.cov_x_given_y)
        return dist.log_prob(x)

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(i, dtype=torch.float32) for i in images])

    def encode_conditions(self, conditions: Sequence[Hashable]) -> torch.Tensor:
        rows = []
        for c in conditions:
            if c is None or c == "":
                rows.append(torch.zeros(self.dy + 1, dtype=torch.float64))
            else:
                y = torch.as_tensor(c, dtype=torch.float64)
                if y.shape != (self.dy,):
                    raise ValueError(
                        f"Gaussian oracle condition must have {self.dy} entries, got shape {tuple(y.shape)}"
                    )
                rows.append(torch.cat([torch.ones(1, dtype=torch.float64), y]))
        return torch.stack(rows)  # [K, 1 + dy]

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        zd, ls = z.double(), logsnr.double()  # [B, dx], [B]
        a2, s2 = torch.sigmoid(ls), torch.sigmoid(-ls)
        out = torch.empty_like(zd)
        flag = cond[:, 0] > 0.5
        for which, (lam, u) in ((False, self._eig[0]), (True, self._eig[1])):
            rows = flag == which
            if not rows.any():
                continue
            mean = cond[rows, 1:] @ self.gain.T if which else torch.zeros_like(zd[rows])  # [b, dx]
            r = (zd[rows] - a2[rows].sqrt()[:, None] * mean) @ u  # [b, dx] in the eigenbasis
            scale = s2[rows].sqrt()[:, None] / (a2[rows][:, None] * lam + s2[rows][:, None])
            out[rows] = (scale * r) @ u.T
        return out.to(z.dtype)


@dataclass(frozen=True)
class InfoIntegral:
    """Exact pointwise information of one image between two conditions, by logsnr panel.

    Panel p covers [edges[p], edges[p + 1]] (unit panels on integers). `io` / `is_` hold each
    panel's part of i^o(x; A | B) and i^s(x; A | B) in nats, `*_var` the Monte Carlo variance
    of that part (from the expectation over eps; the logsnr quadrature error is negligible),
    `io_map` each panel's part of the pixel-wise i^o [P, H, W] (channels summed).
    """

    edges: torch.Tensor  # [P + 1]
    io: torch.Tensor  # [P]
    io_var: torch.Tensor  # [P]
    is_: torch.Tensor  # [P]
    is_var: torch.Tensor  # [P]
    io_map: torch.Tensor  # [P, H, W]

    def _panels(self, lo: float, hi: float) -> torch.Tensor:
        inside = (self.edges[:-1] >= lo - 1e-9) & (self.edges[1:] <= hi + 1e-9)
        if not math.isinf(lo) and not bool((self.edges - lo).abs().min() < 1e-9):
            raise ValueError(f"lower limit {lo} is not a panel edge of {self.edges.tolist()}")
        if not math.isinf(hi) and not bool((self.edges - hi).abs().min() < 1e-9):
            raise ValueError(f"upper limit {hi} is not a panel edge of {self.edges.tolist()}")
        return inside

    def total(
        self, name: str = "io", lo: float = -math.inf, hi: float = math.inf
    ) -> tuple[float, float]:
        """(value, Monte Carlo se) of i^o ("io") or i^s ("is") restricted to logsnr in [lo, hi]."""
        m = self._panels(lo, hi)
        value, var = (self.io, self.io_var) if name == "io" else (self.is_, self.is_var)
        return float(value[m].sum()), float(var[m].sum().sqrt())

    def map(self, lo: float = -math.inf, hi: float = math.inf) -> torch.Tensor:
        """The pixel-wise i^o map [H, W] restricted to logsnr in [lo, hi]."""
        return self.io_map[self._panels(lo, hi)].sum(0)

    @staticmethod
    def average(parts: Sequence[InfoIntegral]) -> InfoIntegral:
        """The mean of independent estimates on the same panels (variances divided by n^2)."""
        n = len(parts)
        mean = lambda name: sum(getattr(p, name) for p in parts) / n  # noqa: E731
        var = lambda name: sum(getattr(p, name) for p in parts) / n**2  # noqa: E731
        return InfoIntegral(
            parts[0].edges, mean("io"), var("io_var"), mean("is_"), var("is_var"), mean("io_map")
        )


def _allocate_draws(
    wq: torch.Tensor, pilot_o: torch.Tensor, pilot_s: torch.Tensor, n_draws: int
) -> torch.Tensor:
    """exact_info's draws per quadrature node [G] from a pilot's integrands [G, n]: 3/8 by each
    node's weighted standard deviation, 3/8 by its weighted mean, 1/4 evenly, at least 32."""
    spread = wq * (pilot_o.std(-1) + pilot_s.std(-1)).cpu()
    mass = wq * (pilot_o.mean(-1).abs() + pilot_s.mean(-1).abs()).cpu()
    share = torch.full_like(wq, 0.25 / len(wq))  # a quarter spread evenly
    for score in (spread, mass):  # rare large terms hide from a small pilot's spread
        if float(score.sum()) > 0:
            share += 0.375 * score / score.sum()
    share /= share.sum()
    return (share * n_draws).ceil().long().clamp(min=32)


# Probability-flow ODE range for the oracles: data scale ~1, so the EDM defaults cover every
# ShapesWorld noise level.
ORACLE_SIGMA_RANGE = (0.002, 80.0)


class ShapesOracle:
    """The exact conditional denoiser of ShapesWorld.

    Data: x = render(scene) + sigma0 * noise with the scene uniform over all scenes; given a
    caption, the scene is uniform over the caption's scene set. Conditions are captions; ""
    is the unconditional. `encode_conditions` returns indices into a cached table of scene sets.
    """

    def __init__(self, sigma0: float = world.SIGMA0, device: str | torch.device = "cpu") -> None:
        self.sigma0 = float(sigma0)
        self.world, self.noise = "shapes", self.sigma0  # ExactLikelihood capability
        self.device = torch.device(device)
        self.means = world.scene_means().to(self.device)  # [K, D] float64
        self.mean_sqnorm = self.means.square().sum(-1)  # [K]
        self.dim = self.means.shape[1]
        # The scene means span a low-dimensional space (each scene is the sum of two objects'
        # renders): means = coords @ basis with orthonormal basis rows [r, D], so every product
        # with the means costs r instead of D per scene. Exact up to float64 rounding.
        _, sv, vh = torch.linalg.svd(self.means, full_matrices=False)
        self.basis = vh[sv > sv[0] * 1e-10]  # [r, D]
        self.coords = self.means @ self.basis.T  # [K, r]
        self._keys: dict[str, int] = {}
        self._sets: list[torch.Tensor] = []
        self._members: list[torch.Tensor] = []  # per encoded condition: its scenes' indices
        self.condition_encodes = 0

    sigma_range = ORACLE_SIGMA_RANGE  # ProbabilityFlow capability

    # --- Denoiser protocol -------------------------------------------------------------------
    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        return torch.stack([torch.as_tensor(i, dtype=torch.float32) for i in images])

    def encode_conditions(self, conditions: Sequence[Hashable]) -> torch.Tensor:
        idx = []
        for c in conditions:
            key = "" if c is None else str(c)
            if key not in self._keys:
                self._keys[key] = len(self._sets)
                self._sets.append(world.scene_set(key).to(self.device))
                self._members.append(self._sets[-1].nonzero().flatten())
                self.condition_encodes += 1
            idx.append(self._keys[key])
        return torch.tensor(idx, dtype=torch.long, device=self.device)  # [K]

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        zf = z.double().flatten(1)  # [B, D]
        ls = logsnr.double().view(-1, 1)  # [B, 1]
        a2, s2 = torch.sigmoid(ls), torch.sigmoid(-ls)
        a, s = a2.sqrt(), s2.sqrt()
        v = a2 * self.sigma0**2 + s2  # [B, 1] variance of z given the scene
        zc = (zf @ self.basis.T) * (a / v)  # [B, r] scaled coordinates of z in the means' span
        half = a2 / (2 * v)  # [B, 1]
        xbar_c = torch.empty_like(zc)  # [B, r] posterior mean of the scene, same coordinates
        for u in torch.unique(cond).tolist():  # each condition over its own scene set only
            members = self._members[u]
            every = bool((cond == u).all())
            rows = slice(None) if every else (cond == u).nonzero().flatten()
            # log N(z; a m_k, v I) up to terms equal for every scene: (a z.m_k - a^2 |m_k|^2 / 2) / v
            logits = torch.addmm(
                -half[rows] * self.mean_sqnorm[members], zc[rows], self.coords[members].T
            )  # [b, k]
            xbar_c[rows] = torch.softmax(logits, -1) @ self.coords[members]
        out = torch.addmm(zf, xbar_c * (-a), self.basis)  # z - a xbar, [B, D]
        return (out * (s / v)).view_as(z).to(z.dtype)

    # --- exact ground truth ------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, caption: str = "") -> torch.Tensor:
        """Exact log p(x | caption) for x [N, 3, H, W] (caption "" gives log p(x)). Returns [N]."""
        xf = x.double().flatten(1).to(self.device)  # [N, D]
        members = world.scene_set(caption).to(self.device)
        sq = xf.square().sum(-1, keepdim=True) - 2 * xf @ self.means.T + self.mean_sqnorm  # [N, K]
        logits = (-sq / (2 * self.sigma0**2)).masked_fill(~members, float("-inf"))
        norm = 0.5 * self.dim * math.log(2 * math.pi * self.sigma0**2) + math.log(
            int(members.sum())
        )
        return torch.logsumexp(logits, -1) - norm

    def exact_info(
        self,
        x: torch.Tensor,
        with_caption: str,
        without_caption: str,
        *,
        lo: int = -20,
        hi: int = 20,
        nodes: int = 3,
        n_draws: int = 2**17,
        seed: int = 0,
    ) -> InfoIntegral:
        """i^o(x; A | B), i^s(x; A | B) and the pixel-wise i^o of one image from the posteriors.

        The logsnr integral uses Gauss-Legendre quadrature (`nodes` per unit panel on [lo, hi]);
        at each node the expectation over eps is a Monte Carlo average. Everything the
        posteriors depend on lies in the span of the scene means, so z is drawn in those r
        coordinates only: z_c = a Q x + s xi, xi ~ N(0, I_r). With k1 = a^2 sigma0^2 / v,
        k2 = a s / v and D = xbar_B - xbar_A (posterior means of the scene under B and A):
        ||eps_hat_A - eps_hat_B||^2 = k2^2 ||D||^2 and
        ||eps - eps_hat_B||^2 - ||eps - eps_hat_A||^2 = k2 D.(2 k1 eps - 2 k2 x + k2 (xbar_A + xbar_B)),
        where eps and x enter only through their components in the span (D lies in it).
        The `n_draws` draws are spread over the nodes: 3/8 in proportion to each node's weighted
        standard deviation (Neyman allocation), 3/8 in proportion to its weighted mean (rare,
        large terms that a small pilot misses live where the integrand's mass is), 1/4 evenly;
        both scores come from a separate pilot of 64 draws per node, not used in the estimate. For ShapesWorld captions
        the integrands outside [-20, 20] are far below the Monte Carlo error.
        """
        import numpy as np

        gen = torch.Generator().manual_seed(seed)
        xc = self.basis @ x.double().flatten().to(self.device)  # [r]
        sets = [
            world.scene_set(c).nonzero().flatten().to(self.device)
            for c in (with_caption, without_caption)
        ]
        coords = [self.coords[m] for m in sets]  # [k, r] each
        sqn = [self.mean_sqnorm[m] for m in sets]
        r = self.basis.shape[0]

        def integrand(g: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
            return self._info_integrand(g, n, xc, coords, sqn, gen)

        t, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(nodes))
        edges = torch.arange(lo, hi + 1, dtype=torch.float64)
        n_panels = len(edges) - 1
        g_all = (edges[:-1, None] + 0.5 * (t[None, :] + 1.0)).flatten()  # [P * nodes]
        wq = (0.5 * w).repeat(n_panels)  # Gauss-Legendre weights on unit panels
        pilot_o, pilot_s, _ = integrand(g_all, 64)
        counts = _allocate_draws(wq, pilot_o, pilot_s, n_draws)
        stats = torch.zeros(len(g_all), 4, dtype=torch.float64)  # mean_o, var_o, mean_s, var_s
        second = torch.zeros(len(g_all), r, r, dtype=torch.float64)  # E[(k2 D)(k2 D)^T] / 2
        for i, (g, n) in enumerate(zip(g_all, counts.tolist(), strict=True)):
            f_o, f_s, kd = integrand(g.view(1), n)
            stats[i] = torch.stack([f_o.mean(), f_o.var(), f_s.mean(), f_s.var()]).cpu()
            second[i] = (0.5 * kd[0].T @ kd[0] / n).cpu()
        per = lambda f: f.view(n_panels, nodes).sum(-1)  # noqa: E731
        io, is_ = per(wq * stats[:, 0]), per(wq * stats[:, 2])
        io_var = per(wq**2 * stats[:, 1] / counts)
        is_var = per(wq**2 * stats[:, 3] / counts)
        second = (wq.view(-1, 1, 1) * second).view(n_panels, nodes, r, r).sum(1).to(self.device)
        # pixel map: diag(Q^T R Q) per data dimension, channels summed
        maps = torch.einsum("ad,pab,bd->pd", self.basis, second, self.basis)  # [P, D]
        # a quadratic form, >= 0 up to rounding (of order 1e-30 where no scene differs)
        maps = maps.view(n_panels, *x.shape).sum(1).clamp(min=0).cpu()  # [P, H, W]
        return InfoIntegral(edges, io, io_var, is_, is_var, maps)

    def _info_integrand(
        self,
        g: torch.Tensor,
        n: int,
        xc: torch.Tensor,
        coords: list[torch.Tensor],
        sqn: list[torch.Tensor],
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, ...]:
        """exact_info's integrands at logsnr g [G], n draws each: f_o [G, n], f_s [G, n] (1/2 the
        integrands) and k2 D [G, n, r]; xc: the image in the basis [r]; coords / sqn: the two
        captions' scene coordinates [k, r] and squared norms [k]."""
        g = g.to(self.device).view(-1, 1, 1)
        a2, s2 = torch.sigmoid(g), torch.sigmoid(-g)
        a, s = a2.sqrt(), s2.sqrt()
        v = a2 * self.sigma0**2 + s2
        k1, k2 = a2 * self.sigma0**2 / v, a * s / v
        r = self.basis.shape[0]
        xi = torch.randn(len(g), n, r, generator=gen, dtype=torch.float64).to(self.device)
        zc = a * xc + s * xi  # [G, n, r]
        xbar = []
        for cs, sq in zip(coords, sqn, strict=True):
            logits = (a * (zc @ cs.T) - 0.5 * a2 * sq) / v  # [G, n, k]
            xbar.append(torch.softmax(logits, -1) @ cs)  # [G, n, r]
        d = xbar[1] - xbar[0]
        f_o = 0.5 * (k2 * d).square().sum(-1)
        f_s = 0.5 * (k2 * d * (2 * k1 * xi - 2 * k2 * xc + k2 * (xbar[0] + xbar[1]))).sum(-1)
        return f_o, f_s, k2 * d

    def sample_scene(self, scene_index: int, generator: torch.Generator) -> torch.Tensor:
        """x = render(scene) + sigma0 * noise. Returns [3, H, W] float32."""
        mean = self.means[scene_index].cpu()
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
        return (mean + self.sigma0 * noise).float().view(3, world.CANVAS, world.CANVAS)

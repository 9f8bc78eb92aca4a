"""Exact oracles: denoisers whose optimal eps_hat, log-densities and information are closed form.

Both follow the Denoiser protocol on the channel z = a x + s eps (a^2 = sigmoid(logsnr),
s^2 = sigmoid(-logsnr)). For x ~ N(m, S) the optimal noise prediction is
eps_hat(z) = s (a^2 S + s^2 I)^-1 (z - a m), written in this form because it stays accurate
when s -> 0 (the textbook (z - a x_hat) / s cancels catastrophically there).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
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

    def mutual_information(self) -> float:
        """I(X; Y) = 1/2 log det Cov(x) / det Cov(x | y), in nats."""
        return 0.5 * float(torch.logdet(self.cov_x) - torch.logdet(self.cov_x_given_y))

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

    def sample_scene(self, scene_index: int, generator: torch.Generator) -> torch.Tensor:
        """x = render(scene) + sigma0 * noise. Returns [3, H, W] float32."""
        mean = self.means[scene_index].cpu()
        noise = torch.randn(mean.shape, generator=generator, dtype=torch.float64)
        return (mean + self.sigma0 * noise).float().view(3, world.CANVAS, world.CANVAS)

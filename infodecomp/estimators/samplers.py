"""logsnr samplers with exact importance weights for the integrals of paper eq. 3-6.

Every sampler maps points t in (0, 1) through the quantile function of its proposal density q,
so `iid`, `stratified` (one draw per quantile stratum), `antithetic` (pairs t, 1 - t) and
`quadrature` (stratum midpoints, deterministic) share one weight formula, weight = 1 / q(logsnr).
An integral int f(logsnr) dlogsnr over the proposal's support is then mean(weight * f).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MODES = ("iid", "stratified", "antithetic", "quadrature")
KINDS = ("logistic", "uniform")


@dataclass(frozen=True)
class LogsnrSampler:
    """A proposal over logsnr: truncated logistic (paper default) or uniform on an interval.

    Args:
        kind: "logistic" or "uniform".
        loc, scale, clip: logistic location, scale and truncation in standard units
            (support [loc - scale * clip, loc + scale * clip]); paper default 1, 2, 3.
        low, high: support of the uniform proposal.
        mode: how the points t in (0, 1) are drawn; see the module docstring.
    """

    kind: str = "logistic"
    loc: float = 1.0
    scale: float = 2.0
    clip: float = 3.0
    low: float = -5.0
    high: float = 7.0
    mode: str = "iid"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"sampler kind '{self.kind}' is not one of: {', '.join(KINDS)}")
        if self.mode not in MODES:
            raise ValueError(f"sampler mode '{self.mode}' is not one of: {', '.join(MODES)}")
        if self.kind == "logistic" and (self.scale <= 0 or self.clip <= 0):
            raise ValueError(
                f"logistic sampler needs scale > 0 and clip > 0, got {self.scale}, {self.clip}"
            )
        if self.kind == "uniform" and not self.high > self.low:
            raise ValueError(f"uniform sampler needs high > low, got [{self.low}, {self.high}]")

    @property
    def support(self) -> tuple[float, float]:
        if self.kind == "uniform":
            return (self.low, self.high)
        return (self.loc - self.scale * self.clip, self.loc + self.scale * self.clip)

    def quantile(self, t: torch.Tensor) -> torch.Tensor:
        """Maps t in [0, 1] to logsnr with the proposal's inverse CDF."""
        if self.kind == "uniform":
            return self.low + t * (self.high - self.low)
        lo, hi = _sigmoid(-self.clip), _sigmoid(self.clip)
        u = lo + t * (hi - lo)
        return self.loc + self.scale * torch.logit(u)

    def weight(self, logsnr: torch.Tensor) -> torch.Tensor:
        """1 / q(logsnr): for the logistic, scale * tanh(clip / 2) / (sigmoid(v) sigmoid(-v))."""
        if self.kind == "uniform":
            return torch.full_like(logsnr, self.high - self.low)
        v = (logsnr - self.loc) / self.scale
        return self.scale * math.tanh(self.clip / 2) / (torch.sigmoid(v) * torch.sigmoid(-v))

    def points(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points t in (0, 1) drawn according to `mode`. Returns [n] float64."""
        if n < 1:
            raise ValueError(f"number of logsnr samples must be >= 1, got {n}")
        idx = torch.arange(n, dtype=torch.float64)
        if self.mode == "quadrature":
            return (idx + 0.5) / n
        if self.mode == "iid":
            return torch.rand(n, generator=generator, dtype=torch.float64)
        if self.mode == "stratified":
            return (idx + torch.rand(n, generator=generator, dtype=torch.float64)) / n
        half = n // 2  # antithetic: stratified halves mirrored, so pairs are (t, 1 - t)
        t = (
            torch.arange(half, dtype=torch.float64)
            + torch.rand(half, generator=generator, dtype=torch.float64)
        ) / (2 * half)
        extra = torch.rand(
            n - 2 * half, generator=generator, dtype=torch.float64
        )  # odd n: one iid point keeps the mean unbiased
        return torch.cat([t, 1.0 - t, extra])

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (logsnr [n], weight [n]) in float64."""
        logsnr = self.quantile(self.points(n, generator))
        return logsnr, self.weight(logsnr)

    def mean_and_stderr(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over the last axis of weighted samples and its standard error under `mode`.

        iid: sample standard deviation / sqrt(n). stratified, antithetic: the collapsed-strata
        estimator (adjacent strata or mirrored pairs differenced), conservative but honest.
        quadrature: the same collapsed estimator; it measures the eps noise plus node spacing.
        """
        n = values.shape[-1]
        mean = values.mean(-1)
        if n < 2:
            return mean, torch.full_like(mean, float("inf"))
        if self.mode == "iid":
            return mean, values.std(-1, unbiased=True) / math.sqrt(n)
        units = values
        half = n // 2
        if self.mode == "antithetic":  # the iid-like units are the means of mirrored pairs
            units = 0.5 * (values[..., :half] + values[..., half : 2 * half])
        k = units.shape[-1]
        m = k // 2 * 2
        if m == 0:
            return mean, torch.full_like(mean, float("inf"))
        diffs = units[..., 0:m:2] - units[..., 1:m:2]
        var = (diffs**2).sum(-1) / k**2 * (k / m)
        if (
            self.mode == "antithetic" and n % 2
        ):  # pairs weigh 2 * half / n; the unpaired iid point adds its own variance
            var = var * (2 * half / n) ** 2 + values.var(-1) / n**2
        return mean, var.sqrt()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def fit_logistic(
    logsnr: torch.Tensor,
    weight: torch.Tensor,
    magnitude: torch.Tensor,
    clip: float = 4.0,
    mode: str = "stratified",
) -> LogsnrSampler:
    """A truncated logistic matched to where an integrand lives, from pilot draws.

    Moment matching: with pilot draws logsnr_i, importance weights w_i and integrand magnitudes
    |f(logsnr_i)|, the density p(logsnr) proportional to |f| has mean m and variance v estimated
    by the self-normalised weights w_i |f_i|; the logistic with that mean and variance has
    loc = m, scale = sqrt(3 v) / pi. `clip` is in scale units (clip 4 keeps 96% of a logistic's
    mass within +-3 scales and the tails covered).
    """
    p = (weight * magnitude.abs()).double().flatten()
    if not float(p.sum()) > 0:
        raise ValueError("fit_logistic: the pilot integrand is zero everywhere; nothing to fit")
    p = p / p.sum()
    x = logsnr.double().flatten()
    mean = float((p * x).sum())
    var = float((p * (x - mean) ** 2).sum())
    return LogsnrSampler(
        kind="logistic",
        loc=mean,
        scale=max(math.sqrt(3 * var) / math.pi, 1e-3),
        clip=clip,
        mode=mode,
    )

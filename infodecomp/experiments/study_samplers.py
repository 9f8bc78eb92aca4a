"""The proposals the score study adds to estimators.samplers: timesteps uniform on SD 2.1's
schedule (the measure of DiffusionITM's denoising loss), DiffusionITM's fixed timesteps, and a
defensive mixture of a fitted proposal with the published one."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.models.dynamics.schedule import DiscreteSchedule, betas_from_config

_SD = DiscreteSchedule(
    betas_from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
)
T_MAX = _SD.num_train_timesteps - 1  # 999
_ASC = _SD.logsnr_table.flip(0)  # logsnr ascending, i.e. t = 999 .. 0


def logsnr_at(t: torch.Tensor) -> torch.Tensor:
    """logsnr of continuous timesteps t in [0, 999] (linear between the integer steps)."""
    t = t.double().clamp(0, T_MAX)
    lo = t.floor().long().clamp(max=T_MAX - 1)
    frac = t - lo
    table = _SD.logsnr_table
    return table[lo] * (1 - frac) + table[lo + 1] * frac


def timestep_density(logsnr: torch.Tensor) -> torch.Tensor:
    """Density of logsnr when t is uniform on [0, 999] (0 outside the schedule's range)."""
    lv = logsnr.double()
    i = torch.searchsorted(_ASC, lv).clamp(1, T_MAX)  # segment [i - 1, i] of the ascending table
    slope = _ASC[i] - _ASC[i - 1]  # logsnr per timestep, > 0
    inside = (lv >= _ASC[0]) & (lv <= _ASC[-1])
    return torch.where(inside, 1.0 / (T_MAX * slope), torch.zeros_like(lv))


@dataclass(frozen=True)
class TimestepSampler(LogsnrSampler):
    """Timesteps uniform on [0, 999] (iid / stratified / antithetic), mapped to logsnr; the
    weight is 1 / density, so mean(weight x f) integrates f dlogsnr like the other samplers."""

    kind: str = "timestep"

    def __post_init__(self) -> None:
        if self.mode not in ("iid", "stratified", "antithetic", "quadrature"):
            raise ValueError(f"sampler mode '{self.mode}' is not known")

    @property
    def support(self) -> tuple[float, float]:
        return float(_ASC[0]), float(_ASC[-1])

    def quantile(self, t: torch.Tensor) -> torch.Tensor:
        return logsnr_at(T_MAX * t)  # t in [0, 1] -> timestep in [0, 999]

    def weight(self, logsnr: torch.Tensor) -> torch.Tensor:
        return 1.0 / timestep_density(logsnr)


@dataclass(frozen=True)
class FixedTimesteps(TimestepSampler):
    """DiffusionITM's nodes: n timesteps evenly spaced over [0, 999], the same at every call."""

    mode: str = "quadrature"

    def points(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1)

    def timesteps(self, n: int) -> list[int]:
        return [round(T_MAX * float(p)) for p in self.points(n)]


@dataclass(frozen=True)
class MixtureSampler(LogsnrSampler):
    """A defensive mixture: a share `frac` of the draws from `main` (a fitted proposal), the rest
    from `guard` (the published one), each stratified within its own quantiles. The weight is
    1 / (frac q_main + (1 - frac) q_guard) (deterministic mixture, balance heuristic): unbiased
    when frac x n draws come from `main` exactly, and never larger than 1 / ((1 - frac) q_guard),
    so the guard's tails bound the weights where the fitted proposal is thin."""

    kind: str = "mixture"
    mode: str = "stratified"
    main: LogsnrSampler | None = None
    guard: LogsnrSampler | None = None
    frac: float = 0.75

    def __post_init__(self) -> None:
        if self.main is None or self.guard is None or not 0 < self.frac < 1:
            raise ValueError("a mixture sampler needs main, guard and 0 < frac < 1")

    @property
    def support(self) -> tuple[float, float]:
        (a, b), (c, d) = self.main.support, self.guard.support
        return min(a, c), max(b, d)

    def sample(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_main = round(self.frac * n)
        if abs(n_main - self.frac * n) > 1e-9 or n_main in (0, n):
            raise ValueError(f"mixture share {self.frac} of {n} draws is not a whole count")
        main = replace(self.main, mode="stratified").points(n_main, generator)
        guard = replace(self.guard, mode="stratified").points(n - n_main, generator)
        logsnr = torch.cat([self.main.quantile(main), self.guard.quantile(guard)])
        return logsnr, self.weight(logsnr)

    def weight(self, logsnr: torch.Tensor) -> torch.Tensor:
        def density(smp: LogsnrSampler) -> torch.Tensor:
            lo, hi = smp.support
            inside = (logsnr >= lo) & (logsnr <= hi)
            return torch.where(inside, 1.0 / smp.weight(logsnr), torch.zeros_like(logsnr))

        return 1.0 / (self.frac * density(self.main) + (1 - self.frac) * density(self.guard))

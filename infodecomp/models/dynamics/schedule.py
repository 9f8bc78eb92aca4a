"""A discrete DDPM noise schedule seen through logsnr: tables, time rules and the trained range.

Convention (docs/architecture.md): z = sqrt(sigmoid(logsnr)) x + sqrt(sigmoid(-logsnr)) eps. A DDPM step t
with cumulative product abar_t is the same channel at logsnr_t = log(abar_t / (1 - abar_t)), so
a diffusers UNet trained on x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps is queried on z as is;
only the timestep fed to it has to be found from logsnr.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from infodecomp.models.dynamics.conversions import v_to_eps

__all__ = ["TIME_RULES", "ContinuousSchedule", "DiscreteSchedule", "betas_from_config", "v_to_eps"]

TIME_RULES = ("nearest", "continuous")


def betas_from_config(config: Mapping[str, Any]) -> torch.Tensor:
    """DDPM betas [T] (float64) from a diffusers scheduler config.

    Supports `trained_betas`, `linear` and `scaled_linear` (betas = linspace(sqrt(b0), sqrt(b1),
    T)^2, the Stable Diffusion schedule) and `squaredcos_cap_v2`.
    """
    n = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    if trained is not None:
        return torch.tensor(trained, dtype=torch.float64)
    kind = config.get("beta_schedule", "linear")
    b0, b1 = float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 2e-2))
    if kind == "linear":
        return torch.linspace(b0, b1, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
    if kind == "squaredcos_cap_v2":

        def f(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor(
            [min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64
        )
    raise ValueError(
        f"beta_schedule '{kind}' is not supported; expected one of: linear, scaled_linear, "
        "squaredcos_cap_v2 (or give trained_betas)"
    )


def warn_once(schedule: Any, logsnr: torch.Tensor, where: str, what_happens: str) -> None:
    """Warns once per schedule (one per adapter) when logsnr values lie `where` (outside what
    the network was trained on), saying `what_happens` to them."""
    if schedule._warned:
        return
    n = schedule.out_of_range(logsnr)
    if n:
        schedule._warned = True
        warnings.warn(
            f"{n} of {logsnr.numel()} logsnr values lie {where}; {what_happens}. Narrow the "
            "sampler (e.g. loc 1, scale 2, clip 3) to stay inside. (warned once per model)",
            RuntimeWarning,
            stacklevel=4,
        )


class DiscreteSchedule:
    """logsnr view of a discrete DDPM schedule with T training timesteps.

    Args:
        betas: [T] DDPM betas.
        prediction_type: "epsilon" or "v_prediction" (what the network was trained to output).
        steps_offset: offset of DDIM's timestep spacing in the scheduler config.
        set_alpha_to_one: DDIM's last level is clean (true) or abar_0 (false, as in SD configs).

    One instance belongs to one adapter, so its out-of-range warning fires once per adapter.
    """

    def __init__(
        self,
        betas: torch.Tensor,
        prediction_type: str = "epsilon",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
    ) -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type '{prediction_type}' is not supported; expected epsilon or v_prediction"
            )
        self.betas = betas.to(torch.float64)  # [T]
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)  # [T]
        # logsnr_t decreases with t; log(abar) - log1p(-abar) keeps precision near abar = 1.
        self.logsnr_table = self.alphas_cumprod.log() - torch.log1p(-self.alphas_cumprod)  # [T]
        self.prediction_type = prediction_type
        self.num_train_timesteps = len(self.betas)
        self.steps_offset = int(steps_offset)  # DDIM timestep spacing offset (SD: 1)
        self.set_alpha_to_one = bool(set_alpha_to_one)  # DDIM's final level: clean, or abar_0 (SD)
        self._warned = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DiscreteSchedule:
        """From a diffusers scheduler config dict (scheduler_config.json)."""
        return cls(
            betas_from_config(config),
            str(config.get("prediction_type", "epsilon")),
            int(config.get("steps_offset", 0)),
            bool(config.get("set_alpha_to_one", True)),  # diffusers' DDIMScheduler default
        )

    @property
    def ddim_clean_logsnr(self) -> float:
        """logsnr of the level diffusers' DDIM treats as the clean end (its final_alpha_cumprod):
        +inf with set_alpha_to_one, else that of abar_0 (SD: 7.069)."""
        return math.inf if self.set_alpha_to_one else float(self.logsnr_table[0])

    @property
    def trained_range(self) -> tuple[float, float]:
        """(lowest, highest) logsnr over the trained timesteps; SD: (-5.364, 7.069)."""
        return float(self.logsnr_table[-1]), float(self.logsnr_table[0])

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(sigma_min, sigma_max) with sigma = sqrt((1 - abar) / abar) = exp(-logsnr / 2)."""
        lo, hi = self.trained_range
        return math.exp(-hi / 2), math.exp(-lo / 2)

    def out_of_range(self, logsnr: torch.Tensor) -> int:
        """Number of logsnr values outside the trained range."""
        lo, hi = self.trained_range
        lv = logsnr.detach().double().cpu()
        tol = 1e-4  # float32 copies of the end values (e.g. ODE sigma_min) must not count
        return int(((lv < lo - tol) | (lv > hi + tol)).sum())

    def warn_out_of_range(self, logsnr: torch.Tensor) -> None:
        """Warns once per schedule (adapter) when logsnr leave the trained range (they are clamped)."""
        lo, hi = self.trained_range
        warn_once(
            self, logsnr, f"outside the model's trained range [{lo:.3f}, {hi:.3f}]",
            "they are mapped to the nearest end timestep",
        )  # fmt: skip

    def timestep(self, logsnr: torch.Tensor, rule: str = "nearest") -> torch.Tensor:
        """logsnr [B] -> timesteps [B] float64 (integers under the nearest rule).

        nearest: the integer t whose logsnr_t is closest to logsnr (the published code's rule).
        continuous: fractional t, linear interpolation of t against the logsnr table.
        Values outside the trained range go to the end timesteps (0 or T - 1).
        """
        table = self.logsnr_table
        lv = logsnr.detach().double().to(table.device).reshape(-1)  # [B]
        if rule == "nearest":
            return (table[None, :] - lv[:, None]).abs().argmin(1).double().view(logsnr.shape)
        if rule != "continuous":
            raise ValueError(f"time rule '{rule}' is not one of: {', '.join(TIME_RULES)}")
        asc = table.flip(0)  # [T] increasing in logsnr, index j <-> t = T - 1 - j
        lv = lv.clamp(float(asc[0]), float(asc[-1]))
        j = torch.searchsorted(asc, lv).clamp(1, len(asc) - 1)  # [B]
        lo_v, hi_v = asc[j - 1], asc[j]
        frac = (lv - lo_v) / (hi_v - lo_v)
        pos = (j - 1).double() + frac  # fractional index into asc
        return (self.num_train_timesteps - 1 - pos).view(logsnr.shape)

    def logsnr_at(self, t: torch.Tensor) -> torch.Tensor:
        """Timesteps [B] (integer or fractional) -> logsnr [B] float64, linear between table entries."""
        tv = t.detach().double().reshape(-1).clamp(0, self.num_train_timesteps - 1)  # [B]
        i0 = tv.floor().long().clamp(0, self.num_train_timesteps - 2)
        w = tv - i0.double()
        table = self.logsnr_table.to(tv.device)
        return ((1 - w) * table[i0] + w * table[i0 + 1]).view(t.shape)


class ContinuousSchedule:
    """A network trained on continuous logsnr: its time input is a smooth function of logsnr.

    The network sees time = T * sigmoid(-logsnr / time_scale) (T = num_train_timesteps), a
    monotone map of any real logsnr into (0, T); no table lookup, so `model.time_rule` does not
    apply. It was trained on logsnr in [logsnr_min, logsnr_max] (the trained range, warned
    outside once). The DDIM walk of DAAM uses T levels evenly spaced in logsnr over that range.

    Scheduler config keys (scheduler_config.json): "_class_name": "ContinuousSchedule",
    logsnr_min, logsnr_max, time_scale, num_train_timesteps, prediction_type ("epsilon").
    """

    steps_offset = 0

    def __init__(
        self,
        logsnr_min: float,
        logsnr_max: float,
        time_scale: float = 4.0,
        num_train_timesteps: int = 1000,
        prediction_type: str = "epsilon",
    ) -> None:
        if not logsnr_min < logsnr_max:
            raise ValueError(f"logsnr_min {logsnr_min} must be below logsnr_max {logsnr_max}")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(
                f"prediction_type '{prediction_type}' is not supported; expected epsilon or v_prediction"
            )
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self.time_scale = float(time_scale)
        self.num_train_timesteps = int(num_train_timesteps)
        self.prediction_type = prediction_type
        # DDIM grid: index k <-> logsnr decreasing from logsnr_max to logsnr_min (like DDPM's)
        self.logsnr_table = torch.linspace(
            self.logsnr_max, self.logsnr_min, self.num_train_timesteps, dtype=torch.float64
        )
        self._warned = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ContinuousSchedule:
        return cls(
            float(config["logsnr_min"]),
            float(config["logsnr_max"]),
            float(config.get("time_scale", 4.0)),
            int(config.get("num_train_timesteps", 1000)),
            str(config.get("prediction_type", "epsilon")),
        )

    def config(self) -> dict[str, Any]:
        """The scheduler_config.json of this schedule."""
        return {
            "_class_name": type(self).__name__,
            "logsnr_min": self.logsnr_min,
            "logsnr_max": self.logsnr_max,
            "time_scale": self.time_scale,
            "num_train_timesteps": self.num_train_timesteps,
            "prediction_type": self.prediction_type,
        }

    @property
    def trained_range(self) -> tuple[float, float]:
        return self.logsnr_min, self.logsnr_max

    @property
    def ddim_clean_logsnr(self) -> float:
        return math.inf

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(sigma_min, sigma_max), VE sigma = exp(-logsnr / 2) over the trained range."""
        return math.exp(-self.logsnr_max / 2), math.exp(-self.logsnr_min / 2)

    def out_of_range(self, logsnr: torch.Tensor) -> int:
        lv = logsnr.detach().double().cpu()
        return int(((lv < self.logsnr_min - 1e-4) | (lv > self.logsnr_max + 1e-4)).sum())

    def warn_out_of_range(self, logsnr: torch.Tensor) -> None:
        """Warns once per schedule when logsnr leave the trained range (queried there anyway)."""
        warn_once(
            self, logsnr,
            f"outside the model's trained range [{self.logsnr_min:.3f}, {self.logsnr_max:.3f}]",
            "the network is queried there anyway",
        )  # fmt: skip

    def timestep(self, logsnr: torch.Tensor, rule: str = "continuous") -> torch.Tensor:
        """The network's time input [B] float64: T * sigmoid(-logsnr / time_scale)."""
        lv = logsnr.detach().double()
        return self.num_train_timesteps * torch.sigmoid(-lv / self.time_scale)

"""Rectified-flow families (SD 3.x, Flux.1) on the engine's logsnr channel.

`FlowSchedule` is the logsnr view of a flow-matching scheduler config (what
`DiscreteSchedule` is for DDPM): the trained range, the noise range of the probability-flow ODE
and the grid DAAM's DDIM inversion walks. `FlowMatchingMixin` overrides the three hooks of
`LatentDiffusionDenoiser` that differ from a DDPM network (`_timestep`, `_scale_input`,
`_to_eps`) with the shared conversion functions of models/dynamics/conversions.py, which the exact-oracle
wrappers (models/oracles/converted.py) also run.

Trained range. Flow models are trained on continuous t in (0, 1) (a logit-normal density over
t); the scheduler's grid is t = k / T, k = 1 .. T (T = num_train_timesteps = 1000). Its finest
level t = 1 / T is logsnr = 2 log(T - 1) = 13.81; its coarsest, t = 1, is pure noise
(logsnr = -inf). The adapter warns once when the sampler asks for logsnr above 13.81.
The ODE integrates over t in [1 / T, 1 - 1 / T]: VE sigma = t / (1 - t) in [1 / 999, 999].

Schedule shifts (`shift` of SD 3, `use_dynamic_shifting` of Flux.1) translate the sampling grid
in logsnr (conversions.shift_logsnr) and are ignored here: they are not part of the channel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from infodecomp.models.dynamics.conversions import (
    flow_timestep,
    flow_to_eps,
    logsnr_of_flow_time,
    vp_to_flow,
)
from infodecomp.models.dynamics.schedule import warn_once


class FlowSchedule:
    """logsnr view of a rectified-flow scheduler with T training levels t = k / T.

    Args:
        num_train_timesteps: T (1000 for SD 3 and Flux.1).
        time_scale: what the network's time input is in units of t (SD 3: 1000; the adapter of
            Flux.1 passes t itself and divides accordingly).
        shift: the scheduler's static shift (recorded, not used: shifts only move sampling grids).
    """

    prediction_type = "flow"
    steps_offset = 0

    def __init__(
        self, num_train_timesteps: int = 1000, time_scale: float = 1000.0, shift: float = 1.0
    ) -> None:
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.time_scale = float(time_scale)
        self.shift = float(shift)
        n = self.num_train_timesteps
        t = torch.arange(1, n + 1, dtype=torch.float64) / n  # [T], t = k / T (last: 1)
        # Index k <-> t = (k + 1) / T, logsnr decreasing like a DDPM table; t = 1 is -inf.
        self.logsnr_table = logsnr_of_flow_time(t)
        self._warned = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any], time_scale: float = 1000.0) -> FlowSchedule:
        """From a diffusers FlowMatchEulerDiscreteScheduler config (scheduler_config.json)."""
        return cls(
            int(config.get("num_train_timesteps", 1000)),
            time_scale=time_scale,
            shift=float(config.get("shift", 1.0)),
        )

    @property
    def trained_range(self) -> tuple[float, float]:
        """(lowest, highest) logsnr of the trained levels: (-inf, 2 log(T - 1)); 13.81 for T = 1000."""
        return -math.inf, 2 * math.log(self.num_train_timesteps - 1)

    @property
    def ddim_clean_logsnr(self) -> float:
        """The clean end of a DDIM / Euler walk on this grid: +inf (the flow sampler ends at t = 0)."""
        return math.inf

    @property
    def sigma_range(self) -> tuple[float, float]:
        """VE sigma = t / (1 - t) over t in [1 / T, 1 - 1 / T]: (1 / (T - 1), T - 1)."""
        n = self.num_train_timesteps
        return 1.0 / (n - 1), float(n - 1)

    def out_of_range(self, logsnr: torch.Tensor) -> int:
        """Number of logsnr values above the finest trained level."""
        hi = self.trained_range[1]
        return int((logsnr.detach().double().cpu() > hi + 1e-4).sum())

    def warn_out_of_range(self, logsnr: torch.Tensor) -> None:
        """Warns once per schedule when logsnr exceed the finest trained level (they are used as is)."""
        warn_once(
            self, logsnr,
            f"above the flow model's finest trained level {self.trained_range[1]:.2f} "
            f"(t = 1/{self.num_train_timesteps})",
            "the network is queried there anyway",
        )  # fmt: skip

    def timestep(self, logsnr: torch.Tensor, rule: str = "continuous") -> torch.Tensor:
        """The network's time input [B] float64 (time_scale * t); time is always continuous."""
        return flow_timestep(logsnr, self.time_scale)


class FlowMatchingMixin:
    """Rectified-flow hooks for a LatentDiffusionDenoiser subclass (put it first in the bases).

    eps_hat feeds the network z_flow = c z at time scale * t and converts its velocity with
    eps = z_flow + (1 - t) v (models/dynamics/conversions.py). model.time_rule does not apply.
    """

    schedule: FlowSchedule
    device: torch.device

    @classmethod
    def _make_schedule(cls, config: Mapping[str, Any]) -> FlowSchedule:
        return FlowSchedule.from_config(config)

    def _timestep(self, logsnr: torch.Tensor) -> torch.Tensor:
        self.schedule.warn_out_of_range(logsnr)
        return self.schedule.timestep(logsnr).to(self.device, torch.float32)

    def _scale_input(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        return vp_to_flow(z, logsnr.to(z.device))

    def _to_eps(self, out: torch.Tensor, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        return flow_to_eps(out, z.to(out.device), logsnr.to(out.device))

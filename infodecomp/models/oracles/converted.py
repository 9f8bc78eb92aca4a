"""The exact oracles dressed as the networks of each family: DDPM epsilon and v prediction shown a
timestep, rectified-flow velocity networks shown 1000 t, and a v network on the continuous channel.

Each wrapper holds an exact oracle and an inner "network" written in that parametrisation's own
variables, from its definition only:

- DDPM network (kind "eps" or "v" with a `DiscreteSchedule`): shown z and a timestep t, it reads
  its logsnr off its own table log(abar_t / (1 - abar_t)) (abar = cumprod(1 - betas)), linear
  between integer timesteps, and outputs eps* (epsilon) or v = a eps* - s x* at that logsnr.
  With a `ContinuousSchedule` (shapes-learned) the time input is T sigmoid(-logsnr / scale).
- v network without a schedule (kind "v"): shown the VP point z at logsnr; with eps* the oracle's
  optimal noise, x* = (z - s eps*) / a and it outputs v = a eps* - s x*.
- flow network: shown z_flow and the time input 1000 t (as SD 3's transformer); it recovers t,
  puts z_flow on the oracle's channel (logsnr = 2 log((1 - t) / t), z = z_flow / |(1 - t, t)|),
  and outputs v = eps* - x* with x* = (z_flow - t eps*) / (1 - t).

`eps_hat` then goes through the code the real adapters run: the schedule's `timestep` under the
time rule (models/dynamics/schedule.py, models/dynamics/flow.py) and the conversion functions
(models/dynamics/conversions.py: `v_to_eps`; `vp_to_flow`, `flow_to_eps`), so any error there
(t for 1 - t, a shifted time rule, a missing scale) shows as a failed exact check in
`infodecomp validate` (its conversion rows run every family's conversion by default; `model=X`
runs X's). `last_time` keeps the time input the inner network was last shown, for validate's
time rows. Everything else (world, noise, log_prob, sampling, sigma_range) is the wrapped
oracle's: the wrappers keep the ExactLikelihood capability and the same exact checks.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from infodecomp.models.dynamics.conversions import flow_timestep, flow_to_eps, v_to_eps, vp_to_flow

KINDS = ("eps", "v", "flow")
FLOW_TIME_SCALE = 1000.0  # the flow network's time input is 1000 t, as SD 3's


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view((-1,) + (1,) * (like.dim() - 1))


def v_network(oracle: Any, z: torch.Tensor, logsnr: torch.Tensor, cond: Any) -> torch.Tensor:
    """The oracle as a v-prediction network: v = a eps* - s x* (float64)."""
    zd, lv = z.double(), logsnr.double()
    a, s = _col(torch.sigmoid(lv).sqrt(), zd), _col(torch.sigmoid(-lv).sqrt(), zd)
    eps = oracle.eps_hat(zd, lv, cond).double()
    x = (zd - s * eps) / a
    return a * eps - s * x


def flow_network(
    oracle: Any,
    z_flow: torch.Tensor,
    time: torch.Tensor,
    cond: Any,
    time_scale: float = FLOW_TIME_SCALE,
) -> torch.Tensor:
    """The oracle as a rectified-flow velocity network shown (z_flow, scale t): v = eps* - x*."""
    zf = z_flow.double()
    t = time.double() / time_scale
    logsnr = 2 * (torch.log1p(-t) - torch.log(t))  # (1 - t)^2 / t^2 = a^2 / s^2
    norm = _col(torch.sqrt((1 - t) ** 2 + t**2), zf)
    eps = oracle.eps_hat(zf / norm, logsnr, cond).double()
    x = (zf - _col(t, zf) * eps) / _col(1 - t, zf)
    return eps - x


def network_logsnr(schedule: Any, time: torch.Tensor) -> torch.Tensor:
    """The logsnr a network trained on `schedule` reads off its time input [B] (float64).

    DDPM (`betas`): its own table log(abar_t / (1 - abar_t)), abar = cumprod(1 - betas), linear
    in t between integer timesteps (np.interp; clamped to the ends); continuous schedule:
    time = T sigmoid(-logsnr / scale), so logsnr = scale log((T - time) / time).
    """
    import numpy as np

    tv = time.detach().double().cpu()
    betas = getattr(schedule, "betas", None)
    if betas is not None:
        abar = np.cumprod(1.0 - betas.double().cpu().numpy())
        table = np.log(abar) - np.log1p(-abar)  # [T], decreasing in t
        out = np.interp(tv.numpy().ravel(), np.arange(len(table), dtype=np.float64), table)
        return torch.from_numpy(out).view(tv.shape)
    n = float(schedule.num_train_timesteps)
    return schedule.time_scale * (torch.log(n - tv) - torch.log(tv))


def ddpm_network(
    oracle: Any, z: torch.Tensor, time: torch.Tensor, cond: Any, schedule: Any, kind: str
) -> torch.Tensor:
    """The oracle as a DDPM network shown (z, t): eps* ("eps") or v = a eps* - s x* ("v") at the
    logsnr its training schedule gives t (float64)."""
    zd = z.double()
    lv = network_logsnr(schedule, time).to(zd.device)
    eps = oracle.eps_hat(zd, lv, cond).double()
    if kind == "eps":
        return eps
    a, s = _col(torch.sigmoid(lv).sqrt(), zd), _col(torch.sigmoid(-lv).sqrt(), zd)
    return a * eps - s * (zd - s * eps) / a


class ConvertedOracle:
    """An exact oracle seen through a v-prediction or rectified-flow parametrisation.

    Args:
        oracle: a ShapesOracle or GaussianOracle.
        kind: "eps", "v" or "flow".
        schedule: the network's time variable: a DiscreteSchedule or ContinuousSchedule
            (needed for "eps"; "v" without one is shown the continuous channel), a FlowSchedule
            for "flow" (None: SD 3's, time input 1000 t).
        time_rule: the DDPM time rule ("nearest" or "continuous") of a DiscreteSchedule.
    """

    def __init__(
        self, oracle: Any, kind: str, schedule: Any = None, time_rule: str = "nearest"
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"conversion kind {kind!r} is not one of: {', '.join(KINDS)}")
        if kind == "eps" and schedule is None:
            raise ValueError("an epsilon network needs the schedule of its time input")
        self.inner, self.kind = oracle, kind
        self.schedule, self.time_rule = schedule, time_rule
        self.device = oracle.device
        self.world, self.noise = oracle.world, oracle.noise  # ExactLikelihood capability
        self.last_time: torch.Tensor | None = None  # the inner network's last time input

    def with_inner(self, oracle: Any) -> ConvertedOracle:
        """The same conversion around another oracle (validate's Gaussian check uses its own)."""
        return ConvertedOracle(oracle, self.kind, self.schedule, self.time_rule)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes this class lacks: sample_scene, sigma_range, cov, ...
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def log_prob(self, x: torch.Tensor, condition: Any = None) -> torch.Tensor:
        if condition is None:
            return self.inner.log_prob(x)
        return self.inner.log_prob(x, condition)

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        return self.inner.encode_images(images)

    def encode_conditions(self, conditions: Sequence[Hashable]) -> Any:
        return self.inner.encode_conditions(conditions)

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: Any) -> torch.Tensor:
        """eps through the shared conversion functions, in z's dtype."""
        if self.kind == "flow":
            scale = getattr(self.schedule, "time_scale", FLOW_TIME_SCALE)
            time = (
                self.schedule.timestep(logsnr)
                if self.schedule is not None
                else flow_timestep(logsnr, FLOW_TIME_SCALE)
            )
            self.last_time = time.detach().double().cpu()
            out = flow_network(self.inner, vp_to_flow(z.double(), logsnr), time, cond, scale)
            eps = flow_to_eps(out, z, logsnr)
        elif self.schedule is None:  # the v network on the continuous channel
            out = v_network(self.inner, z, logsnr, cond)
            eps = v_to_eps(out, z, logsnr)
        else:  # a DDPM network shown the schedule's timestep under the time rule
            time = self.schedule.timestep(logsnr, self.time_rule)
            self.last_time = time.detach().double().cpu()
            out = ddpm_network(self.inner, z, time, cond, self.schedule, self.kind)
            eps = v_to_eps(out, z, logsnr) if self.kind == "v" else out.float()
        return eps.to(z.dtype)

    def __repr__(self) -> str:
        sched = "" if self.schedule is None else f", {type(self.schedule).__name__}"
        rule = f", time_rule={self.time_rule!r}" if hasattr(self.schedule, "betas") else ""
        return f"ConvertedOracle({type(self.inner).__name__}, kind={self.kind!r}{sched}{rule})"

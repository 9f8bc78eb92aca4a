"""The exact oracles dressed as a v-prediction network and as a rectified-flow velocity network.

Each wrapper holds an exact oracle and an inner "network" written in that parametrisation's own
variables, from its definition only:

- v network: shown the VP point z at logsnr; with eps* the oracle's optimal noise,
  x* = (z - s eps*) / a and it outputs v = a eps* - s x*.
- flow network: shown z_flow and the time input 1000 t (as SD 3's transformer); it recovers t,
  puts z_flow on the oracle's channel (logsnr = 2 log((1 - t) / t), z = z_flow / |(1 - t, t)|),
  and outputs v = eps* - x* with x* = (z_flow - t eps*) / (1 - t).

`eps_hat` then goes through the conversion functions the real adapters call
(models/dynamics/conversions.py: `v_to_eps`; `flow_timestep`, `vp_to_flow`, `flow_to_eps`), so any error
there (t for 1 - t, a missing scale) shows as a failed exact check in `infodecomp validate
model=shapes-oracle-flow`. Everything else (world, noise, log_prob, sampling, sigma_range) is the
wrapped oracle's: the wrappers keep the ExactLikelihood capability and the same exact checks.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from infodecomp.models.dynamics.conversions import flow_timestep, flow_to_eps, v_to_eps, vp_to_flow

KINDS = ("v", "flow")
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


def flow_network(oracle: Any, z_flow: torch.Tensor, time: torch.Tensor, cond: Any) -> torch.Tensor:
    """The oracle as a rectified-flow velocity network shown (z_flow, 1000 t): v = eps* - x*."""
    zf = z_flow.double()
    t = time.double() / FLOW_TIME_SCALE
    logsnr = 2 * (torch.log1p(-t) - torch.log(t))  # (1 - t)^2 / t^2 = a^2 / s^2
    norm = _col(torch.sqrt((1 - t) ** 2 + t**2), zf)
    eps = oracle.eps_hat(zf / norm, logsnr, cond).double()
    x = (zf - _col(t, zf) * eps) / _col(1 - t, zf)
    return eps - x


class ConvertedOracle:
    """An exact oracle seen through a v-prediction or rectified-flow parametrisation.

    Args:
        oracle: a ShapesOracle or GaussianOracle.
        kind: "v" or "flow".
    """

    def __init__(self, oracle: Any, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"conversion kind {kind!r} is not one of: {', '.join(KINDS)}")
        self.inner, self.kind = oracle, kind
        self.device = oracle.device
        self.world, self.noise = oracle.world, oracle.noise  # ExactLikelihood capability

    def with_inner(self, oracle: Any) -> ConvertedOracle:
        """The same conversion around another oracle (validate's Gaussian check uses its own)."""
        return ConvertedOracle(oracle, self.kind)

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
        if self.kind == "v":
            out = v_network(self.inner, z, logsnr, cond)
            eps = v_to_eps(out, z, logsnr)
        else:
            time = flow_timestep(logsnr, FLOW_TIME_SCALE)
            out = flow_network(self.inner, vp_to_flow(z.double(), logsnr), time, cond)
            eps = flow_to_eps(out, z, logsnr)
        return eps.to(z.dtype)

    def __repr__(self) -> str:
        return f"ConvertedOracle({type(self.inner).__name__}, kind={self.kind!r})"

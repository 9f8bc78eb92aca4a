"""The engine's channel in each family's own variables: one set of conversion functions.

The engine asks every model for eps_hat on the variance-preserving channel

    z = a x + s eps,   a = sqrt(sigmoid(logsnr)),  s = sqrt(sigmoid(-logsnr)).

A network trained on another parametrisation sees the same channel after a change of variables.
These functions are the only place those changes are written; the family adapters
(models/families/latent.py, models/dynamics/flow.py) and the exact-oracle wrappers (models/oracles/converted.py) both call
them, so `infodecomp validate model=shapes-oracle-flow` proves the code the real adapters run.

epsilon prediction (DDPM: SD 1.x/2.x, SDXL, PixArt): abar_t = sigmoid(logsnr); z is fed as is
and the output is eps.

v prediction (SD 2.x 768): v = a eps - s x; eps = a v + s z (`v_to_eps`).

rectified flow (SD 3.x, Flux.1): z_flow = (1 - t) x + t eps with velocity v = eps - x.
Matching the signal-to-noise ratio, (1 - t)^2 / t^2 = a^2 / s^2 = exp(logsnr), gives

    t = 1 / (1 + exp(logsnr / 2)) = sigmoid(-logsnr / 2),     1 - t = sigmoid(logsnr / 2),

and since (1 - t) / a = t / s = c, with c^2 (a^2 + s^2) = (1 - t)^2 + t^2,

    z_flow = c z,   c = sqrt((1 - t)^2 + t^2).

From z_flow = (1 - t) x + t eps, x = (z_flow - t eps) / (1 - t) and v = eps - x =
(eps - z_flow) / (1 - t), so eps = z_flow + (1 - t) v (`flow_to_eps`). Time is continuous: the
network is shown t itself (SD 3 scaled by 1000, Flux.1 as is), no nearest-timestep rule.

Schedule shifts. SD 3's `shift` s maps t -> s t / (1 + (s - 1) t) and Flux.1's dynamic shift mu
maps t -> e^mu / (e^mu + 1/t - 1). In logsnr both are translations,
logsnr -> logsnr - 2 log s and logsnr -> logsnr - 2 mu (`shift_logsnr`): they move the grid a
sampler visits, not the channel, so they do not enter eps_hat (an importance sampler may mimic
one with `estimator.loc`).
"""

from __future__ import annotations

import math

import torch


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, ..., 1] broadcasting against `like` [B, ...]."""
    return v.view((-1,) + (1,) * (like.dim() - 1))


def alpha_sigma64(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) of the VP channel in float64 for logsnr [B]."""
    lv = logsnr.detach().double()
    return torch.sigmoid(lv).sqrt(), torch.sigmoid(-lv).sqrt()


def flow_time(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, 1 - t) in float64 for logsnr [B]: t = sigmoid(-logsnr / 2); 1 - t without cancellation."""
    lv = logsnr.detach().double()
    return torch.sigmoid(-lv / 2), torch.sigmoid(lv / 2)


def flow_scale(logsnr: torch.Tensor) -> torch.Tensor:
    """c [B] float64 with z_flow = c z_vp: c = sqrt((1 - t)^2 + t^2)."""
    t, one_minus_t = flow_time(logsnr)
    return torch.hypot(one_minus_t, t)


def flow_timestep(logsnr: torch.Tensor, scale: float = 1000.0) -> torch.Tensor:
    """The flow network's time input [B] float64: scale * t (SD 3: 1000 t; Flux.1 pipelines
    divide by 1000 again before the call)."""
    return scale * flow_time(logsnr)[0]


def vp_to_flow(z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """z_vp [B, ...] -> z_flow = c z_vp, in z's dtype."""
    return (_col(flow_scale(logsnr).to(z.device), z) * z.double()).to(z.dtype)


def flow_to_eps(v: torch.Tensor, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """Velocity v = eps - x predicted at z_flow = c z -> eps [B, ...] float32.

    eps = z_flow + (1 - t) v, with z the VP point [B, ...] and logsnr [B] the continuous values
    that built it. Computed in float64, returned float32.
    """
    t, one_minus_t = flow_time(logsnr.to(z.device))
    z_flow = _col(torch.hypot(one_minus_t, t), z) * z.double()
    return (z_flow + _col(one_minus_t, z) * v.double()).float()


def v_to_eps(v: torch.Tensor, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """v-prediction -> eps [B, ...] float32: eps = a v + s z, exact for the (a, s) that built z.

    With z = a x + s eps and v = a eps - s x, a v + s z = (a^2 + s^2) eps = eps. `logsnr` must be
    the continuous value used to build z, not the timestep the network was shown.
    """
    lv = logsnr.to(z.device, torch.float32)
    a, s = _col(torch.sigmoid(lv).sqrt(), z), _col(torch.sigmoid(-lv).sqrt(), z)
    return a * v.float() + s * z.float()


def shift_logsnr(logsnr: torch.Tensor, shift: float | None = None, mu: float | None = None):
    """The logsnr a flow sampler's shifted time corresponds to: logsnr - 2 log(shift) (SD 3's
    static shift) or logsnr - 2 mu (Flux.1's dynamic shift exp(mu)). Give one of the two."""
    if (shift is None) == (mu is None):
        raise ValueError("give exactly one of shift (SD 3) or mu (Flux.1 dynamic shifting)")
    return logsnr - 2 * (math.log(shift) if shift is not None else mu)


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD 3's shifted sampling time shift t / (1 + (shift - 1) t) (for tests and docs)."""
    return shift * t / (1 + (shift - 1) * t)


def logsnr_of_flow_time(t: torch.Tensor) -> torch.Tensor:
    """logsnr [B] float64 of flow times t in (0, 1): 2 log((1 - t) / t)."""
    td = t.double()
    return 2 * (torch.log1p(-td) - torch.log(td))


__all__ = [
    "alpha_sigma64",
    "flow_scale",
    "flow_time",
    "flow_timestep",
    "flow_to_eps",
    "logsnr_of_flow_time",
    "shift_logsnr",
    "shift_time",
    "v_to_eps",
    "vp_to_flow",
]

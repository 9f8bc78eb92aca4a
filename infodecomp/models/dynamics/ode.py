"""Deterministic samplers on a Denoiser: the probability-flow ODE (Heun, Karras sigmas) and DDIM.

Variables. The VP channel z = a x + s eps (a^2 = sigmoid(logsnr)) and the VE variable
x_sigma = x + sigma eps describe the same noisy point with sigma = s / a = exp(-logsnr / 2) and
z = x_sigma / sqrt(1 + sigma^2). In the VE variable the probability-flow ODE is
dx / dsigma = eps_hat(x / sqrt(1 + sigma^2), logsnr = -2 log sigma), which Heun's 2nd-order
method integrates (Karras et al., 2022, Alg. 2 without churn: a fresh evaluation at the
predictor point every step). DDIM is the same ODE under a
first-order exponential-integrator step on the VP variable.

Every function takes any object with `eps_hat(z [B, C, H, W], logsnr [B], cond [B, ...])`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from infodecomp.models.dynamics.schedule import DiscreteSchedule


def karras_sigmas(
    sigma_min: float, sigma_max: float, n: int = 100, rho: float = 7.0
) -> torch.Tensor:
    """n sigmas from sigma_max down to sigma_min, equally spaced in sigma^(1 / rho). Returns [n] float64."""
    if n < 2:
        raise ValueError(f"need at least 2 sigmas, got {n}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def _ve_eps(denoiser: Any, x: torch.Tensor, sigma: float, cond: torch.Tensor) -> torch.Tensor:
    """dx / dsigma = eps_hat at the VP point of x_sigma. x [B, C, H, W] float32."""
    z = x / math.sqrt(1.0 + sigma * sigma)  # [B, C, H, W]
    logsnr = torch.full((x.shape[0],), -2.0 * math.log(sigma), device=x.device)  # [B]
    return denoiser.eps_hat(z, logsnr, cond).to(x.device, torch.float32)


# Integrators of the probability-flow ODE (`solver`):
#   heun        Heun's 2nd-order method (Karras et al. 2022, Alg. 1/2 without churn): each step
#               from s0 to s1 evaluates the slope at the current point and again at the Euler
#               predictor at s1, and moves by their mean: 2 denoiser evaluations per step.
#   heun-reuse  the step infodecomp used before issue 23: the predictor's slope at s1 is carried
#               over as the next step's first slope, so the corrected point itself is never
#               evaluated (1 evaluation per step after the first; not Heun, first-order error
#               in the slope). Kept only to measure what the fix changed.
SOLVERS = ("heun", "heun-reuse")
# Where the path meets the clean latent (`ends`):
#   zero       inversion starts with an Euler step from sigma 0 to sigma_min (slope taken at the
#              clean latent as if at sigma_min); generation ends with an Euler step from
#              sigma_min to 0 (Karras Alg. 2's final step).
#   sigma-min  the published intervention code: inversion takes the clean latent as the point
#              at sigma_min, generation returns the point at sigma_min (no step to 0).
ENDS = ("zero", "sigma-min")


def check_ode(solver: str, ends: str) -> None:
    """One-line error for an unknown solver or end-point convention."""
    if solver not in SOLVERS:
        raise ValueError(f"ode solver={solver!r} is not one of: {', '.join(SOLVERS)}")
    if ends not in ENDS:
        raise ValueError(f"ode ends={ends!r} is not one of: {', '.join(ENDS)}")


def heun_step(
    denoiser: Any, x: torch.Tensor, cond: torch.Tensor, s0: float, s1: float
) -> torch.Tensor:
    """One Heun step of the VE flow from sigma s0 to s1 (either direction): 2 evaluations."""
    d0 = _ve_eps(denoiser, x, s0, cond)  # slope at the current point
    x_euler = x + (s1 - s0) * d0  # [B, C, H, W]
    d1 = _ve_eps(denoiser, x_euler, s1, cond)  # fresh slope at the predictor
    return x + (s1 - s0) * 0.5 * (d0 + d1)


def _integrate(
    denoiser: Any, x: torch.Tensor, cond: torch.Tensor, path: list[float], solver: str
) -> torch.Tensor:
    if solver == "heun":
        for s0, s1 in zip(path[:-1], path[1:], strict=True):
            x = heun_step(denoiser, x, cond, s0, s1)
        return x
    d = _ve_eps(denoiser, x, path[0], cond)  # heun-reuse (see SOLVERS)
    for s0, s1 in zip(path[:-1], path[1:], strict=True):
        x_euler = x + (s1 - s0) * d  # [B, C, H, W]
        d1 = _ve_eps(denoiser, x_euler, s1, cond)
        x = x + (s1 - s0) * 0.5 * (d + d1)
        d = d1
    return x


@torch.no_grad()
def invert(
    denoiser: Any,
    latent: torch.Tensor,
    cond: torch.Tensor,
    sigmas: torch.Tensor,
    solver: str = "heun",
    ends: str = "zero",
) -> torch.Tensor:
    """Runs the probability-flow ODE from a clean latent up to sigma_max.

    Args:
        denoiser: anything with `eps_hat`.
        latent: clean latents [B, C, H, W].
        cond: encodings [B, ...] (one per row).
        sigmas: [n] decreasing (as from `karras_sigmas`).
        solver, ends: see SOLVERS and ENDS.

    Returns:
        x at sigma_max in the VE variable [B, C, H, W] float32 (std about sigma_max).

    eps_hat is undefined at sigma 0, so the clean latent enters at sigma_min: with ends="zero"
    after an Euler step (slope at the clean latent taken as x_sigma_min; it mirrors the last
    step of `generate`), with ends="sigma-min" as it is. Heun's method carries the rest
    (n - 1 steps).
    """
    check_ode(solver, ends)
    path = [float(s) for s in sigmas.flip(0)]
    x = latent.float()
    if ends == "zero":
        x = x + path[0] * _ve_eps(denoiser, x, path[0], cond)
    return _integrate(denoiser, x, cond, path, solver)


@torch.no_grad()
def generate(
    denoiser: Any,
    latent_t: torch.Tensor,
    cond: torch.Tensor,
    sigmas: torch.Tensor,
    solver: str = "heun",
    ends: str = "zero",
) -> torch.Tensor:
    """Runs the probability-flow ODE from x at sigma_max (VE variable) down to a clean latent.

    Args:
        denoiser: anything with `eps_hat`.
        latent_t: [B, C, H, W] at sigmas[0]; pure noise is sigma_max * randn.
        cond: encodings [B, ...].
        sigmas: [n] decreasing.
        solver, ends: see SOLVERS and ENDS.

    Returns:
        Clean latents [B, C, H, W] float32: n - 1 Heun steps down to sigma_min, then (ends=
        "zero") an Euler step to 0, or (ends="sigma-min") the point at sigma_min itself.
    """
    check_ode(solver, ends)
    path = [float(s) for s in sigmas]
    x = _integrate(denoiser, latent_t.float(), cond, path, solver)
    if ends == "sigma-min":
        return x
    return x - path[-1] * _ve_eps(denoiser, x, path[-1], cond)


def evaluations(n_sigmas: int, solver: str, ends: str) -> int:
    """Denoiser evaluations of one `invert` or `generate` pass over n_sigmas sigmas."""
    check_ode(solver, ends)
    steps = n_sigmas - 1
    inner = 2 * steps if solver == "heun" else steps + 1
    return inner + (1 if ends == "zero" else 0)


def ddim_logsnrs(schedule: DiscreteSchedule, n_steps: int = 50) -> torch.Tensor:
    """logsnr [n_steps] of diffusers' DDIM timesteps ("leading" spacing), from least to most noisy.

    Timesteps are k * (T // n_steps) + steps_offset for k = 0 .. n_steps - 1 (SD: 1, 21, ..., 981).
    """
    if not 1 <= n_steps <= schedule.num_train_timesteps:
        raise ValueError(f"n_steps must be in [1, {schedule.num_train_timesteps}], got {n_steps}")
    ratio = schedule.num_train_timesteps // n_steps
    t = (torch.arange(n_steps) * ratio + schedule.steps_offset).clamp(
        max=schedule.num_train_timesteps - 1
    )
    return schedule.logsnr_table[t]


def _vp(logsnr: float) -> tuple[float, float]:
    if logsnr == math.inf:
        return 1.0, 0.0
    return math.sqrt(1 / (1 + math.exp(-logsnr))), math.sqrt(1 / (1 + math.exp(logsnr)))


def _ddim_step(z: torch.Tensor, eps: torch.Tensor, src: float, dst: float) -> torch.Tensor:
    """Moves z from logsnr src to dst keeping the predicted noise: z' = a' x0_hat + s' eps."""
    a0, s0 = _vp(src)
    a1, s1 = _vp(dst)
    x0 = (z - s0 * eps) / a0  # [B, C, H, W]
    return a1 * x0 + s1 * eps


def _eps(denoiser: Any, z: torch.Tensor, logsnr: float, cond: torch.Tensor) -> torch.Tensor:
    lv = torch.full((z.shape[0],), logsnr, device=z.device)  # [B]
    return denoiser.eps_hat(z, lv, cond).to(z.device, torch.float32)


@torch.no_grad()
def ddim_invert(
    denoiser: Any,
    latent: torch.Tensor,
    cond: torch.Tensor,
    logsnrs: torch.Tensor,
    clean: float = math.inf,
) -> torch.Tensor:
    """Deterministic DDIM inversion: clean latent [B, C, H, W] -> VP z at the noisiest level.

    Each step from level i to i + 1 uses the noise predicted at the current z shown at level
    i + 1 (the usual inversion approximation, as diffusers' DDIMInverseScheduler). The latent
    starts at logsnr `clean`: +inf (exactly clean) by default; diffusers' DDIM schedulers with
    set_alpha_to_one = false start it at the level of abar_0 (`DiscreteSchedule.ddim_clean_logsnr`).
    `logsnrs` [n] go from least to most noisy.
    """
    levels = [float(clean)] + [float(v) for v in logsnrs]
    z = latent.float()
    for src, dst in zip(levels[:-1], levels[1:], strict=True):
        z = _ddim_step(z, _eps(denoiser, z, dst, cond), src, dst)
    return z


@torch.no_grad()
def ddim_generate(
    denoiser: Any, z: torch.Tensor, cond: torch.Tensor, logsnrs: torch.Tensor
) -> torch.Tensor:
    """Deterministic DDIM sampling from VP z at the noisiest of `logsnrs` down to a clean latent."""
    levels = [float(v) for v in logsnrs.flip(0)] + [math.inf]
    z = z.float()
    for src, dst in zip(levels[:-1], levels[1:], strict=True):
        z = _ddim_step(z, _eps(denoiser, z, src, cond), src, dst)
    return z

"""Check 8: every conversion the families use, through the exact-oracle wrappers
(models/oracles/converted.py), which run the adapters' own time rules and conversion functions.

Per conversion three kinds of rows:
- time input: the time the wrapped network was shown against the rule's definition, computed
  here independently (nearest: argmin over the network's own logsnr table; continuous DDPM:
  linear interpolation of that table; continuous schedule: T sigmoid(-logsnr / scale); flow:
  scale / (1 + exp(logsnr / 2))). Exact up to float64 rounding.
- eps: the converted prediction against the oracle's own optimal eps at the same (z, logsnr),
  for the conversions exact at any logsnr (every one but the nearest rule, which shows the
  network the nearest table level by design).
- the Gaussian pair's pointwise i^o and i^s through the conversion under the paper's sampler
  (inside every trained range), against the exact values on [-5, 7].

`validate` (model=shapes-oracle) runs every conversion of `DEFAULT`; `validate model=X` runs
the one X uses (`conversion_of`), on X's own schedule and time rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infodecomp.experiments.commands.validate.gaussian import gaussian_checks
from infodecomp.experiments.commands.validate.table import PAPER, PAPER_RANGE, row
from infodecomp.models.oracles.converted import FLOW_TIME_SCALE, ConvertedOracle
from infodecomp.models.oracles.exact import GaussianOracle

CHECK = "8 conversions"
TIME_TOL = {"nearest": 0.0, "continuous": 1e-6}  # timesteps
EPS_RTOL = 1e-4  # eps relative to its rms: float32 conversion arithmetic (v_to_eps, flow_to_eps)


@dataclass(frozen=True)
class Conversion:
    """How one family's network sees the engine's channel."""

    name: str  # e.g. "eps, nearest t"
    kind: str  # eps | v | flow
    schedule: Any  # DiscreteSchedule | ContinuousSchedule | FlowSchedule
    time_rule: str = "continuous"  # nearest | continuous (DDPM tables only)
    families: str = ""

    def wrap(self, oracle: Any) -> ConvertedOracle:
        return ConvertedOracle(oracle, self.kind, self.schedule, self.time_rule)


def default_conversions() -> list[Conversion]:
    """Every conversion the families use: SD's DDPM table (epsilon and v, both time rules),
    shapes-learned's continuous schedule and the rectified-flow time of SD 3 / Flux.1."""
    from infodecomp.models.dynamics.flow import FlowSchedule
    from infodecomp.models.dynamics.schedule import DiscreteSchedule
    from infodecomp.models.families.shapes_learned import SCHEDULE
    from infodecomp.models.tiny.sd import SCHEDULER_CONFIG

    sd = DiscreteSchedule.from_config(SCHEDULER_CONFIG)  # SD 1.x / 2.x's scaled_linear table
    out = []
    for kind, fams in (("eps", "SD 1.x/2.x base, SDXL, PixArt"), ("v", "SD 2.x 768")):
        for rule in ("nearest", "continuous"):
            out.append(Conversion(f"{kind}, {rule} t", kind, sd, rule, fams))
    out.append(Conversion("eps, continuous schedule", "eps", SCHEDULE, families="shapes-learned"))
    out.append(Conversion("flow, 1000 t", "flow", FlowSchedule(), families="SD 3, Flux.1"))
    return out


def conversion_of(model: Any) -> Conversion | None:
    """The conversion a loaded model runs (its schedule, prediction type and time rule), or None
    for a model without one (the plain oracles)."""
    from infodecomp.models.dynamics.flow import FlowSchedule

    if isinstance(model, ConvertedOracle):
        if model.schedule is None and model.kind == "v":
            return None  # the v network on the continuous channel: check 1 runs through it
        if model.kind == "flow":
            scale = getattr(model.schedule, "time_scale", FLOW_TIME_SCALE)
            return Conversion(f"flow, {scale:g} t", "flow", model.schedule, families=repr(model))
        rule = model.time_rule if hasattr(model.schedule, "betas") else "continuous"
        return Conversion(
            f"{model.kind}, {rule} t", model.kind, model.schedule, rule, families=repr(model)
        )
    schedule = getattr(model, "schedule", None)
    if schedule is None:
        return None
    name = type(model).__name__
    if isinstance(schedule, FlowSchedule):
        return Conversion(f"flow, {schedule.time_scale:g} t", "flow", schedule, families=name)
    kind = "v" if schedule.prediction_type == "v_prediction" else "eps"
    rule = getattr(model, "time_rule", "continuous") if hasattr(schedule, "betas") else "continuous"
    return Conversion(f"{kind}, {rule} t", kind, schedule, rule, families=name)


def reference_time(conv: Conversion, logsnr: torch.Tensor) -> torch.Tensor:
    """The time input the conversion's rule defines for logsnr [B] (float64), from the
    definitions, without the schedule's `timestep` code."""
    lv = logsnr.double().numpy()
    sched = conv.schedule
    if conv.kind == "flow":
        scale = getattr(sched, "time_scale", FLOW_TIME_SCALE)  # None: the wrapper's SD 3 default
        return torch.from_numpy(scale / (1.0 + np.exp(lv / 2)))
    betas = getattr(sched, "betas", None)
    if betas is None:  # continuous schedule
        n = sched.num_train_timesteps
        return torch.from_numpy(n / (1.0 + np.exp(lv / sched.time_scale)))
    abar = np.cumprod(1.0 - betas.double().numpy())
    table = np.log(abar) - np.log1p(-abar)  # [T] decreasing in t
    if conv.time_rule == "nearest":
        return torch.from_numpy(np.abs(table[None, :] - lv[:, None]).argmin(1).astype(np.float64))
    steps = np.arange(len(table), dtype=np.float64)
    return torch.from_numpy(np.interp(lv, table[::-1], steps[::-1]))


def _exact_everywhere(conv: Conversion) -> bool:
    return not (conv.time_rule == "nearest" and hasattr(conv.schedule, "betas"))


def conversion_rows(conv: Conversion, seed: int, n_items: int = 400) -> list[dict]:
    """The time, eps and Gaussian rows of one conversion."""
    tag = f" [{conv.name}]"
    oracle = GaussianOracle(seed=seed)
    wrapped = conv.wrap(oracle)
    gen = torch.Generator().manual_seed(seed + 8)
    n = 512
    x, y = oracle.sample(n, gen)
    lo, hi = PAPER_RANGE
    logsnr = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    eps = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    z = torch.sigmoid(logsnr).sqrt()[:, None] * x + torch.sigmoid(-logsnr).sqrt()[:, None] * eps
    cond = wrapped.encode_conditions([tuple(v.tolist()) for v in y])
    got = wrapped.eps_hat(z.float(), logsnr.float(), cond).double()
    rows = []
    shown = wrapped.last_time
    if shown is not None:
        ref = reference_time(conv, logsnr.float().double())
        rule = conv.time_rule if hasattr(conv.schedule, "betas") else "continuous"
        rows.append(
            row(
                CHECK,
                f"max |time input - the rule's definition| over {n} logsnr in [{lo:g}, {hi:g}]"
                + tag,
                0.0,
                float((shown.view(-1) - ref).abs().max()),
                0.0,
                tol=TIME_TOL[rule],
                reason="the nearest rule shows an integer timestep: exactly equal"
                if rule == "nearest"
                else "a continuous time: equal up to float64 rounding (1e-6 timesteps)",
                note=conv.families,
            )
        )
    if _exact_everywhere(conv):
        want = oracle.eps_hat(z.float().double(), logsnr.float().double(), cond).double()
        rms = float(want.square().mean().sqrt())
        rows.append(
            row(
                CHECK,
                f"max |eps converted - eps oracle| / rms(eps), same (z, logsnr){tag}",
                0.0,
                float((got - want).abs().max()) / rms,
                0.0,
                tol=EPS_RTOL,
                relative_to="rms(eps)",
                reason="the conversion is exact at every logsnr: float32 conversion arithmetic "
                "only",
                note=conv.families,
            )
        )
    rows += gaussian_checks(
        n_items,
        seed,
        8192,
        like=wrapped,
        samplers=((CHECK, PAPER, True),),
        identities=False,
        tag=tag,
    )
    return rows

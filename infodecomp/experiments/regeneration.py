"""Prompt interventions by regeneration: each image inverted with the probability-flow ODE under
its caption, regenerated under edited captions, and the change maps between them (`intervene`,
`calibrate`)."""

from __future__ import annotations

import torch

from infodecomp.models.capabilities import ProbabilityFlow
from infodecomp.models.dynamics.ode import generate, invert, karras_sigmas


def ode_sigmas(model, n: int) -> torch.Tensor:
    if not isinstance(model, ProbabilityFlow):
        raise ValueError(
            f"intervene needs a model the probability-flow ODE can run on (ProbabilityFlow); "
            f"{type(model).__name__} has no sigma_range"
        )
    return karras_sigmas(*model.sigma_range, n=n)


def regenerate(
    model, items: list, xs: torch.Tensor, n_sigmas: int, edits: list[str]
) -> dict[str, torch.Tensor]:
    """Each image inverted with the probability-flow ODE under its caption, then regenerated
    with the caption ("orig"), the word omitted ("omit", the "_" context) and, when `edits`
    has "swap", the word swapped: name -> clean data points [N, C, h, w]."""
    sigmas = ode_sigmas(model, n_sigmas)
    x = xs.to(model.device, torch.float32)
    prompts = {"orig": [it.caption for it in items], "omit": [it.context_blank for it in items]}
    if "swap" in edits:
        prompts["swap"] = [it.swap_caption or it.caption for it in items]
    conds = {k: model.encode_conditions(v) for k, v in prompts.items()}
    x_t = invert(model, x, conds["orig"], sigmas)
    return {k: generate(model, x_t, c, sigmas) for k, c in conds.items()}


def change_map(regen: dict[str, torch.Tensor], edit: str, i: int) -> torch.Tensor:
    """Item i's change map [h, w]: the squared difference (channels summed) between its
    regeneration under `edit` and under the original caption."""
    return (regen["orig"][i] - regen[edit][i]).square().sum(0).cpu()

"""Prompt interventions by regeneration: each image inverted with the probability-flow ODE under
its caption, regenerated under edited captions, the change maps between them and the round-trip
error (`intervene`, `calibrate`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from infodecomp.experiments.maps import EXACT_DRAWS
from infodecomp.models.capabilities import ProbabilityFlow
from infodecomp.models.dynamics.ode import generate, invert, karras_sigmas


def ode_sigmas(model, n: int) -> torch.Tensor:
    if not isinstance(model, ProbabilityFlow):
        raise ValueError(
            f"intervene needs a model the probability-flow ODE can run on (ProbabilityFlow); "
            f"{type(model).__name__} has no sigma_range"
        )
    return karras_sigmas(*model.sigma_range, n=n)


@contextmanager
def _autocast(model, dtype: str) -> Iterator[None]:
    if dtype == "none":
        yield
        return
    with torch.autocast(device_type=model.device.type, dtype=getattr(torch, dtype)):
        yield


def regenerate(
    model,
    items: list,
    xs: torch.Tensor,
    n_sigmas: int,
    edits: list[str],
    *,
    solver: str = "heun",
    ends: str = "zero",
    trace: str | None = None,
    autocast: str = "none",
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Each image inverted with the probability-flow ODE under its caption, then regenerated
    with the caption ("orig"), the word omitted ("omit", the "_" context) and, when `edits`
    has "swap", the word swapped. Returns (name -> clean data points [N, C, h, w], attention).

    With `trace` (an attention aggregation), the regeneration of the original is traced and
    its maps [N, T, h, w] returned (DAAM over the regeneration, the published Table 4 path),
    under `autocast` ("none", "float16", "bfloat16"); otherwise attention is None.
    """
    sigmas = ode_sigmas(model, n_sigmas)
    ode = {"solver": solver, "ends": ends}
    x = xs.to(model.device, torch.float32)
    prompts = {"orig": [it.caption for it in items], "omit": [it.context_blank for it in items]}
    if "swap" in edits:
        prompts["swap"] = [it.swap_caption or it.caption for it in items]
    conds = {k: model.encode_conditions(v) for k, v in prompts.items()}
    x_t = invert(model, x, conds["orig"], sigmas, **ode)
    out, maps = {}, None
    if trace is not None:
        with _autocast(model, autocast), model.trace(aggregation=trace) as rec:
            out["orig"] = generate(model, x_t, conds["orig"], sigmas, **ode).float()
        maps = rec.maps()  # [N, T, h, w]
    for k, c in conds.items():
        if k not in out:
            out[k] = generate(model, x_t, c, sigmas, **ode)
    return out, maps


def change_map(regen: dict[str, torch.Tensor], edit: str, i: int) -> torch.Tensor:
    """Item i's change map [h, w]: the squared difference (channels summed) between its
    regeneration under `edit` and under the original caption."""
    return (regen["orig"][i] - regen[edit][i]).square().sum(0).cpu()


def roundtrip_rmse(regen: dict[str, torch.Tensor], xs: torch.Tensor, i: int) -> float:
    """Item i's round-trip error: the root mean square over data-grid elements of
    generate(invert(x)) - x under its own caption (the regeneration every change map is
    measured against), in the data's units (SD latents: about unit variance)."""
    x = xs[i].float().cpu()
    return float((regen["orig"][i].float().cpu() - x).square().mean().sqrt())


def exact_swap_info(
    model, items: list, xs: torch.Tensor, seed: int, n_draws: int = EXACT_DRAWS
) -> list:
    """Per item, the exact i(x; caption | swapped caption) with its map (oracle posteriors),
    or None for an item without a swap edit; draws seeded by (seed, "swap", item)."""
    out = []
    for it, x in zip(items, xs, strict=True):
        if not it.swap_caption:
            out.append(None)
            continue
        digest = hashlib.blake2b(repr((seed, "swap", str(it.item_id))).encode(), digest_size=4)
        out.append(
            model.exact_info(
                x.cpu(),
                it.caption,
                it.swap_caption,
                n_draws=n_draws,
                seed=int(digest.hexdigest(), 16),
            )
        )
    return out

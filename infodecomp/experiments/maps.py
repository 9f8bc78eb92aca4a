"""Per-item heat maps shared by localize, intervene and visualize: CMI, MI and attention."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, draw, estimate
from infodecomp.models.capabilities import (
    AttentionCapture,
    DaamInversion,
    ExactInformation,
    ImageModel,
)

# Exact references on ShapesWorld: eps draws of each item's exact CMI (Monte Carlo error 1-3% of
# the total, an order of magnitude below the estimates' at the paper's budgets; it is recorded).
EXACT_DRAWS = 2**15


def has_daam(model: object) -> bool:
    """The DAAM baseline needs attention capture and DDIM inversion."""
    return isinstance(model, AttentionCapture) and isinstance(model, DaamInversion)


def has_traced_attention(model: object) -> bool:
    """Attention+Information needs attention capture only."""
    return isinstance(model, AttentionCapture)


def context_of(item, blank: bool) -> str:
    return item.context_blank if blank else item.context


def info_queries(items: list, xs: torch.Tensor, blank: bool) -> list[Query]:
    """Per item: conditions (caption, context, word, "") with contrasts CMI = (0, 1), MI = (2, 3)."""
    return [
        Query(
            xs[i].cpu(),
            (it.caption, context_of(it, blank), it.word, ""),
            ((0, 1), (2, 3)),
            key=str(it.item_id),
        )
        for i, it in enumerate(items)
    ]


def exact_word_info(model, items: list, xs: torch.Tensor, blank: bool, seed: int) -> list | None:
    """Per item, the exact i^o(x; word | context) with its pixel map (oracle posteriors), or None
    for a model without exact information. Each item's draws are seeded by (seed, item)."""
    if not isinstance(model, ExactInformation):
        return None
    return [
        model.exact_info(
            x.cpu(),
            it.caption,
            context_of(it, blank),
            n_draws=EXACT_DRAWS,
            seed=int(
                hashlib.blake2b(repr((seed, str(it.item_id))).encode(), digest_size=4).hexdigest(),
                16,
            ),
        )
        for it, x in zip(items, xs, strict=True)
    ]


def exact_range(sampler, exact) -> tuple[float, float]:
    """The sampler's logsnr support rounded outwards to the exact reference's panel edges."""
    lo, hi = sampler.support
    edges = exact.edges
    lo = float(edges[edges <= lo].max()) if bool((edges <= lo).any()) else float(edges[0])
    hi = float(edges[edges >= hi].min()) if bool((edges >= hi).any()) else float(edges[-1])
    return lo, hi


def info_maps(model, queries: list[Query], ecfg: EngineConfig) -> list[ItemEstimate]:
    """Pixel-wise i^o maps (channels summed) for every contrast of every query."""
    return estimate(model, queries, replace(ecfg, pixel_maps=True))


def daam_word_map(model, item, x: torch.Tensor, daam_steps: int) -> torch.Tensor:
    """The DAAM baseline: attention traced over DDIM inversion + reconstruction of the image [h, w]."""
    return model.word_map(
        model.daam_maps(x, item.caption, n_steps=daam_steps), item.caption, item.word
    )


def traced_word_map(model, item, x: torch.Tensor, ecfg: EngineConfig) -> torch.Tensor:
    """Attention+Information: attention over single calls at the item's sampled logsnr [h, w]."""
    logsnr, _, eps = draw(
        Query(x, (item.caption,), key=str(item.item_id)), ecfg
    )  # the CMI map's draws
    traced = model.attention_maps(x, item.caption, logsnr.float(), eps, max_batch=ecfg.max_batch)
    return model.word_map(traced, item.caption, item.word)


def split_of(item_id: str) -> str:
    """A stable half ('A' or 'B') for the held-out threshold protocol."""
    return "AB"[hashlib.blake2b(str(item_id).encode(), digest_size=1).digest()[0] % 2]


def to_image_grid(
    model, heat: torch.Tensor, mask: torch.Tensor | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A map and its ground-truth mask on one grid: the image's (resized) resolution for diffusers
    models (maps bilinear-upsampled, masks resized like the image), the data grid for oracles."""
    if isinstance(model, ImageModel):
        size = model.image_size
        heat = model.upsample_map(heat, size)
        mask = model.mask_transform(mask, size) if mask is not None else None
    out_mask = None if mask is None else mask.bool().cpu().numpy()
    return heat.float().cpu().numpy(), out_mask

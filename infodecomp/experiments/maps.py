"""Per-item heat maps shared by localize, intervene and visualize: CMI, MI and attention."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, draw, estimate
from infodecomp.models.attention import expand_attention_map
from infodecomp.models.capabilities import AttentionCapture, DaamInversion, ImageModel


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


def info_maps(model, queries: list[Query], ecfg: EngineConfig) -> list[ItemEstimate]:
    """Pixel-wise i^o maps (channels summed) for every contrast of every query."""
    return estimate(model, queries, replace(ecfg, pixel_maps=True))


def daam_word_map(
    model, item, x: torch.Tensor, daam_steps: int, attention: str = "daam"
) -> torch.Tensor:
    """The DAAM baseline: attention traced over DDIM inversion + reconstruction of the image [h, w].

    `attention` is the aggregation ("daam" or "layer-mean"; models.attention). The word's
    tokens are found by infodecomp's rule (a run of tokens starting at a word boundary), not
    DAAM's (the word's pieces anywhere in the caption); see models.attention.
    """
    maps = model.daam_maps(x, item.caption, n_steps=daam_steps, aggregation=attention)
    return model.word_map(maps, item.caption, item.word)


def traced_word_map(
    model, item, x: torch.Tensor, ecfg: EngineConfig, attention: str = "daam"
) -> torch.Tensor:
    """Attention+Information: attention over single calls at the item's sampled logsnr [h, w],
    aggregated as `attention` says."""
    logsnr, _, eps = draw(
        Query(x, (item.caption,), key=str(item.item_id)), ecfg
    )  # the CMI map's draws
    traced = model.attention_maps(
        x, item.caption, logsnr.float(), eps, max_batch=ecfg.max_batch, aggregation=attention
    )
    return model.word_map(traced, item.caption, item.word)


def split_of(item_id: str) -> str:
    """A stable half ('A' or 'B') for the held-out threshold protocol."""
    return "AB"[hashlib.blake2b(str(item_id).encode(), digest_size=1).digest()[0] % 2]


def to_image_grid(
    model, heat: torch.Tensor, mask: torch.Tensor | None, attention: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A map and its ground-truth mask on one grid: the image's (resized) resolution for diffusers
    models (masks resized like the image), the data grid for oracles.

    Maps are upsampled bilinearly, except attention maps under `attention="daam"`, which are
    expanded bicubic as DAAM does (models.attention.expand_attention_map); give `attention`
    only for attention maps.
    """
    if isinstance(model, ImageModel):
        size = model.image_size
        if attention is None or attention == "layer-mean":
            heat = model.upsample_map(heat, size)
        else:
            heat = expand_attention_map(heat, size, attention)
        mask = model.mask_transform(mask, size) if mask is not None else None
    out_mask = None if mask is None else mask.bool().cpu().numpy()
    return heat.float().cpu().numpy(), out_mask

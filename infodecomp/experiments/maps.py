"""Per-item heat maps shared by localize, intervene and visualize: CMI, MI and attention."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, draw, estimate
from infodecomp.estimators.queries import context_of, word_queries
from infodecomp.experiments.errors import ConfigError
from infodecomp.models.attention.capture import expand_attention_map
from infodecomp.models.attention.concept import BACKGROUND_CONCEPTS
from infodecomp.models.capabilities import (
    AttentionCapture,
    ConceptAttentionMaps,
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


CONCEPT = "concept"  # `attention=concept`: ConceptAttention maps beside the raw cross-attention


def has_concept_attention(model: object) -> bool:
    """ConceptAttention needs a joint-attention family (SD 3.x, Flux.1)."""
    return isinstance(model, ConceptAttentionMaps)


def raw_aggregation(attention: str) -> str:
    """The aggregation of the raw cross-attention maps under an `attention` setting: DAAM's
    under `attention=concept` (the ConceptAttention maps are a method of their own)."""
    return "daam" if attention == CONCEPT else attention


def check_concept(model: object, attention: str, name: str = "the model") -> bool:
    """Whether ConceptAttention maps are asked for (`attention=concept`); a one-line ConfigError
    when the model has no joint attention to run them in."""
    if attention != CONCEPT:
        return False
    if not has_concept_attention(model):
        raise ConfigError(
            f"attention=concept needs a joint-attention model (SD 3.x, Flux.1: model=sd35-*, "
            f"flux-*, tiny-sd3, tiny-flux); {name} ({type(model).__name__}) has none: use "
            "attention=daam"
        )
    return True


def concept_list(item, items: list = ()) -> list[str]:
    """The concepts an item's ConceptAttention map competes with: the item's word first, then
    the concepts its data set names for it (`extra["concepts"]`, e.g. a segmentation set's other
    class names), the words of the data set's other items on the same image and caption, and
    the published background concepts (background, floor, grass, tree, sky); each once."""
    others = [o.word for o in items if o.caption == item.caption and _same_image(o, item)]
    extra = (item.extra or {}).get("concepts", ())
    return unique_concepts([item.word, *extra, *others, *BACKGROUND_CONCEPTS])


def unique_concepts(names) -> list[str]:
    """`names` without empty or repeated (case-insensitive) entries, in order."""
    out: list[str] = []
    for c in names:
        if c and c.lower() not in {o.lower() for o in out}:
            out.append(c)
    return out


def _same_image(a, b) -> bool:
    """Whether two items name the same image (a path or id; tensors only when the same object)."""
    ia, ib = getattr(a, "image", None), getattr(b, "image", None)
    if ia is ib:
        return True
    if isinstance(ia, torch.Tensor) or isinstance(ib, torch.Tensor):
        return False
    return ia == ib


def concept_word_map(model, item, x: torch.Tensor, concepts: list[str], seed: int) -> torch.Tensor:
    """The item's ConceptAttention map [gh, gw] on the image patch grid: concept 0 (the word)
    among `concepts`, one network evaluation at the published noise level, its noise drawn from
    (seed, item id)."""
    maps = model.concept_maps(x.cpu(), item.caption, concepts, key=str(item.item_id), seed=seed)
    return maps[0]


def concept_word_maps(model, items: list, xs: torch.Tensor, cfg, all_items: list) -> dict:
    """localize's ConceptAttention maps, item id -> [gh, gw], under `attention=concept` with
    method `concept` (else empty): one network evaluation per item, noise from (run.seed, id)."""
    if "concept" not in cfg.methods or not check_concept(model, cfg.attention, cfg.model.name):
        return {}
    return {
        it.item_id: concept_word_map(model, it, x, concept_list(it, all_items), cfg.run.seed)
        for it, x in zip(items, xs, strict=True)
    }


def exact_word_info(
    model, items: list, xs: torch.Tensor, blank: bool, seed: int, n_draws: int = EXACT_DRAWS
) -> list | None:
    """Per item, the exact i^o(x; word | context) with its pixel map (oracle posteriors), or None
    for a model without exact information. Each item's `n_draws` eps draws are seeded by
    (seed, item)."""
    if not isinstance(model, ExactInformation):
        return None
    return [
        model.exact_info(
            x.cpu(),
            it.caption,
            context_of(it, blank),
            n_draws=n_draws,
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
    model,
    item,
    x: torch.Tensor,
    ecfg: EngineConfig,
    attention: str = "daam",
    n_draw: int | None = None,
) -> torch.Tensor:
    """Attention+Information: attention over single calls at the item's sampled logsnr [h, w],
    aggregated as `attention` says. With `n_draw`, the first ecfg.n_samples of an n_draw-sample
    draw (nested budgets, as the CMI maps take them)."""
    n = ecfg.n_samples
    logsnr, _, eps = draw(
        Query(x, (item.caption,), key=str(item.item_id)), replace(ecfg, n_samples=n_draw or n)
    )  # the CMI map's draws
    logsnr, eps = logsnr[:n], eps[:n]
    traced = model.attention_maps(
        x, item.caption, logsnr.float(), eps, max_batch=ecfg.max_batch, aggregation=attention
    )
    return model.word_map(traced, item.caption, item.word)


@dataclass
class WordMaps:
    """One word item's maps on the model's data grid (the latent grid of a latent model).

    `estimate` holds the engine's estimate of the item's queries (`word_queries`): contrast 0 is
    the CMI of the word given the context, contrast 1 the MI of the word alone; its `io_map`
    [2, h, w] is the pixel-wise i^o in nats per data-grid pixel (channels summed).
    `attention` (DAAM) and `attn_info` (Attention+Information) are [h, w] word maps, present
    only where the model has the capability and they were asked for; `concept` the
    ConceptAttention map [gh, gw] on the image patch grid (joint-attention models only).
    """

    estimate: ItemEstimate
    attention: torch.Tensor | None = None
    attn_info: torch.Tensor | None = None
    concept: torch.Tensor | None = None


def word_maps(
    model,
    items: list,
    xs: torch.Tensor,
    ecfg: EngineConfig,
    *,
    daam: bool = True,
    traced: bool = False,
    attention: str = "daam",
    daam_steps: int = 50,
    blank: bool = False,
    concepts: list[str] | None = None,
    seed: int = 0,
) -> list[WordMaps]:
    """CMI and MI maps of every (image, caption, word) item, plus the DAAM baseline (`daam`)
    and Attention+Information (`traced`) where the model supports them, aggregated as
    `attention` says; with `attention=concept` also the ConceptAttention map (concepts: the
    item's word and `concepts`, default `concept_list`). Shared by `visualize` and the Python
    API (infodecomp.api.maps)."""
    ests = info_maps(model, word_queries(items, xs, blank), ecfg)
    with_concept = check_concept(model, attention)
    agg = raw_aggregation(attention)
    out = []
    for it, x, e in zip(items, xs, ests, strict=True):
        wm = WordMaps(e)
        if daam and has_daam(model):
            wm.attention = daam_word_map(model, it, x.cpu(), daam_steps, agg)
        if traced and has_traced_attention(model):
            wm.attn_info = traced_word_map(model, it, x.cpu(), ecfg, agg)
        if with_concept:
            names = (
                concept_list(it, items)
                if concepts is None
                else unique_concepts([it.word, *concepts])
            )
            wm.concept = concept_word_map(model, it, x, names, seed)
        out.append(wm)
    return out


def mmse_curve_data(
    est: ItemEstimate, labels: dict[int, str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label -> (logsnr samples sorted [S], ||eps - eps_hat(z | c_k)||^2 per sample [S]) for
    the conditions k of `labels`, as reporting.figures.mmse_curves draws them."""
    return {label: tuple(t.numpy() for t in est.mmse_curve(k)) for k, label in labels.items()}


def display_image(model, image: Any) -> np.ndarray:
    """The image as the model saw it, H x W x 3 in [0, 1]: resized for an image model, mapped
    from [-1, 1] for data-space tensors (ShapesWorld), scaled from 8 bits for PIL images."""
    if isinstance(model, ImageModel):
        return model.preview(image).permute(1, 2, 0).numpy()
    if isinstance(image, torch.Tensor):
        return ((image.float() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


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

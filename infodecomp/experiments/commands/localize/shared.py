"""What `localize`'s protocols share: the batch every heat-map producer reads, the estimates of
its information maps over the step counts, the row schema, the published baselines' input and
the gallery's items (localize's word protocols in the package, PascalVOC's multi-class one in
`multi`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from infodecomp.estimators.protocol import encode_keyed
from infodecomp.estimators.queries import word_queries
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import LocalizeConfig
from infodecomp.experiments.maps import info_maps, split_of
from infodecomp.experiments.runner import RunContext
from infodecomp.reporting.metrics import IOU_COLUMNS
from infodecomp.reporting.segmentation import SEG_COLUMNS

OBJECT_MASK = "object mask"
GALLERY = "figures"  # <item>-maps.png of the first `gallery` items (the report's gallery)
PUBLISHED_MAP_BATCH = 10  # images per batch of the published localisation maps (shared logsnr)
BUG_INPUT = "zero-one-published-bug"
MULTI_CLASS = "voc-multi"  # data.classes=multi: one label map per image (localize.multi)


def published_batch(item) -> int:
    """The batch of 10 consecutive manifest rows an item's row fell in, in the published code."""
    row = (getattr(item, "extra", None) or {}).get("row")
    if row is None:
        raise ValueError(
            f"map_draws=batch-published: item {item.item_id} has no manifest row (COCO data "
            "sets only); use map_draws=item"
        )
    return int(row) // PUBLISHED_MAP_BATCH


def baseline_latents(model, images: list, keys: list | None = None, seed: int = 0) -> object:
    """The latents the published DAAM and Attention+Information baselines encode (a bug): the
    image resized as the model resizes it, its [0, 1] pixels given to the VAE as they are
    (never mapped to [-1, 1]). Only under baseline_input=zero-one-published-bug. With `keys`,
    a VAE sample is drawn from (seed, key) (protocol.encode_keyed); without, from the pixels."""
    previews = [model.preview(im) for im in images]
    if keys is None:
        return model.encode_images(previews)  # [N, C, h, w]
    return encode_keyed(model, previews, keys, seed)


def _row(
    item, method: str, n_steps: int, value: float, ious: np.ndarray, reference: str = OBJECT_MASK
) -> dict:
    row = {
        "item_id": item.item_id,
        "word": item.word,
        "word_type": item.word_type,
        "method": method,
        "reference": reference,
        "n_steps": n_steps,
        "split": split_of(item.item_id),
        "value": value,
    }
    row.update(dict(zip(IOU_COLUMNS, ious.tolist(), strict=True)))
    row.update(dict.fromkeys(SEG_COLUMNS))  # filled on a segmentation benchmark (_seg_rows)
    return row


def baseline_input(ctx: RunContext, items: list, images: list, xs: torch.Tensor, used: bool):
    """The latents the DAAM and Attention+Information baselines read: `xs` (the model's own
    encoding), or under baseline_input=zero-one-published-bug, when a baseline is `used`, the
    published [0, 1]-pixel encoding (baseline_latents, keyed by item)."""
    if not used or ctx.cfg.baseline_input != BUG_INPUT:
        return xs
    keys = [f"{it.item_id}/zero-one" for it in items]
    return baseline_latents(ctx.model, images, keys, ctx.cfg.run.seed)


@dataclass
class Batch:
    """What every heat-map producer and scorer of one batch reads: the items, their data points
    (`xb`: what the attention baselines encode), ground truths and the batch-wide baselines."""

    ctx: RunContext
    items: list
    images: list
    xs: torch.Tensor  # [N, C, h, w]
    xb: torch.Tensor  # the baselines' latents (baseline_input)
    masks: list
    refs: list[str]
    daam: dict = field(default_factory=dict)  # item id -> DAAM map (one inversion per item)
    exact: list | None = None  # exact information per item (oracles)
    traced: bool = False  # Attention+Information asked for and possible
    targets: list | None = None  # segmentation benchmark: eval_target per item
    protocol: str | None = None  # segmentation benchmark's protocol (tasks.segmentation)
    attention: str = "daam"  # aggregation of the raw cross-attention maps (raw_aggregation)
    concept: dict = field(default_factory=dict)  # item id -> ConceptAttention map


def estimates(b: Batch, make_queries=None):
    """(step count, estimates per item, engine config, nested top or None) for every step count
    of `steps`: with iid draws the step counts are prefixes of one draw of the largest (50/100/
    200: 200 samples per item, not 350); other modes' prefixes are not samples of the proposal,
    and the published batches run every step count on its own draw. `make_queries(items, xs)`
    gives the queries (default: word_queries, the CMI and MI of each item's word)."""
    cfg: LocalizeConfig = b.ctx.cfg
    model, items, xs = b.ctx.model, b.items, b.xs
    if make_queries is None:
        queries = word_queries(items, xs, cfg.blank_context, mi_prompt=cfg.mi_prompt)
    else:
        queries = make_queries(items, xs)
    per_batch = cfg.map_draws == "batch-published"
    top = max(cfg.steps)
    nested = (
        engine_config(cfg.estimator, cfg.run).sampler.mode == "iid"
        and len(cfg.steps) > 1
        and not per_batch
    )
    if nested:
        ecfg_top = engine_config(cfg.estimator, cfg.run, n_samples=top)
        full = info_maps(model, queries, replace(ecfg_top, prefixes=tuple(set(cfg.steps))))
    for steps in cfg.steps:
        ecfg = engine_config(cfg.estimator, cfg.run, n_samples=steps)
        if nested:
            ests = [e.prefix(steps) for e in full]
        elif per_batch:  # one logsnr set per (batch, step count); eps per (item, step count)
            keys = [("published-batch", published_batch(it), steps) for it in items]
            ests = info_maps(
                model,
                word_queries(
                    items, xs, cfg.blank_context, True, cfg.mi_prompt, keys, key_suffix=steps
                ),
                ecfg,
            )
        else:
            ests = info_maps(model, queries, ecfg)
        yield steps, ests, ecfg, top if nested else None


def gallery_ids(ctx: RunContext) -> set[str]:
    """The items whose maps are saved: the first `gallery` items of the data set (a fixed set,
    whatever the batching, sharding or resumption)."""
    return {str(it.item_id) for it in ctx.dataset.items[: max(0, ctx.cfg.gallery)]}

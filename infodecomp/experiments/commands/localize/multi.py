"""`localize` on PascalVOC's published multi-class evaluation (data=voc-seg data.classes=multi,
protocol voc-multi): one item per image, every method's maps of the concepts, one label map per
method, scored over the 21 VOC labels (reporting.segmentation.score_labels).

The concepts of an image are the five published background concepts (background, floor, grass,
tree, sky), then its present classes, in that order (the argmax takes the first of equal
values, as the published one). Per method:

- `mi`: one query per image with the conditions (concept 1, ..., concept K, "") and contrast k =
  (k, K): each concept's pixel-wise MI map on common draws, the unconditional prediction
  evaluated once per draw (K + 1 network rows per logsnr sample);
- `concept` (attention=concept): ConceptAttention's maps of all the concepts from one network
  evaluation, the image's published caption ("a cat,a dog") in the text stream;
- `attention` and `attn_info`: each concept's map from its own prompt "a <concept>" (one DAAM
  inversion, or one traced run, per concept).

The label map: at each pixel the concept with the largest value; a background concept is label
0, a class its VOC label (`multi_labels=chained-published-bug`: as the published script
relabels, in place one class after another; reporting.segmentation.chained_labels). The row's
`value` is NaN (a label map has no total).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from infodecomp.data.segmentation import load_labels
from infodecomp.estimators.engine import Query
from infodecomp.experiments.commands.localize.shared import (
    GALLERY,
    Batch,
    _row,
    baseline_input,
    estimates,
    gallery_ids,
)
from infodecomp.experiments.maps import (
    check_concept,
    daam_word_map,
    display_image,
    has_daam,
    has_traced_attention,
    raw_aggregation,
    traced_word_map,
)
from infodecomp.experiments.runner import RunContext, encode_batch
from infodecomp.models.attention.concept import BACKGROUND_CONCEPTS
from infodecomp.reporting import figures
from infodecomp.reporting.metrics import IOU_COLUMNS
from infodecomp.reporting.segmentation import (
    argmax_labels,
    chained_labels,
    eval_labels,
    score_labels,
)

CHAINED = "chained-published-bug"  # multi_labels: the published script's relabelling
METHODS = ("mi", "attention", "attn_info", "concept")  # the methods this protocol scores


def concepts_of(item) -> tuple[list[str], list[int]]:
    """(the concepts of a multi-class item, their VOC labels): the background concepts (0),
    then the present classes."""
    words, classes = item.extra["concepts"], item.extra["classes"]
    return [*BACKGROUND_CONCEPTS, *words], [0] * len(BACKGROUND_CONCEPTS) + list(classes)


def concept_queries(items: list, xs: torch.Tensor, key_suffix=None) -> list[Query]:
    """Per image: conditions (concept 1, ..., concept K, "") with contrast k = (k, K), the MI of
    each concept on the image's common draws."""
    out = []
    for it, x in zip(items, xs, strict=True):
        concepts, _ = concepts_of(it)
        k = len(concepts)
        key = str(it.item_id) if key_suffix is None else (str(it.item_id), key_suffix)
        out.append(Query(x.cpu(), (*concepts, ""), tuple((j, k) for j in range(k)), key=key))
    return out


def prompt_item(item, concept: str):
    """The item one concept's attention map is read from: word `concept`, prompt "a <concept>"."""
    return replace(item, item_id=f"{item.item_id}/{concept}", word=concept, caption=f"a {concept}")


def per_concept(items: list, xs: torch.Tensor, word_map) -> list[np.ndarray]:
    """Per item, the stack [K, h, w] of `word_map(prompt_item, x)` over its concepts."""
    return [
        torch.stack([word_map(prompt_item(it, c), x.cpu()).float().cpu()
                     for c in concepts_of(it)[0]]).numpy()
        for it, x in zip(items, xs, strict=True)
    ]  # fmt: skip


def _fixed_stacks(ctx: RunContext, items: list, xs: torch.Tensor, xb: torch.Tensor) -> dict:
    """The stacks that do not depend on the logsnr budget, method -> per item [K, h, w]:
    ConceptAttention (one evaluation per image, on the model's encoding `xs`) and DAAM (one
    inversion per concept, on the baselines' latents `xb`)."""
    cfg, model = ctx.cfg, ctx.model
    out = {}
    if "concept" in cfg.methods and check_concept(model, cfg.attention, cfg.model.name):
        out["concept"] = [
            model.concept_maps(x.cpu(), it.caption, concepts_of(it)[0], key=str(it.item_id),
                               seed=cfg.run.seed).numpy()
            for it, x in zip(items, xs, strict=True)
        ]  # fmt: skip
    if "attention" in cfg.methods and has_daam(model):
        agg = raw_aggregation(cfg.attention)
        out["attention"] = per_concept(
            items, xb, lambda it, x: daam_word_map(model, it, x, cfg.daam_steps, agg)
        )
    return out


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    """The rows of a batch of multi-class items: per image, step count and method, the label
    map's counts (the draws and their nesting as localize's other protocols)."""
    cfg, model = ctx.cfg, ctx.model
    xs = encode_batch(ctx, items, images)
    used = bool({"attention", "attn_info"} & set(cfg.methods))
    b = Batch(ctx, items, images, xs, baseline_input(ctx, items, images, xs, used),
              [None] * len(items), [""] * len(items))  # fmt: skip
    fixed = _fixed_stacks(ctx, items, xs, b.xb)
    targets = [eval_labels(load_labels(it)) for it in items]
    traced = has_traced_attention(model) and "attn_info" in cfg.methods
    agg = raw_aggregation(cfg.attention)
    rows = []
    for steps, ests, ecfg, top in estimates(b, concept_queries):
        stacks = dict(fixed)
        if "mi" in cfg.methods:
            stacks["mi"] = [e.io_map.float().numpy() for e in ests]
        if traced:
            stacks["attn_info"] = per_concept(
                items, b.xb, lambda it, x, e=ecfg, n=top: traced_word_map(model, it, x, e, agg, n)
            )
        for i, it in enumerate(items):
            preds = {m: label_map(cfg, it, stacks[m][i]) for m in METHODS if m in stacks}
            for method, pred in preds.items():
                r = _row(it, method, steps, float("nan"), np.full(len(IOU_COLUMNS), np.nan))
                rows.append(r | score_labels(pred, targets[i]))
            if steps == max(cfg.steps):
                _save_gallery(ctx, it, images[i], preds, targets[i], steps)
    return rows


def label_map(cfg, item, maps: np.ndarray) -> np.ndarray:
    """The item's VOC label map [h, w] from its concept maps [K, h, w] (multi_labels: direct, or
    the published script's chained relabelling)."""
    if cfg.multi_labels == CHAINED:
        return chained_labels(np.argmax(maps, axis=0), len(BACKGROUND_CONCEPTS),
                              item.extra["classes"])  # fmt: skip
    return argmax_labels(maps, concepts_of(item)[1])


def _save_gallery(ctx: RunContext, item, image, preds: dict, target: np.ndarray, steps: int):
    """figures/<item>-maps.png for the gallery's images: each method's label map and the ground
    truth labels (void drawn as background), on one colour scale of the 21 labels."""
    if str(item.item_id) not in gallery_ids(ctx):
        return
    shown = display_image(ctx.model, image)
    size = (shown.shape[1], shown.shape[0])  # labels enlarged by nearest: no blended colours

    def big(labels: np.ndarray) -> np.ndarray:
        small = Image.fromarray(np.asarray(labels, dtype=np.uint8))
        return np.asarray(small.resize(size, Image.NEAREST), dtype=np.float64)

    maps = {f"{m} labels": big(p) for m, p in preds.items()}
    maps["ground truth"] = big(np.where(target == 255, 0, target))
    fig = figures.panel(
        shown, maps, shared_scale=list(maps),
        title=f"{item.caption or 'no object class'} ({steps} logsnr samples)", overlay=False,
        cmap="tab20",
    )  # fmt: skip
    figures.save(fig, ctx.out / GALLERY / f"{item.item_id}-maps.png")

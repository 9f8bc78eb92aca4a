"""`infodecomp localize`: word localisation by pixel-wise CMI, MI and attention (Table 3).

For every (image, caption, word) and every step count in `steps`, the CMI map compares the
caption with the caption without the word, the MI map the word alone with the empty prompt.
With iid draws (the paper's) the step counts are nested prefixes of one draw of the largest
(50 / 100 / 200: 200 samples per item instead of 350; EngineConfig.prefixes); other sampler
modes run each step count on its own draw.
With a cross-attention model, the DAAM baseline and Attention+Information maps are added,
aggregated as `attention` says (`daam`: DAAM's aggregation, the default and the paper's;
`layer-mean`: heads averaged per layer; see models.attention); meta.json records the choice.
With a joint-attention model (SD 3.x, Flux.1), `attention=concept` adds ConceptAttention maps
(method `concept`, models.attention.concept; the concepts: experiments.maps.concept_list) beside
the raw cross-attention, aggregated as DAAM's; other models refuse it in one line.
The published localisation scripts, where they differ from these defaults, are options (set
together by configs/experiment/paper-table3.yaml; README "Table 3 as the published scripts ran
it"): `mi_prompt=label` (the MI map prompts with the manifest's Label, not the word),
`map_draws=batch-published` (one set of logsnr values per batch of 10 manifest rows, every step
count its own run), `model.resample=bilinear model.mask_resample=nearest`, `data.wl_mask=
all-objects-published` (COCO-WL), and, only by name, `baseline_input=zero-one-published-bug`
(the published DAAM and Attention+Information baselines encode [0, 1] pixels).
IoU against the ground-truth mask is stored at the 50 thresholds of the published protocol;
`aggregate` reports the paper's best-threshold mIoU and a held-out-threshold variant, overall and
per word type.

With a model that has exact information (the ShapesWorld oracle) two references are added: the
exact CMI map scored against the object masks (method `exact`: what a perfect estimator scores
under the protocol), and the estimated CMI map scored against the exact information mask
(reference `exact map`: at each threshold t, the pixels where the exact map on the estimator's
logsnr range, min-max normalised, exceeds t, i.e. the same protocol with the exact map in place
of the object mask). The first shows what the object-mask protocol caps (a shape word's
information sits on the ring where the alternatives differ, a relation word's on the cells the
context allows), the second that the estimator finds the information where it is.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from infodecomp.data.coco import MANIFEST_KINDS
from infodecomp.data.registry import WORDS
from infodecomp.estimators.protocol import encode_keyed
from infodecomp.estimators.queries import CMI, MI, word_queries
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import EstimatorConfig, LocalizeConfig
from infodecomp.experiments.maps import (
    concept_word_maps,
    daam_word_map,
    display_image,
    exact_range,
    exact_word_info,
    has_daam,
    has_traced_attention,
    info_maps,
    raw_aggregation,
    split_of,
    to_image_grid,
    traced_word_map,
)
from infodecomp.experiments.runner import RunContext, encode_batch, execute
from infodecomp.experiments.shim import hydra_main
from infodecomp.reporting import figures
from infodecomp.reporting.metrics import IOU_COLUMNS, iou_curve, iou_curve_maps, miou_cells
from infodecomp.reporting.writer import LOCALIZE_COLUMNS

log = logging.getLogger("infodecomp")
COLUMNS = LOCALIZE_COLUMNS  # the documented results.csv schema
METHODS = ("cmi", "mi", "attention", "attn_info", "whole", "exact", "concept")
OBJECT_MASK, EXACT_MAP = "object mask", "exact map"
ATTENTION_METHODS = ("attention", "attn_info")  # aggregated and expanded as cfg.attention says
GALLERY = "figures"  # <item>-maps.png of the first `gallery` items (the report's gallery)
PUBLISHED_MAP_BATCH = 10  # images per batch of the published localisation maps (shared logsnr)
BUG_INPUT = "zero-one-published-bug"


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
    return row


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: LocalizeConfig = ctx.cfg
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"localize methods {sorted(unknown)} unknown; choose from {METHODS}")
    xs = encode_batch(ctx, items, images)  # [N, C, h, w]
    attention = raw_aggregation(cfg.attention)  # of the raw cross-attention maps
    concept = concept_word_maps(ctx.model, items, xs, cfg, ctx.dataset.items)  # attention=concept
    masks = [ctx.dataset.load_mask(it) for it in items]
    refs = [(it.extra or {}).get("mask_reference", OBJECT_MASK) for it in items]
    nan = np.full(len(IOU_COLUMNS), np.nan)
    traced = has_traced_attention(ctx.model) and "attn_info" in cfg.methods
    baselines = traced or (has_daam(ctx.model) and "attention" in cfg.methods)
    xb = (
        baseline_latents(
            ctx.model, images, [f"{it.item_id}/zero-one" for it in items], cfg.run.seed
        )
        if baselines and cfg.baseline_input == BUG_INPUT
        else xs
    )
    daam = {}  # DAAM does not depend on the logsnr budget: one inversion per item
    if has_daam(ctx.model) and "attention" in cfg.methods:
        daam = {
            it.item_id: daam_word_map(ctx.model, it, x.cpu(), cfg.daam_steps, attention)
            for it, x in zip(items, xb, strict=True)
        }
    exact = None
    if "exact" in cfg.methods or "cmi" in cfg.methods:
        exact = exact_word_info(ctx.model, items, xs, cfg.blank_context, cfg.run.seed)
    rows = []
    queries = word_queries(items, xs, cfg.blank_context, mi_prompt=cfg.mi_prompt)
    per_batch = cfg.map_draws == "batch-published"
    batches = [published_batch(it) for it in items] if per_batch else None
    # iid draws: every step count is a prefix of one draw of the largest (50/100/200: 200
    # samples per item, not 350); other modes' prefixes are not samples of the proposal, and
    # the published batches run every step count on its own draw
    top = max(cfg.steps)
    nested = (
        engine_config(cfg.estimator, cfg.run).sampler.mode == "iid"
        and len(cfg.steps) > 1
        and not per_batch
    )
    if nested:
        ecfg_top = engine_config(cfg.estimator, cfg.run, n_samples=top)
        full = info_maps(ctx.model, queries, replace(ecfg_top, prefixes=tuple(set(cfg.steps))))
    for steps in cfg.steps:
        ecfg = engine_config(cfg.estimator, cfg.run, n_samples=steps)
        if nested:
            ests = [e.prefix(steps) for e in full]
        elif per_batch:  # one logsnr set per (batch, step count); eps per (item, step count)
            keys = [("published-batch", b, steps) for b in batches]
            ests = info_maps(
                ctx.model,
                word_queries(
                    items, xs, cfg.blank_context, True, cfg.mi_prompt, keys, key_suffix=steps
                ),
                ecfg,
            )
        else:
            ests = info_maps(ctx.model, queries, ecfg)
        if steps == top:
            save_gallery(ctx, items, images, ests, masks, daam, steps, concept)
        for i, (it, x, e, mask) in enumerate(zip(items, xb, ests, masks, strict=True)):
            heats = {
                "cmi": (e.io_map[CMI], e.info_o(CMI)[0]),
                "mi": (e.io_map[MI], e.info_o(MI)[0]),
            }
            if exact is not None:
                heats["exact"] = (exact[i].map().float(), exact[i].total("io")[0])
                if "cmi" in cfg.methods:  # the estimate against the exact map, same threshold
                    ref_map = exact[i].map(*exact_range(ecfg.sampler, exact[i]))
                    grid, _ = to_image_grid(ctx.model, e.io_map[CMI], None)
                    ref_grid, _ = to_image_grid(ctx.model, ref_map, None)
                    ious = iou_curve_maps(grid, ref_grid)
                    rows.append(_row(it, "cmi", steps, e.info_o(CMI)[0], ious, EXACT_MAP))
            if it.item_id in daam:
                heats["attention"] = (daam[it.item_id], float("nan"))
            if it.item_id in concept:
                heats["concept"] = (concept[it.item_id], float("nan"))
            if traced:
                acfg = ecfg
                if cfg.attn_info_clip is not None:
                    acfg = replace(ecfg, sampler=replace(ecfg.sampler, clip=cfg.attn_info_clip))
                heats["attn_info"] = (
                    traced_word_map(
                        ctx.model, it, x.cpu(), acfg, attention, top if nested else None
                    ),
                    float("nan"),
                )
            for method in cfg.methods:
                if method == "whole" or method not in heats:
                    continue
                heat, value = heats[method]
                agg = attention if method in ATTENTION_METHODS else None
                grid, gt = to_image_grid(ctx.model, heat, mask, attention=agg)
                ious = iou_curve(grid, gt) if gt is not None else nan
                rows.append(_row(it, method, steps, value, ious, refs[i]))
            if "whole" in cfg.methods:
                grid, gt = to_image_grid(ctx.model, e.io_map[CMI], mask)
                whole = np.full(len(IOU_COLUMNS), gt.mean()) if gt is not None else nan
                rows.append(_row(it, "whole", steps, float("nan"), whole, refs[i]))
    return rows


def gallery_ids(ctx: RunContext) -> set[str]:
    """The items whose maps are saved: the first `gallery` items of the data set (a fixed set,
    whatever the batching, sharding or resumption)."""
    return {str(it.item_id) for it in ctx.dataset.items[: max(0, ctx.cfg.gallery)]}


def save_gallery(
    ctx: RunContext, items, images, ests, masks, daam: dict, steps: int, concept: dict
) -> None:
    """figures/<item>-maps.png for the gallery's items of this batch: the image, the CMI and MI
    maps of the word on one colour scale (nats per pixel), the attention baseline where the
    model has one, the ConceptAttention map under attention=concept, and the ground-truth mask
    (the report shows them)."""
    shown = gallery_ids(ctx)
    folder = ctx.out / GALLERY
    for it, image, e, mask in zip(items, images, ests, masks, strict=True):
        if str(it.item_id) not in shown:
            continue
        maps = {
            f"CMI '{it.word}' | context": e.io_map[0].float().cpu().numpy(),
            f"MI '{it.word}'": e.io_map[1].float().cpu().numpy(),
        }
        if it.item_id in daam:
            agg = raw_aggregation(ctx.cfg.attention)
            maps[f"attention ({agg})"] = daam[it.item_id].float().cpu().numpy()
        if it.item_id in concept:
            maps["ConceptAttention"] = concept[it.item_id].float().cpu().numpy()
        if mask is not None:
            maps["ground truth"] = np.asarray(mask.cpu(), dtype=np.float64)
        fig = figures.panel(
            display_image(ctx.model, image),
            maps,
            shared_scale=list(maps)[:2],
            title=f"{it.caption} ({steps} logsnr samples)",
            units={k: "nats / pixel" for k in list(maps)[:2]},
        )
        figures.save(fig, folder / f"{it.item_id}-maps.png")


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    """mIoU per method and step count (paper protocol and held-out threshold). A held-out
    figure needs items in both halves; with fewer it is reported as NaN with a note."""
    metrics: dict = {}
    reference = results["reference"] if "reference" in results.columns else OBJECT_MASK
    for (method, steps, ref), df in results.assign(reference=reference).groupby(
        ["method", "n_steps", "reference"]
    ):
        df = df.dropna(subset=IOU_COLUMNS)
        if not len(df):
            continue
        paper, held = miou_cells(df)
        if ref != OBJECT_MASK:  # e.g. miou_vs_exact_map/cmi@100
            slug = "_".join("".join(c if c.isalnum() else " " for c in ref).split())
            metrics[f"miou_vs_{slug}/{method}@{steps}"] = float(paper)
            continue
        metrics[f"miou/{method}@{steps}"] = float(paper)
        metrics[f"miou_heldout/{method}@{steps}"] = float(held)
        if df["word_type"].nunique() > 1:
            for word_type, part in df.groupby("word_type"):
                metrics[f"miou/{method}@{steps}/{word_type}"] = float(miou_cells(part)[0])
    if any(k.startswith("miou_heldout/") and math.isnan(v) for k, v in metrics.items()):
        metrics["note/miou_heldout"] = (
            "held-out mIoU unavailable: it needs scored items in both halves (A and B) of the "
            "data; run more items"
        )
    top = max(int(s) for s in results["n_steps"].unique())
    for method in results["method"].unique():
        if f"miou/{method}@{top}" in metrics:
            metrics[f"miou/{method}"] = metrics[f"miou/{method}@{top}"]
    return metrics


def headline(metrics: dict) -> str:
    """The CMI mIoU against the object masks, else against the run's other reference (e.g. the
    published COCO-WL masks), named by its key."""
    keys = ["miou/cmi", *sorted(k for k in metrics if k.startswith("miou_vs_") and "/cmi@" in k)]
    key = next((k for k in keys if k in metrics), "miou/cmi")
    value = metrics.get(key)
    return f"{key} = {f'{value:.4g}' if isinstance(value, float) else value}"


def run(cfg: LocalizeConfig) -> Path:
    for option, value in (("mi_prompt", "label"), ("map_draws", "batch-published")):
        if getattr(cfg, option) == value and cfg.data.name not in MANIFEST_KINDS:
            raise ValueError(
                f"localize {option}={value} needs a COCO manifest (data={', '.join(MANIFEST_KINDS)}"
                f"); data={cfg.data.name} has none: leave {option} at its default"
            )
    if cfg.baseline_input == BUG_INPUT:
        log.warning(
            "localize baseline_input=%s: the DAAM and Attention+Information baselines encode "
            "[0, 1] pixels, as the published code did by mistake (the model was trained on "
            "[-1, 1]); for a faithful baseline use baseline_input=model",
            BUG_INPUT,
        )
    if cfg.estimator.n_samples != EstimatorConfig().n_samples:
        log.warning(
            "localize: estimator.n_samples=%d is not used; each map uses the logsnr samples "
            "of `steps` (now %s): set steps=[...] instead",
            cfg.estimator.n_samples,
            list(cfg.steps),
        )
    return execute(cfg, "localize", COLUMNS, process, summarize, headline=headline, consumes=WORDS)


main = hydra_main("localize", run)

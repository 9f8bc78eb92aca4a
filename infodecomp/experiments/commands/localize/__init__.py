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
per word type. On a zero-shot segmentation benchmark (data=imagenet-seg, voc-seg) each map is
scored instead as ConceptAttention's published evaluation scores it (reporting.segmentation:
counts and AP per map in the `seg_*` columns; pixel accuracy, mIoU and mAP in the summary and
aggregate's segmentation table); those sets have no captions, so the MI map is scored (their
CMI contrast is the same) and the attention methods see the prompt "a <word>".

Each method's heat map comes from its producer in HEATS (a new method is one entry there).

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
import torch

from infodecomp.data.coco import MANIFEST_KINDS
from infodecomp.data.registry import WORDS
from infodecomp.data.segmentation import load_target
from infodecomp.estimators.queries import CMI, MI
from infodecomp.experiments.config import EstimatorConfig, LocalizeConfig
from infodecomp.experiments.maps import (
    concept_word_maps,
    daam_word_map,
    display_image,
    exact_range,
    exact_word_info,
    has_daam,
    has_traced_attention,
    raw_aggregation,
    to_image_grid,
    traced_word_map,
)
from infodecomp.experiments.runner import RunContext, encode_batch, execute
from infodecomp.experiments.shim import hydra_main
from infodecomp.reporting import figures
from infodecomp.reporting.metrics import IOU_COLUMNS, iou_curve, iou_curve_maps, miou_cells
from infodecomp.reporting.segmentation import (
    benchmark_metrics,
    eval_target,
    score_map,
)
from infodecomp.reporting.writer import LOCALIZE_COLUMNS

from . import multi
from .shared import (  # noqa: F401  (published_batch, baseline_latents: part of the command's API)
    BUG_INPUT,
    GALLERY,
    MULTI_CLASS,
    OBJECT_MASK,
    PUBLISHED_MAP_BATCH,
    Batch,
    _row,
    baseline_input,
    baseline_latents,
    estimates,
    gallery_ids,
    published_batch,
)

log = logging.getLogger("infodecomp")
COLUMNS = LOCALIZE_COLUMNS  # the documented results.csv schema
METHODS = ("cmi", "mi", "attention", "attn_info", "whole", "exact", "concept")
EXACT_MAP = "exact map"
ATTENTION_METHODS = ("attention", "attn_info")  # aggregated and expanded as cfg.attention says
SEGMENTATION_DATA = ("imagenet-seg", "voc-seg")  # scored by reporting.segmentation


def captioned(item) -> bool:
    """Whether the item has a caption of its own (the segmentation sets have none: their CMI
    contrast is their MI, and is not scored twice)."""
    return (getattr(item, "extra", None) or {}).get("captioned", True)


def baseline_item(item):
    """The item the attention methods see: with the published evaluation's prompt ("a <word>")
    as its caption where the data set has no caption of its own."""
    prompt = (getattr(item, "extra", None) or {}).get("prompt")
    return replace(item, caption=prompt) if prompt and not captioned(item) else item


HeatMap = tuple[torch.Tensor, float]  # (map on the model's grid, the method's total or NaN)


def _heat_cmi(b: Batch, i: int, e, ecfg, top) -> HeatMap | None:
    return (e.io_map[CMI], e.info_o(CMI)[0]) if captioned(b.items[i]) else None


def _heat_mi(b: Batch, i: int, e, ecfg, top) -> HeatMap | None:
    return e.io_map[MI], e.info_o(MI)[0]


def _heat_exact(b: Batch, i: int, e, ecfg, top) -> HeatMap | None:
    if b.exact is None:
        return None
    return b.exact[i].map().float(), b.exact[i].total("io")[0]


def _heat_attention(b: Batch, i: int, e, ecfg, top) -> HeatMap | None:
    heat = b.daam.get(b.items[i].item_id)
    return None if heat is None else (heat, float("nan"))


def _heat_concept(b: Batch, i: int, e, ecfg, top) -> HeatMap | None:
    heat = b.concept.get(b.items[i].item_id)
    return None if heat is None else (heat, float("nan"))


def _heat_attn_info(b: Batch, i: int, e, ecfg, top) -> HeatMap | None:
    if not b.traced:
        return None
    cfg = b.ctx.cfg
    if cfg.attn_info_clip is not None:
        ecfg = replace(ecfg, sampler=replace(ecfg.sampler, clip=cfg.attn_info_clip))
    item = baseline_item(b.items[i])
    heat = traced_word_map(b.ctx.model, item, b.xb[i].cpu(), ecfg, b.attention, top)
    return heat, float("nan")


# method -> its heat-map producer (batch, index, estimate, engine config, nested top) -> map or
# None (the method does not apply to the item / model); a new method is one line here
HEATS = {
    "cmi": _heat_cmi,
    "mi": _heat_mi,
    "attention": _heat_attention,
    "attn_info": _heat_attn_info,
    "exact": _heat_exact,
    "concept": _heat_concept,
}


def _prepare(ctx: RunContext, items: list, images: list) -> Batch:
    cfg: LocalizeConfig = ctx.cfg
    xs = encode_batch(ctx, items, images)  # [N, C, h, w]
    b = Batch(ctx, items, images, xs, xs, [ctx.dataset.load_mask(it) for it in items],
              [(it.extra or {}).get("mask_reference", OBJECT_MASK) for it in items])  # fmt: skip
    b.protocol = ctx.dataset.info.get("segmentation")
    if b.protocol is not None:
        b.targets = [eval_target(*load_target(it)) for it in items]
    b.attention = raw_aggregation(cfg.attention)  # of the raw cross-attention maps
    b.concept = concept_word_maps(  # attention=concept
        ctx.model, [baseline_item(it) for it in items], xs, cfg, ctx.dataset.items
    )
    b.traced = has_traced_attention(ctx.model) and "attn_info" in cfg.methods
    daam = has_daam(ctx.model) and "attention" in cfg.methods
    b.xb = baseline_input(ctx, items, images, xs, b.traced or daam)
    if daam:  # DAAM does not depend on the logsnr budget: one inversion per item
        b.daam = {
            it.item_id: daam_word_map(
                ctx.model, baseline_item(it), x.cpu(), cfg.daam_steps, b.attention
            )
            for it, x in zip(items, b.xb, strict=True)
        }
    if "exact" in cfg.methods or "cmi" in cfg.methods:
        b.exact = exact_word_info(ctx.model, items, xs, cfg.blank_context, cfg.run.seed)
    return b


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: LocalizeConfig = ctx.cfg
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"localize methods {sorted(unknown)} unknown; choose from {METHODS}")
    if ctx.dataset.info.get("segmentation") == MULTI_CLASS:  # one label map per image
        return multi.process(ctx, items, images)
    b = _prepare(ctx, items, images)
    rows = []
    for steps, ests, ecfg, nested_top in estimates(b):
        if steps == max(cfg.steps):
            save_gallery(ctx, items, images, ests, b.masks, b.daam, steps, b.concept)
        for i, e in enumerate(ests):
            heats = {}
            for method in cfg.methods:
                heat = HEATS[method](b, i, e, ecfg, nested_top) if method in HEATS else None
                if heat is not None:
                    heats[method] = heat
            rows += _item_rows(b, i, e, ecfg, heats, steps)
    return rows


def _item_rows(b: Batch, i: int, e, ecfg, heats: dict[str, HeatMap], steps: int) -> list[dict]:
    """The rows of one item at one step count: each method's map scored against the item's
    ground truth (a segmentation benchmark's metrics, or the IoU curve of the COCO protocol),
    the CMI against the exact map (oracles) and the whole-image baseline."""
    cfg: LocalizeConfig = b.ctx.cfg
    it, mask, model = b.items[i], b.masks[i], b.ctx.model
    if b.targets is not None:
        return [_seg_row(b, i, m, heat, value, steps) for m, (heat, value) in heats.items()]
    rows, nan = [], np.full(len(IOU_COLUMNS), np.nan)
    if b.exact is not None and "cmi" in heats:  # the estimate against the exact map
        ref_map = b.exact[i].map(*exact_range(ecfg.sampler, b.exact[i]))
        grid, _ = to_image_grid(model, e.io_map[CMI], None)
        ref_grid, _ = to_image_grid(model, ref_map, None)
        ious = iou_curve_maps(grid, ref_grid)
        rows.append(_row(it, "cmi", steps, e.info_o(CMI)[0], ious, EXACT_MAP))
    for method, (heat, value) in heats.items():
        agg = b.attention if method in ATTENTION_METHODS else None
        grid, gt = to_image_grid(model, heat, mask, attention=agg)
        ious = iou_curve(grid, gt) if gt is not None else nan
        rows.append(_row(it, method, steps, value, ious, b.refs[i]))
    if "whole" in cfg.methods:
        grid, gt = to_image_grid(model, e.io_map[CMI], mask)
        whole = np.full(len(IOU_COLUMNS), gt.mean()) if gt is not None else nan
        rows.append(_row(it, "whole", steps, float("nan"), whole, b.refs[i]))
    return rows


def _seg_row(b: Batch, i: int, method: str, heat, value: float, steps: int) -> dict:
    """One map scored as the segmentation benchmark's published evaluation scores it (on the
    map's own grid, then EVAL_SIZE; reporting.segmentation); no IoU curve."""
    it = b.items[i]
    row = _row(it, method, steps, value, np.full(len(IOU_COLUMNS), np.nan), b.refs[i])
    row.update(score_map(heat.float().cpu().numpy(), b.targets[i], b.protocol))
    return row


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
        maps = {f"CMI '{it.word}' | context": e.io_map[CMI].float().cpu().numpy()}
        if not captioned(it):  # no caption: the CMI is the MI, drawn once
            maps = {}
        maps[f"MI '{it.word}'"] = e.io_map[MI].float().cpu().numpy()
        info = list(maps)  # on one colour scale, in nats per pixel
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
            shared_scale=info,
            title=f"{it.caption} ({steps} logsnr samples)",
            units=dict.fromkeys(info, "nats / pixel"),
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
    metrics |= segmentation_summary(results)
    top = max(int(s) for s in results["n_steps"].unique())
    for method in results["method"].unique():
        for name in ("miou", *SEG_METRICS):
            if f"{name}/{method}@{top}" in metrics:
                metrics[f"{name}/{method}"] = metrics[f"{name}/{method}@{top}"]
    return metrics


SEG_METRICS = ("pixel_acc", "miou_seg", "miou_fg_bg", "map")  # summary.json, per method


def segmentation_summary(results: pd.DataFrame) -> dict:
    """A segmentation benchmark's metrics per method and step count (reporting.segmentation:
    `pixel_acc/mi@50`, `miou_seg/...` (the benchmark's published mIoU), `miou_fg_bg/...`,
    `map/...`); empty for other data."""
    if "seg_protocol" not in results.columns:
        return {}
    rows = results[results["seg_protocol"].notna()]
    out = {}
    for (method, steps), part in rows.groupby(["method", "n_steps"]):
        m = benchmark_metrics(part)
        for name, key in zip(SEG_METRICS, ("pixel_acc", "miou", "miou_fg_bg", "map"), strict=True):
            out[f"{name}/{method}@{steps}"] = float(m[key])
    return out


def headline(metrics: dict) -> str:
    """The CMI mIoU against the object masks, else against the run's other reference (e.g. the
    published COCO-WL masks), named by its key."""
    keys = ["miou/cmi", *sorted(k for k in metrics if k.startswith("miou_vs_") and "/cmi@" in k)]
    keys += ["miou_seg/mi"]  # a segmentation benchmark: the MI map's published mIoU
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
    if cfg.multi_labels != "direct" and (cfg.data.name, cfg.data.classes) != ("voc-seg", "multi"):
        raise ValueError(
            f"localize multi_labels={cfg.multi_labels} relabels PascalVOC's multi-class argmax; "
            f"data={cfg.data.name} is not data=voc-seg data.classes=multi: leave multi_labels unset"
        )
    if cfg.multi_labels != "direct":
        log.warning("localize multi_labels=%s: PascalVOC's multi-class labels are relabelled as "
                    "the published script did by mistake", cfg.multi_labels)  # fmt: skip
    if cfg.baseline_input == BUG_INPUT:
        log.warning(
            "localize baseline_input=%s: the DAAM and Attention+Information baselines encode "
            "[0, 1] pixels, as the published code did by mistake (the model was trained on "
            "[-1, 1]); for a faithful baseline use baseline_input=model",
            BUG_INPUT,
        )
    if cfg.data.name in SEGMENTATION_DATA and cfg.blank_context:
        raise ValueError(
            f"localize blank_context=true chooses the CMI's context; data={cfg.data.name} has no "
            "captions (the MI map is scored): leave blank_context unset"
        )
    if cfg.data.name in SEGMENTATION_DATA and {"whole", "exact"} & set(cfg.methods):
        log.info(
            "localize data=%s: the whole-image and exact methods are not scored on a "
            "segmentation benchmark (no published counterpart / no exact model)",
            cfg.data.name,
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

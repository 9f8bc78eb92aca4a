"""`infodecomp localize`: word localisation by pixel-wise CMI, MI and attention (Table 3).

For every (image, caption, word) and every step count in `steps`, the CMI map compares the
caption with the caption without the word, the MI map the word alone with the empty prompt.
With a cross-attention model, the DAAM baseline and Attention+Information maps are added,
aggregated as `attention` says (`daam`: DAAM's aggregation, the default and the paper's;
`layer-mean`: heads averaged per layer; see models.attention); meta.json records the choice.
IoU against the ground-truth mask is stored at the 50 thresholds of the published protocol;
`aggregate` reports the paper's best-threshold mIoU and a held-out-threshold variant.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from infodecomp.data.registry import WORDS
from infodecomp.experiments.common import engine_config, hydra_main
from infodecomp.experiments.config import EstimatorConfig, LocalizeConfig
from infodecomp.experiments.maps import (
    daam_word_map,
    has_daam,
    has_traced_attention,
    info_maps,
    info_queries,
    split_of,
    to_image_grid,
    traced_word_map,
)
from infodecomp.experiments.runner import RunContext, execute
from infodecomp.reporting.metrics import IOU_COLUMNS, iou_curve, miou_cells
from infodecomp.reporting.writer import LOCALIZE_COLUMNS

log = logging.getLogger("infodecomp")
COLUMNS = LOCALIZE_COLUMNS  # the documented results.csv schema
METHODS = ("cmi", "mi", "attention", "attn_info", "whole")
ATTENTION_METHODS = ("attention", "attn_info")  # aggregated and expanded as cfg.attention says


def _row(item, method: str, n_steps: int, value: float, ious: np.ndarray) -> dict:
    row = {
        "item_id": item.item_id,
        "word": item.word,
        "word_type": item.word_type,
        "method": method,
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
    xs = ctx.model.encode_images(images)  # [N, C, h, w]
    masks = [ctx.dataset.load_mask(it) for it in items]
    nan = np.full(len(IOU_COLUMNS), np.nan)
    traced = has_traced_attention(ctx.model) and "attn_info" in cfg.methods
    daam = {}  # DAAM does not depend on the logsnr budget: one inversion per item
    if has_daam(ctx.model) and "attention" in cfg.methods:
        daam = {
            it.item_id: daam_word_map(ctx.model, it, x.cpu(), cfg.daam_steps, cfg.attention)
            for it, x in zip(items, xs, strict=True)
        }
    rows = []
    for steps in cfg.steps:
        ecfg = engine_config(cfg.estimator, cfg.run, n_samples=steps)
        ests = info_maps(ctx.model, info_queries(items, xs, cfg.blank_context), ecfg)
        for it, x, e, mask in zip(items, xs, ests, masks, strict=True):
            heats = {"cmi": (e.io_map[0], e.info_o(0)[0]), "mi": (e.io_map[1], e.info_o(1)[0])}
            if it.item_id in daam:
                heats["attention"] = (daam[it.item_id], float("nan"))
            if traced:
                heats["attn_info"] = (
                    traced_word_map(ctx.model, it, x.cpu(), ecfg, cfg.attention),
                    float("nan"),
                )
            for method in cfg.methods:
                if method == "whole" or method not in heats:
                    continue
                heat, value = heats[method]
                agg = cfg.attention if method in ATTENTION_METHODS else None
                grid, gt = to_image_grid(ctx.model, heat, mask, attention=agg)
                rows.append(
                    _row(it, method, steps, value, iou_curve(grid, gt) if gt is not None else nan)
                )
            if "whole" in cfg.methods:
                grid, gt = to_image_grid(ctx.model, e.io_map[0], mask)
                whole = np.full(len(IOU_COLUMNS), gt.mean()) if gt is not None else nan
                rows.append(_row(it, "whole", steps, float("nan"), whole))
    return rows


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    """mIoU per method and step count (paper protocol and held-out threshold). A held-out
    figure needs items in both halves; with fewer it is reported as NaN with a note."""
    metrics: dict = {}
    for (method, steps), df in results.groupby(["method", "n_steps"]):
        df = df.dropna(subset=IOU_COLUMNS)
        if len(df):
            paper, held = miou_cells(df)
            metrics[f"miou/{method}@{steps}"] = float(paper)
            metrics[f"miou_heldout/{method}@{steps}"] = float(held)
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


def run(cfg: LocalizeConfig) -> Path:
    if cfg.estimator.n_samples != EstimatorConfig().n_samples:
        log.warning(
            "localize: estimator.n_samples=%d is not used; each map uses the logsnr samples "
            "of `steps` (now %s): set steps=[...] instead",
            cfg.estimator.n_samples,
            list(cfg.steps),
        )
    return execute(
        cfg, "localize", COLUMNS, process, summarize, headline="miou/cmi", consumes=WORDS
    )


main = hydra_main("localize", run)

"""`infodecomp intervene`: does CMI predict what changes when a word is dropped or swapped? (Table 4)

Each image is inverted with the deterministic probability-flow ODE (2nd-order Heun on Karras
sigmas) under its caption, then regenerated with the original, the word-omitted ("_") and the
word-swapped prompt. The change map (sum over channels of the squared difference to the
original regeneration) is correlated with the word's pixel CMI map (and attention, where the
model has cross-attention) per image, and its total with the CMI total across images
(`image_score`: i^o, or i^s as the published image-level figure used). With a model that has
exact information (the ShapesWorld oracle) the exact CMI total and map of each item are
recorded too: Table 4 then shows the correlation the exact CMI would give, how well the estimate
tracks it, and how much of the image-level r is word type and how much estimator noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from infodecomp.data.registry import WORDS
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import InterveneConfig
from infodecomp.experiments.maps import (
    daam_word_map,
    exact_word_info,
    has_daam,
    info_maps,
    info_queries,
)
from infodecomp.experiments.regeneration import change_map, regenerate
from infodecomp.experiments.runner import RunContext, execute
from infodecomp.experiments.shim import hydra_main
from infodecomp.models.capabilities import ImageModel
from infodecomp.reporting.metrics import intervention_table, pearson_r
from infodecomp.reporting.writer import INTERVENE_COLUMNS

COLUMNS = INTERVENE_COLUMNS  # the documented results.csv schema


def _save(ctx: RunContext, item, name: str, latent: torch.Tensor) -> None:
    from PIL import Image

    folder = ctx.out / "images"
    folder.mkdir(exist_ok=True)
    if isinstance(ctx.model, ImageModel):
        img = ctx.model.decode_latents(latent[None])[0]  # [3, H, W] in [0, 1]
    else:
        img = ((latent + 1) / 2).clamp(0, 1)
    arr = (img.permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(folder / f"{item.item_id}-{name}.png")


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: InterveneConfig = ctx.cfg
    model = ctx.model
    xs = model.encode_images(images)  # [N, C, h, w]
    if cfg.image_score not in ("io", "is"):
        raise ValueError(f"image_score={cfg.image_score} is not one of: io, is")
    ecfg = engine_config(cfg.estimator, cfg.run)
    ests = info_maps(model, info_queries(items, xs, blank=True), ecfg)
    exact = exact_word_info(model, items, xs, blank=True, seed=cfg.run.seed)
    regen = regenerate(model, items, xs, cfg.n_sigmas, cfg.edits)
    rows = []
    for i, it in enumerate(items):
        cmi_map = ests[i].io_map[0]
        attn_map = None
        if has_daam(model):
            attn_map = daam_word_map(model, it, xs[i].cpu(), cfg.daam_steps, cfg.attention)
        if cfg.save_images:
            for name, lat in regen.items():
                _save(ctx, it, name, lat[i])
        total, total_se = ests[i].info_o(0) if cfg.image_score == "io" else ests[i].info_s(0)
        nan = float("nan")
        exact_total, exact_se, exact_map = nan, nan, None
        if exact is not None:
            exact_total, exact_se = exact[i].total(cfg.image_score)
            exact_map = exact[i].map().float().flatten().numpy()
        for edit in cfg.edits:
            if edit == "swap" and not it.swap_caption:
                continue
            change = change_map(regen, edit, i)  # [h, w]
            flat = change.flatten().numpy()
            rows.append(
                {
                    "item_id": it.item_id,
                    "word": it.word,
                    "word_type": it.word_type,
                    "edit": edit,
                    "cmi_total": total,
                    "cmi_stderr": total_se,
                    "attn_total": float(attn_map.sum()) if attn_map is not None else nan,
                    "change_total": float(change.sum()),
                    "pixel_r_cmi": pearson_r(flat, cmi_map.flatten().numpy()),
                    "pixel_r_attn": pearson_r(flat, attn_map.flatten().numpy())
                    if attn_map is not None
                    else nan,
                    "exact_total": exact_total,
                    "exact_stderr": exact_se,
                    "pixel_r_exact": pearson_r(flat, exact_map) if exact_map is not None else nan,
                    "pixel_r_cmi_exact": pearson_r(cmi_map.flatten().numpy(), exact_map)
                    if exact_map is not None
                    else nan,
                }
            )
    return rows


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    metrics = {}
    for edit, df in results.groupby("edit"):
        table = intervention_table(df, n_boot=ctx.cfg.n_boot, seed=ctx.cfg.run.seed)
        for method, row in table.iterrows():
            for key in ("image_r", "image_se", "pixel_r", "pixel_se"):
                metrics[f"{key}/{method}/{edit}"] = float(row[key])
    return metrics


def run(cfg: InterveneConfig) -> Path:
    return execute(
        cfg, "intervene", COLUMNS, process, summarize, headline="pixel_r/cmi/omit", consumes=WORDS
    )


main = hydra_main("intervene", run)

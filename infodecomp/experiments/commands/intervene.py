"""`infodecomp intervene`: does CMI predict what changes when a word is dropped or swapped? (Table 4)

Each image is inverted with the deterministic probability-flow ODE (Heun on Karras sigmas;
`ode_solver`, `ode_ends`: models.ode) under its caption, then regenerated with the original,
the word-omitted ("_") and the word-swapped prompt. The change map (sum over channels of the
squared difference to the original regeneration) is correlated with the edit's own pixel CMI
map per image (omit: i(x; caption vs "_" context); swap: i(x; caption vs swapped caption)),
and its total with that CMI's total across images (`image_score`: i^o, or i^s as the published
image-level figure used). The attention baseline, where the model has cross-attention, is DAAM
over a DDIM inversion + reconstruction (`attention_path=ddim`) or traced during the ODE
regeneration of the original (`attention_path=regeneration`, the published path). Every item
records its round-trip error, the RMS of generate(invert(x)) - x under its caption. With a
model that has exact information (the ShapesWorld oracle) the exact CMI total and map of each
edit are recorded too: Table 4 then shows the correlation the exact CMI would give, how well
the estimate tracks it, and how much of the image-level r is word type and how much estimator
noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from infodecomp.data.registry import WORDS
from infodecomp.estimators.queries import EDIT_CONTRAST, intervene_queries
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import InterveneConfig
from infodecomp.experiments.maps import (
    daam_word_map,
    exact_word_info,
    has_daam,
    has_traced_attention,
    info_maps,
)
from infodecomp.experiments.regeneration import (
    change_map,
    exact_swap_info,
    regenerate,
    roundtrip_rmse,
)
from infodecomp.experiments.runner import RunContext, encode_batch, execute
from infodecomp.experiments.shim import hydra_main
from infodecomp.models.capabilities import ImageModel
from infodecomp.reporting.metrics import intervention_table, pearson_r
from infodecomp.reporting.writer import INTERVENE_COLUMNS

COLUMNS = INTERVENE_COLUMNS  # the documented results.csv schema
DAAM_STEPS = 50  # DDIM steps of attention_path=ddim when daam_steps is unset


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
    if cfg.image_score not in ("io", "is"):
        raise ValueError(f"image_score={cfg.image_score} is not one of: io, is")
    regeneration = cfg.attention_path == "regeneration"
    traced = regeneration and has_traced_attention(model)
    if cfg.regeneration_autocast != "none" and not traced:
        raise ValueError(
            f"regeneration_autocast={cfg.regeneration_autocast} applies to the traced "
            f"regeneration; {type(model).__name__} has no attention to trace: leave it none"
        )
    xs = encode_batch(ctx, items, images)  # [N, C, h, w]
    ecfg = engine_config(cfg.estimator, cfg.run)
    ests = info_maps(model, intervene_queries(items, xs, cfg.edits), ecfg)
    exact = {"omit": exact_word_info(model, items, xs, blank=True, seed=cfg.run.seed)}
    if exact["omit"] is not None and "swap" in cfg.edits:
        exact["swap"] = exact_swap_info(model, items, xs, cfg.run.seed)
    regen, traced_maps = regenerate(
        model,
        items,
        xs,
        cfg.n_sigmas,
        cfg.edits,
        solver=cfg.ode_solver,
        ends=cfg.ode_ends,
        trace=cfg.attention if traced else None,
        autocast=cfg.regeneration_autocast,
    )
    rows = []
    nan = float("nan")
    for i, it in enumerate(items):
        attn_map = None
        if traced_maps is not None:
            attn_map = model.word_map(traced_maps[i], it.caption, it.word)  # [h, w]
        elif not regeneration and has_daam(model):
            attn_map = daam_word_map(
                model, it, xs[i].cpu(), cfg.daam_steps or DAAM_STEPS, cfg.attention
            )
        if cfg.save_images:
            for name, lat in regen.items():
                _save(ctx, it, name, lat[i])
        err = roundtrip_rmse(regen, xs, i)
        for edit in cfg.edits:
            if edit == "swap" and not it.swap_caption:
                continue
            k = EDIT_CONTRAST[edit]  # the edit's own CMI contrast
            cmi_map = ests[i].io_map[k]
            total, total_se = ests[i].info_o(k) if cfg.image_score == "io" else ests[i].info_s(k)
            exact_total, exact_se, exact_map = nan, nan, None
            ex = exact.get(edit)
            if ex is not None and ex[i] is not None:
                exact_total, exact_se = ex[i].total(cfg.image_score)
                exact_map = ex[i].map().float().flatten().numpy()
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
                    "roundtrip_rmse": err,
                }
            )
    return rows


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    metrics = {}
    per_item = results.drop_duplicates("item_id")["roundtrip_rmse"].dropna()
    if len(per_item):  # invert -> generate under the caption: how far the ODE round trip lands
        metrics["roundtrip_rmse/mean"] = float(per_item.mean())
        metrics["roundtrip_rmse/max"] = float(per_item.max())
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

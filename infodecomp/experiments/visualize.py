"""`infodecomp visualize`: Fig. 2-style panels (image, MI and CMI on one colour scale, attention)
and MMSE curves per condition, as PNG files in the run directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from infodecomp.data.registry import WORDS
from infodecomp.estimators.engine import estimate
from infodecomp.experiments.common import engine_config, hydra_main
from infodecomp.experiments.config import VisualizeConfig
from infodecomp.experiments.maps import daam_word_map, has_daam, info_maps, info_queries
from infodecomp.experiments.runner import RunContext, execute
from infodecomp.models.capabilities import ImageModel
from infodecomp.reporting import figures

COLUMNS = ["item_id", "word", "panel", "curves", "cmi_total", "mi_total"]


def _display_image(model, image) -> np.ndarray:
    """The image as the model saw it, H x W x 3 in [0, 1]."""
    if isinstance(model, ImageModel):
        return model.preview(image).permute(1, 2, 0).numpy()
    if isinstance(image, torch.Tensor):
        return ((image.float() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: VisualizeConfig = ctx.cfg
    model = ctx.model
    xs = model.encode_images(images)  # [N, C, h, w]
    ecfg = engine_config(cfg.estimator, cfg.run)
    queries = info_queries(items, xs, blank=False)
    ests = info_maps(model, queries, ecfg)
    # MMSE curves need per-sample errors only, not pixel maps.
    curves = estimate(
        model, queries, replace(ecfg, n_samples=cfg.n_curve_samples, pixel_maps=False)
    )
    folder = ctx.out / "figures"
    folder.mkdir(exist_ok=True)
    rows = []
    for i, it in enumerate(items):
        maps = {
            f"MI '{it.word}'": ests[i].io_map[1].numpy(),
            f"CMI '{it.word}' | context": ests[i].io_map[0].numpy(),
        }
        if has_daam(model):
            maps[f"attention ({cfg.attention}) '{it.word}'"] = daam_word_map(
                model, it, xs[i].cpu(), cfg.daam_steps, cfg.attention
            ).numpy()
        fig = figures.panel(
            _display_image(model, images[i]), maps, shared_scale=list(maps)[:2], title=it.caption
        )
        panel_path = figures.save(fig, folder / f"{it.item_id}-maps.png")
        e = curves[i]
        labels = {0: f"'{it.caption}'", 1: f"'{it.context}'", 3: "'' (unconditional)"}
        data = {label: tuple(t.numpy() for t in e.mmse_curve(k)) for k, label in labels.items()}
        fig = figures.mmse_curves(data, title=f"MMSE, {it.item_id}")
        curve_path = figures.save(fig, folder / f"{it.item_id}-mmse.png")
        rows.append(
            {
                "item_id": it.item_id,
                "word": it.word,
                "panel": str(panel_path.relative_to(ctx.out)),
                "curves": str(curve_path.relative_to(ctx.out)),
                "cmi_total": ests[i].info_o(0)[0],
                "mi_total": ests[i].info_o(1)[0],
            }
        )
    return rows


def summarize(ctx: RunContext, results: pd.DataFrame) -> dict:
    return {"figures": int(len(results) * 2), "mean_cmi": float(results["cmi_total"].mean())}


def run(cfg: VisualizeConfig) -> Path:
    return execute(
        cfg, "visualize", COLUMNS, process, summarize, headline="figures", consumes=WORDS
    )


main = hydra_main("visualize", run)

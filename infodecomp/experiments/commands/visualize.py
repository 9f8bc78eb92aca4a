"""`infodecomp visualize`: Fig. 2-style panels (image, MI and CMI on one colour scale, attention)
and MMSE curves per condition, as PNG files in the run directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from infodecomp.data.registry import WORDS
from infodecomp.estimators.engine import estimate
from infodecomp.estimators.queries import CMI, MI, word_queries
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import VisualizeConfig
from infodecomp.experiments.maps import display_image, mmse_curve_data, word_maps
from infodecomp.experiments.runner import RunContext, encode_batch, execute
from infodecomp.experiments.shim import hydra_main
from infodecomp.reporting import figures

# cmi_total / mi_total: i^o in nats (cmi_se / mi_se their standard errors); panel / curves:
# figure paths relative to the run directory.
COLUMNS = [
    "item_id",
    "word",
    "panel",
    "curves",
    "cmi_total",
    "mi_total",
    "caption",
    "cmi_se",
    "mi_se",
]


def process(ctx: RunContext, items: list, images: list) -> list[dict]:
    cfg: VisualizeConfig = ctx.cfg
    model = ctx.model
    xs = encode_batch(ctx, items, images)  # [N, C, h, w]
    ecfg = engine_config(cfg.estimator, cfg.run)
    found = word_maps(
        model, items, xs, ecfg, daam=True, attention=cfg.attention, daam_steps=cfg.daam_steps
    )
    # MMSE curves need per-sample errors only, not pixel maps.
    curves = estimate(
        model,
        word_queries(items, xs, blank=False),
        replace(ecfg, n_samples=cfg.n_curve_samples, pixel_maps=False),
    )
    folder = ctx.out / "figures"
    folder.mkdir(exist_ok=True)
    rows = []
    for i, it in enumerate(items):
        e = found[i].estimate
        maps = {
            f"MI '{it.word}'": e.io_map[MI].numpy(),
            f"CMI '{it.word}' | context": e.io_map[CMI].numpy(),
        }
        if found[i].attention is not None:
            maps[f"attention ({cfg.attention}) '{it.word}'"] = found[i].attention.numpy()
        fig = figures.panel(
            display_image(model, images[i]),
            maps,
            shared_scale=list(maps)[:2],
            title=it.caption,
            units={k: "nats / pixel" for k in list(maps)[:2]},
        )
        panel_path = figures.save(fig, folder / f"{it.item_id}-maps.png")
        labels = {0: f"'{it.caption}'", 1: f"'{it.context}'", 3: "'' (unconditional)"}
        fig = figures.mmse_curves(mmse_curve_data(curves[i], labels), title=f"MMSE, {it.item_id}")
        curve_path = figures.save(fig, folder / f"{it.item_id}-mmse.png")
        (cmi, cmi_se), (mi, mi_se) = e.info_o(CMI), e.info_o(MI)
        rows.append(
            {
                "item_id": it.item_id,
                "word": it.word,
                "panel": str(panel_path.relative_to(ctx.out)),
                "curves": str(curve_path.relative_to(ctx.out)),
                "cmi_total": cmi,
                "mi_total": mi,
                "caption": it.caption,
                "cmi_se": cmi_se,
                "mi_se": mi_se,
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

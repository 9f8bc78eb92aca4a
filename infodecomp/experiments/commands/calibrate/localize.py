"""Section 4 of calibrate (`localize`): word CMI maps, learned vs the oracle's (same draws) and vs
the exact map from the oracle's posteriors (IoU of supports, pixel r), the learned
cross-attention (DAAM) vs both, mIoU against the object masks and the information masks (exact
maps), and the word CMI totals; figures/maps-*.png draws the maps side by side."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.engine import EngineConfig, ItemEstimate
from infodecomp.estimators.queries import CMI, word_queries
from infodecomp.experiments.commands.calibrate.pair import (
    EXACT_MAP,
    SAME_DRAWS,
    Pair,
    pearson_r,
    row,
    with_x,
)
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import CalibrateConfig
from infodecomp.experiments.exact import support_iou
from infodecomp.experiments.maps import (
    daam_word_map,
    display_image,
    exact_range,
    exact_word_info,
    has_daam,
    to_image_grid,
)
from infodecomp.reporting.calibration import FIGURES
from infodecomp.reporting.metrics import IOU_COLUMNS, iou_curve, iou_curve_maps, miou_paper

# the map comparisons: l(earned), o(racle, same draws), (e)x(act), a(ttention)
PAIRS = ("lo", "lx", "ox", "al", "ax")
CURVES = ("l", "o", "x", "a", "l_info", "o_info", "a_info")


@dataclass
class WordSet:
    """A word set's data set, items, data points, CMI estimates of both models (same draws),
    exact maps and the engine settings behind them."""

    ds: Any
    items: list
    xs_m: torch.Tensor
    ests_m: list[ItemEstimate]
    ests_o: list[ItemEstimate]
    exact: list
    ecfg: EngineConfig


@dataclass
class MapStats:
    """Per item: IoU of supports and pixel r of each map pair, IoU curves, figures to draw."""

    per: dict[str, list]
    corr: dict[str, list]
    curves: dict[str, list]
    figures: list


def _miou(curves: list[np.ndarray]) -> float:
    if not curves:
        return float("nan")
    return miou_paper(pd.DataFrame(np.stack(curves), columns=IOU_COLUMNS))


def _word_set(pair: Pair, cfg: CalibrateConfig, name: str, blank: bool) -> WordSet:
    """A word set's items, data points, CMI maps of both models (same draws) and exact maps."""
    ds = load_dataset(
        DataSpec(name=name, size=cfg.word_items, seed=cfg.data.seed, noise=cfg.data.noise)
    )
    items = ds.items
    xs_m, xs_o = pair.encode([it.image for it in items])
    ecfg = engine_config(cfg.estimator, cfg.run, pixel_maps=True)
    # the word's CMI only: (caption, context), keyed like localize's item queries
    queries = word_queries(items, xs_o, blank, mi=False)
    ests_m, ests_o = pair.estimate(with_x(queries, xs_m), queries, ecfg)
    exact = exact_word_info(pair.oracle, items, xs_o, blank, cfg.run.seed, n_draws=cfg.exact_draws)
    return WordSet(ds, items, xs_m, ests_m, ests_o, exact, ecfg)


def localize_section(pair: Pair, cfg: CalibrateConfig, out: Path) -> list[dict]:
    ws = _word_set(pair, cfg, "shapes-localize", False)
    attention = has_daam(pair.model)
    stats = _compare_maps(pair, cfg, ws, attention)
    _draw_maps(stats.figures, out)
    n = len(ws.items)
    rows = _support_rows(stats, n, attention)
    rows += _miou_rows(stats.curves, n, attention)
    rows += _totals(ws.items, ws.ests_m, ws.ests_o, ws.exact, ws.ecfg)
    return rows


def _compare_maps(pair: Pair, cfg: CalibrateConfig, ws: WordSet, attention: bool) -> MapStats:
    """Every item's learned, oracle and exact CMI maps (and the learned attention map) compared
    with each other and with the item's object mask; the first `n_figures` kept for figures."""
    model, oracle, ecfg = pair.model, pair.oracle, ws.ecfg
    per: dict[str, list] = {k: [] for k in PAIRS}
    corr: dict[str, list] = {k: [] for k in PAIRS}
    curves: dict[str, list] = {k: [] for k in CURVES}
    figures = []
    for i, it in enumerate(ws.items):
        mask = ws.ds.load_mask(it)
        lmap, _ = to_image_grid(model, ws.ests_m[i].io_map[CMI], None)
        omap, gt = to_image_grid(oracle, ws.ests_o[i].io_map[CMI], mask)
        xmap, _ = to_image_grid(
            oracle, ws.exact[i].map(*exact_range(ecfg.sampler, ws.exact[i])).float(), None
        )
        t = {k: torch.from_numpy(v) for k, v in (("l", lmap), ("o", omap), ("x", xmap))}
        per["lo"].append(support_iou(t["l"], t["o"]))
        per["lx"].append(support_iou(t["l"], t["x"]))
        per["ox"].append(support_iou(t["o"], t["x"]))
        corr["lo"].append(pearson_r(lmap, omap))
        corr["lx"].append(pearson_r(lmap, xmap))
        corr["ox"].append(pearson_r(omap, xmap))
        curves["l"].append(iou_curve(lmap, gt))
        curves["o"].append(iou_curve(omap, gt))
        curves["x"].append(iou_curve(xmap, gt))
        curves["l_info"].append(iou_curve_maps(lmap, xmap))
        curves["o_info"].append(iou_curve_maps(omap, xmap))
        amap = None
        if attention:
            heat = daam_word_map(model, it, ws.xs_m[i], cfg.daam_steps)
            amap, _ = to_image_grid(model, heat, None, attention="daam")
            ta = torch.from_numpy(amap)
            per["al"].append(support_iou(ta, t["l"]))
            per["ax"].append(support_iou(ta, t["x"]))
            corr["al"].append(pearson_r(amap, lmap))
            corr["ax"].append(pearson_r(amap, xmap))
            curves["a"].append(iou_curve(amap, gt))
            curves["a_info"].append(iou_curve_maps(amap, xmap))
        if i < cfg.n_figures:
            maps = {
                "learned CMI": lmap,
                "oracle CMI, same draws": omap,
                "exact CMI": xmap,
            }
            if amap is not None:
                maps["learned attention"] = amap
            figures.append((it, display_image(oracle, it.image), maps))
    return MapStats(per, corr, curves, figures)


def _support_rows(stats: MapStats, n: int, attention: bool) -> list[dict]:
    """IoU of supports and pixel r of the learned CMI map (against the oracle's, same draws, and
    the exact map) and of the learned attention map (against the learned and the exact map)."""
    per, corr = stats.per, stats.corr
    rows = []
    nan = [float("nan")] * n
    for ref, key_l, key_o in (
        ("CMI map, " + SAME_DRAWS, "lo", None),
        ("CMI map, " + EXACT_MAP, "lx", "ox"),
    ):
        exact_iou = per[key_o] if key_o else [1.0] * n
        exact_r = corr[key_o] if key_o else [1.0] * n
        rows.append(
            row(
                "localize",
                "IoU of supports (> 5% of max), CMI map",
                "all",
                ref,
                per[key_l],
                exact_iou,
                paired=False,
                note="exact column: the oracle's CMI map",
            )
        )
        rows.append(
            row(
                "localize",
                "pixel r, CMI map",
                "all",
                ref,
                corr[key_l],
                exact_r,
                paired=False,
                note="exact column: the oracle's CMI map",
            )
        )
    if attention:
        for ref, key in (("learned CMI map", "al"), (EXACT_MAP, "ax")):
            rows.append(
                row(
                    "localize",
                    "IoU of supports (> 5% of max), attention (DAAM)",
                    "all",
                    ref,
                    per[key],
                    nan,
                    paired=False,
                )
            )
            rows.append(
                row(
                    "localize",
                    "pixel r, attention (DAAM)",
                    "all",
                    ref,
                    corr[key],
                    nan,
                    paired=False,
                )
            )
    return rows


def _miou_rows(curves: dict[str, list], n: int, attention: bool) -> list[dict]:
    """mIoU (paper protocol) of the maps against the object masks and the information masks."""
    rows = []
    note = "paper protocol: best of 50 thresholds on min-max normalised maps"
    obj, info = "mIoU vs object masks", "mIoU vs information masks (exact map)"
    specs = [  # quantity, group, reference, learned curves, exact curves, note
        (obj, "CMI map", SAME_DRAWS, "l", "o", note),
        (obj, "exact CMI map", EXACT_MAP, "", "x", note + "; the same for every model"),
        (info, "CMI map", SAME_DRAWS, "l_info", "o_info", note),
    ]
    if attention:
        specs += [
            (q, "attention (DAAM)", "", k, "", note) for q, k in ((obj, "a"), (info, "a_info"))
        ]
    for quantity, group, ref, k_l, k_o, text in specs:
        learned, exact_v = _miou(curves.get(k_l, [])), _miou(curves.get(k_o, []))
        rows.append(
            row(
                "localize",
                quantity,
                group,
                ref,
                learned,
                exact_v,
                paired=False,
                note=text,
                n=n,
            )
        )
    return rows


def _totals(items: list, ests_m: list, ests_o: list, exact: list, ecfg: EngineConfig) -> list[dict]:
    """Word CMI totals i^o(x; word | context), learned vs exact, overall and per word type."""
    rows = []
    types = (
        ["all", *sorted({it.word_type for it in items})]
        if len({it.word_type for it in items}) > 1
        else ["all"]
    )
    for wt in types:
        idx = [i for i, it in enumerate(items) if wt in ("all", it.word_type)]
        learned = [ests_m[i].info_o(0)[0] for i in idx]
        rows.append(
            row(
                "localize",
                "word CMI i^o(x; word | context)",
                wt,
                SAME_DRAWS,
                learned,
                [ests_o[i].info_o(0)[0] for i in idx],
            )
        )
        on_range = [exact[i].total("io", *exact_range(ecfg.sampler, exact[i]))[0] for i in idx]
        rows.append(
            row(
                "localize",
                "word CMI i^o(x; word | context)",
                wt,
                EXACT_MAP + ", estimator's logsnr range",
                learned,
                on_range,
            )
        )
    return rows


def _draw_maps(figures: list, out: Path) -> None:
    """figures/maps-<k>.png: the image and the learned and exact maps side by side."""
    from infodecomp.reporting import figures as figs

    folder = out / FIGURES
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("maps-*.png"):
        old.unlink()
    for k, (it, image, maps) in enumerate(figures):
        cmi = [n for n in maps if "CMI" in n]
        fig = figs.panel(
            image,
            maps,
            shared_scale=cmi,
            title=f"'{it.word}' in '{it.caption}'",
            units={n: "nats / pixel" for n in cmi},
        )
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(it.item_id))
        figs.save(fig, folder / f"maps-{k}-{slug}.png")

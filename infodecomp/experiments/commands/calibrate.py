"""`infodecomp calibrate`: a learned ShapesWorld model against the exact oracle (issue 16).

The model (`model=shapes-learned` by default) and the exact ShapesWorld oracle (sigma0 = the
data's pixel noise) are run through the same code on the same items at the same (logsnr, eps)
draws: the engine seeds each item's draws by (run.seed, item key) and the two models share the
data space (16 x 16 x 3 ShapesWorld tensors), so every difference between the two columns is the
learned model's, not Monte Carlo noise. Calibrating the oracle against itself gives bias 0,
slope 1, correlation 1, equal accuracies and IoU 1 (tests/test_calibrate.py).

Sections (`sections=[...]`):

mmse       denoising error against logsnr, learned vs exact, with the true caption and with the
           empty prompt (curves.csv, per sample); its integral (the denoising loss) and the
           log-likelihood estimate against the exact log p(x|y).
pointwise  i^s and i^o of true, partial (one object) and contradicting (objects swapped
           around the relation) captions against the oracle's (same draws) and against the
           exact log p(x|y) - log p(x); bias = mean(learned - exact), slope of learned on exact,
           Pearson r across images. The oracle's own estimate against the closed form is a row
           too (the estimator's error on this logsnr range).
ranking    accuracy by i^o, i^s and denoising loss on the ShapesWorld relation, attribute, order
           and Winoground-style sets, with the shuffled-image control; slope and r compare the
           per-item margins (true option minus the best other).
localize   word CMI maps: learned vs the oracle's (same draws) and vs the exact map from the
           oracle's posteriors (IoU of supports, pixel r), the learned cross-attention (DAAM) vs
           both, mIoU against the object masks and the information masks (exact maps), and the
           word CMI totals.
intervene  the learned model's images regenerated (probability-flow ODE) with the word omitted
           or swapped; the change against the learned and the exact CMI, per image (totals) and
           per pixel (maps).

Output (run.out_dir): calibration.csv (section, quantity, group, reference, learned, exact, bias,
slope, corr, n, note), curves.csv (per-sample MMSE of both models), figures/maps-*.png (learned
and exact maps side by side), meta.json, summary.json. `aggregate` makes the calibration table
of such runs; `report` draws the curves and shows the maps.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from infodecomp.data.controls import SHUFFLED_IMAGES
from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.queries import (
    CMI,
    EDIT_CONTRAST,
    intervene_queries,
    option_queries,
    word_queries,
)
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.experiments.common import engine_config, resolve_device, resolve_dtype, to_dict
from infodecomp.experiments.config import CalibrateConfig, ConfigError
from infodecomp.experiments.exact import one_thread, support_iou
from infodecomp.experiments.maps import (
    daam_word_map,
    display_image,
    exact_range,
    exact_word_info,
    has_daam,
    to_image_grid,
)
from infodecomp.experiments.regeneration import change_map, exact_swap_info, regenerate
from infodecomp.experiments.shim import hydra_main, run_dir
from infodecomp.models.capabilities import ExactLikelihood, needs_rgb
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.models.registry import load_model, model_source
from infodecomp.reporting.calibration import (
    CALIBRATION_COLUMNS,
    CALIBRATION_FILE,
    CURVE_COLUMNS,
    CURVES_FILE,
    FIGURES,
    compare,
)
from infodecomp.reporting.metrics import (
    IOU_COLUMNS,
    iou_curve,
    iou_curve_maps,
    miou_paper,
    ranking_scores,
)
from infodecomp.reporting.metrics import pearson_r as _pearson
from infodecomp.scores import SCORES
from infodecomp.worlds import shapes as world

log = logging.getLogger("infodecomp")

SAME_DRAWS = "exact oracle, same draws"
LOG_RATIO = "log p(x|y) - log p(x)"
EXACT_LOGP = "exact log p(x|y)"
EXACT_MAP = "exact map (posteriors)"
KINDS = ("true", "partial", "contradicting")


def pearson_r(a: Any, b: Any) -> float:
    return _pearson(
        np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
    )


def _row(
    section: str,
    quantity: str,
    group: str,
    reference: str,
    learned: Any,
    exact: Any,
    *,
    paired: bool = True,
    note: str = "",
    n: int | None = None,
) -> dict:
    """One row of calibration.csv. `learned` / `exact`: per-item values (their means are shown;
    bias, slope and corr compare them item by item when `paired`) or one number each."""
    stats = compare(learned, exact, paired=paired)
    if n is not None:  # a statistic over n items (an accuracy, an mIoU, a correlation)
        stats["n"] = n
    return {
        "section": section,
        "quantity": quantity,
        "group": group,
        "reference": reference,
        **stats,
        "note": note,
    }


class Pair:
    """The calibrated model and the exact oracle, fed the same data points."""

    def __init__(self, model: Any, oracle: ShapesOracle) -> None:
        self.model, self.oracle = model, oracle
        self.n_images = 0  # images encoded (every section's, controls included)

    def encode(self, images: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Both models' data points of the images; they must be the same points."""
        self.n_images += len(images)
        xs_m = self.model.encode_images(images).float().cpu()
        xs_o = self.oracle.encode_images(images).float().cpu()
        if xs_m.shape != xs_o.shape or not torch.equal(xs_m, xs_o):
            raise ConfigError(
                f"{type(self.model).__name__} does not take ShapesWorld pixels as its "
                f"data points (shape {tuple(xs_m.shape[1:])}, the oracle's "
                f"{tuple(xs_o.shape[1:])}); calibrate a model trained on ShapesWorld "
                "(model=shapes-learned, model.path=<trained folder>) or an oracle"
            )
        return xs_m, xs_o

    def estimate(
        self, queries_m: list[Query], queries_o: list[Query], ecfg: EngineConfig
    ) -> tuple[list[ItemEstimate], list[ItemEstimate]]:
        return estimate(self.model, queries_m, ecfg), estimate(self.oracle, queries_o, ecfg)


def _with_x(queries: list[Query], xs: torch.Tensor) -> list[Query]:
    return [Query(x, q.conditions, q.contrasts, q.key) for q, x in zip(queries, xs, strict=True)]


# ----------------------------------------------------------------------- 1, 2 MMSE and pointwise


def pointwise_items(oracle: ShapesOracle, n: int, seed: int) -> list[tuple[torch.Tensor, dict]]:
    """`n` images of related two-object scenes (distinct colours and shapes), each with a true,
    a partial (its first object alone) and a contradicting caption (the objects swapped around
    the relation)."""
    gen = torch.Generator().manual_seed(seed * 1000 + 11)
    pool = [
        i
        for i, (a, b) in enumerate(world.scenes())
        if world.relation_between(a, b) and a.colour != b.colour and a.shape != b.shape
    ]
    out = []
    for p in torch.randint(len(pool), (n,), generator=gen).tolist():
        a, b = world.scenes()[pool[p]]
        rel = world.relation_between(a, b)
        da, db = world.describe(a), world.describe(b)
        captions = {
            "true": f"a {da} {rel} a {db}",
            "partial": f"a {da}",
            "contradicting": f"a {db} {rel} a {da}",
        }
        out.append((oracle.sample_scene(pool[p], gen), captions))
    return out


def pointwise_sections(
    pair: Pair, cfg: CalibrateConfig, sections: list[str]
) -> tuple[list[dict], list[dict]]:
    """Rows of the `mmse` and `pointwise` sections and the per-sample curves (one estimate of
    both: the caption kinds and "" at the same draws)."""
    items = pointwise_items(pair.oracle, cfg.n_items, cfg.data.seed)
    xs_m, xs_o = pair.encode([x for x, _ in items])
    k = len(KINDS)
    queries = option_queries(
        xs_o,
        [list(caps.values()) for _, caps in items],
        [("calibrate-pointwise", cfg.data.seed, i) for i in range(len(items))],
    )
    sampler = LogsnrSampler(
        kind="uniform", low=cfg.curve_low, high=cfg.curve_high, mode="stratified"
    )
    ecfg = EngineConfig(
        n_samples=cfg.estimator.n_samples,
        sampler=sampler,
        max_batch=cfg.run.batch_size,
        seed=cfg.run.seed,
    )
    ests_m, ests_o = pair.estimate(_with_x(queries, xs_m), queries, ecfg)
    x64 = xs_o.double()
    base = pair.oracle.log_prob(x64, "")  # [N]
    truth = {
        kind: np.array(
            [
                float(pair.oracle.log_prob(x64[i : i + 1], caps[kind])[0] - base[i])
                for i, (_, caps) in enumerate(items)
            ]
        )
        for kind in KINDS
    }
    rng = f"uniform logsnr [{cfg.curve_low:g}, {cfg.curve_high:g}]"
    rows: list[dict] = []
    if "mmse" in sections:
        for label, j, cap in (("conditional (true caption)", 0, "true"), ("unconditional", k, "")):
            rows.append(
                _row(
                    "mmse",
                    "denoising loss 1/2 int E||eps - eps_hat||^2",
                    label,
                    SAME_DRAWS,
                    [e.score("mmse", j)[0] for e in ests_m],
                    [e.score("mmse", j)[0] for e in ests_o],
                    note=f"{rng}; the exact oracle's is the MMSE: learned - exact >= 0 on average",
                )
            )
            exact_lp = [
                float(pair.oracle.log_prob(x64[i : i + 1], caps[cap] if cap else "")[0])
                for i, (_, caps) in enumerate(items)
            ]
            for who, ests in (("learned", ests_m), ("exact oracle", ests_o)):
                rows.append(
                    _row(
                        "mmse",
                        "log-likelihood estimate (nats)"
                        + ("" if who == "learned" else " of the exact oracle"),
                        label,
                        EXACT_LOGP,
                        [e.log_likelihood(j)[0] for e in ests],
                        exact_lp,
                        note=f"{rng}: both estimates miss the part outside it"
                        if who != "learned"
                        else rng,
                    )
                )
    if "pointwise" in sections:
        for j, kind in enumerate(KINDS):
            learned, exact = (
                {"i^s": [e.info_s(j)[0] for e in ests], "i^o": [e.info_o(j)[0] for e in ests]}
                for ests in (ests_m, ests_o)
            )
            for name in ("i^s", "i^o"):
                rows.append(
                    _row("pointwise", name, kind, SAME_DRAWS, learned[name], exact[name], note=rng)
                )
                rows.append(
                    _row("pointwise", name, kind, LOG_RATIO, learned[name], truth[kind], note=rng)
                )
            rows.append(
                _row(
                    "pointwise",
                    "i^s of the exact oracle",
                    kind,
                    LOG_RATIO,
                    exact["i^s"],
                    truth[kind],
                    note=f"{rng}: the estimator's own error (learned column = the oracle's estimate)",
                )
            )
        # why a score ranks as it does: its true caption's value minus the contradicting one's
        # (the relation set's two options); i^o of the exact oracle is negative here
        t, c = KINDS.index("true"), KINDS.index("contradicting")
        for name, fn in (("i^o", "info_o"), ("i^s", "info_s")):
            margin_m, margin_o = (
                [getattr(e, fn)(t)[0] - getattr(e, fn)(c)[0] for e in ests]
                for ests in (ests_m, ests_o)
            )
            rows.append(
                _row(
                    "pointwise",
                    f"{name}(true) - {name}(contradicting)",
                    "per image",
                    SAME_DRAWS,
                    margin_m,
                    margin_o,
                    note=f"{rng}; > 0: the score prefers the true caption",
                )
            )
    curves = []
    if "mmse" in sections:
        for i, (em, eo) in enumerate(zip(ests_m, ests_o, strict=True)):
            for cond, j in (("conditional", 0), ("unconditional", k)):
                for who, e in (("learned", em), ("exact", eo)):
                    logsnr, mse = e.mmse_curve(j)
                    curves += [
                        {
                            "item": i,
                            "condition": cond,
                            "model": who,
                            "logsnr": float(g),
                            "mmse": float(m),
                        }
                        for g, m in zip(logsnr.tolist(), mse.tolist(), strict=True)
                    ]
    return rows, curves


# ------------------------------------------------------------------------------------ 3 ranking


def _margins(ests: list[ItemEstimate], items: list, score: str) -> np.ndarray:
    """Per item: sign x score of the true option minus the best other option."""
    out = []
    for e, it in zip(ests, items, strict=True):
        s = [SCORES[score].sign * e.score(score, j)[0] for j in range(len(it.options))]
        others = [v for j, v in enumerate(s) if j != it.label]
        out.append(s[it.label] - max(others))
    return np.array(out)


def _accuracies(ests: list[ItemEstimate], items: list) -> dict[str, dict[str, float]]:
    """score -> {metric: value in [0, 1]} by each set's task rule (reporting.metrics)."""
    rows = [
        {
            "item_id": it.item_id,
            "subset": it.subset,
            "group": it.group,
            "label": it.label,
            "option": j,
            "estimator": name,
            "score": SCORES[name].sign * e.score(name, j)[0],
        }
        for e, it in zip(ests, items, strict=True)
        for j in range(len(it.options))
        for name in SCORES
    ]
    return {r["estimator"]: r["metrics"] for r in ranking_scores(pd.DataFrame(rows))}


def ranking_section(pair: Pair, cfg: CalibrateConfig) -> list[dict]:
    """Accuracy of every score on every set (and under shuffled images), learned vs exact."""
    controls: list[str | None] = [None]
    if cfg.control:
        if cfg.n_items >= 2:
            controls.append(SHUFFLED_IMAGES)
        else:
            log.warning("calibrate: the shuffled-image control needs n_items >= 2; skipped")
    ecfg = engine_config(cfg.estimator, cfg.run)
    rows = []
    for name in cfg.sets:
        for control in controls:
            spec = DataSpec(
                name=name,
                size=cfg.n_items,
                seed=cfg.data.seed,
                noise=cfg.data.noise,
                control=control,
            )
            items = load_dataset(spec).items
            xs_m, xs_o = pair.encode([it.image for it in items])
            keys = [str(it.draw_key or it.item_id) for it in items]
            options = [it.options for it in items]
            ests_m, ests_o = pair.estimate(
                option_queries(xs_m, options, keys), option_queries(xs_o, options, keys), ecfg
            )
            acc_m, acc_o = _accuracies(ests_m, items), _accuracies(ests_o, items)
            group = name + (" (shuffled images)" if control else "")
            for score in SCORES:
                margins = compare(_margins(ests_m, items, score), _margins(ests_o, items, score))
                for metric, value in acc_m[score].items():
                    label = "accuracy" if metric == "accuracy" else f"{metric} score"
                    row = _row(
                        "ranking",
                        f"{label}, {SCORES[score].label}",
                        group,
                        SAME_DRAWS,
                        value,
                        acc_o[score][metric],
                        paired=False,
                        note="slope, corr: per-item margins (true option minus the best other)",
                    )
                    row.update(slope=margins["slope"], corr=margins["corr"], n=len(items))
                    rows.append(row)
    return rows


# ------------------------------------------------------------------------------- 4 localisation


def _miou(curves: list[np.ndarray]) -> float:
    if not curves:
        return float("nan")
    return miou_paper(pd.DataFrame(np.stack(curves), columns=IOU_COLUMNS))


def _word_set(pair: Pair, cfg: CalibrateConfig, name: str, blank: bool):
    """A word set's items, data points, CMI maps of both models (same draws) and exact maps."""
    ds = load_dataset(
        DataSpec(name=name, size=cfg.word_items, seed=cfg.data.seed, noise=cfg.data.noise)
    )
    items = ds.items
    xs_m, xs_o = pair.encode([it.image for it in items])
    ecfg = engine_config(cfg.estimator, cfg.run, pixel_maps=True)
    # the word's CMI only: (caption, context), keyed like localize's item queries
    queries = word_queries(items, xs_o, blank, mi=False)
    ests_m, ests_o = pair.estimate(_with_x(queries, xs_m), queries, ecfg)
    exact = exact_word_info(pair.oracle, items, xs_o, blank, cfg.run.seed, n_draws=cfg.exact_draws)
    return ds, items, xs_m, ests_m, ests_o, exact, ecfg


def localize_section(pair: Pair, cfg: CalibrateConfig, out: Path) -> list[dict]:
    ds, items, xs_m, ests_m, ests_o, exact, ecfg = _word_set(pair, cfg, "shapes-localize", False)
    model, oracle = pair.model, pair.oracle
    attention = has_daam(model)
    per: dict[str, list] = {k: [] for k in ("lo", "lx", "ox", "al", "ax")}
    corr: dict[str, list] = {k: [] for k in ("lo", "lx", "ox", "al", "ax")}
    curves: dict[str, list] = {k: [] for k in ("l", "o", "x", "a", "l_info", "o_info", "a_info")}
    figures = []
    for i, it in enumerate(items):
        mask = ds.load_mask(it)
        lmap, _ = to_image_grid(model, ests_m[i].io_map[CMI], None)
        omap, gt = to_image_grid(oracle, ests_o[i].io_map[CMI], mask)
        xmap, _ = to_image_grid(
            oracle, exact[i].map(*exact_range(ecfg.sampler, exact[i])).float(), None
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
            heat = daam_word_map(model, it, xs_m[i], cfg.daam_steps)
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
    _draw_maps(figures, out)
    rows = []
    nan = [float("nan")] * len(items)
    for ref, key_l, key_o in (
        ("CMI map, " + SAME_DRAWS, "lo", None),
        ("CMI map, " + EXACT_MAP, "lx", "ox"),
    ):
        exact_iou = per[key_o] if key_o else [1.0] * len(items)
        exact_r = corr[key_o] if key_o else [1.0] * len(items)
        rows.append(
            _row(
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
            _row(
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
                _row(
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
                _row(
                    "localize",
                    "pixel r, attention (DAAM)",
                    "all",
                    ref,
                    corr[key],
                    nan,
                    paired=False,
                )
            )
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
            _row(
                "localize",
                quantity,
                group,
                ref,
                learned,
                exact_v,
                paired=False,
                note=text,
                n=len(items),
            )
        )
    rows += _totals(items, ests_m, ests_o, exact, ecfg)
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
            _row(
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
            _row(
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


# ------------------------------------------------------------------------------ 5 interventions


def intervene_section(pair: Pair, cfg: CalibrateConfig) -> list[dict]:
    """Each edit's change against its own CMI (omit: caption vs "_" context; swap: caption vs
    swapped caption), the learned model's and the oracle's at the same draws, and the exact."""
    items = load_dataset(
        DataSpec(
            name="shapes-intervene", size=cfg.word_items, seed=cfg.data.seed, noise=cfg.data.noise
        )
    ).items
    xs_m, xs_o = pair.encode([it.image for it in items])
    ecfg = engine_config(cfg.estimator, cfg.run, pixel_maps=True)
    queries = intervene_queries(items, xs_o, cfg.edits)
    ests_m, ests_o = pair.estimate(_with_x(queries, xs_m), queries, ecfg)
    seed, n_draws = cfg.run.seed, cfg.exact_draws
    exact = {
        "omit": exact_word_info(pair.oracle, items, xs_o, True, seed, n_draws=n_draws),
        "swap": exact_swap_info(pair.oracle, items, xs_o, seed, n_draws=n_draws),
    }
    regen, _ = regenerate(pair.model, items, xs_m, cfg.n_sigmas, cfg.edits)
    rows = []
    for edit in cfg.edits:
        k = EDIT_CONTRAST[edit]
        idx = [i for i, it in enumerate(items) if edit == "omit" or it.swap_caption]
        changes = [change_map(regen, edit, i).double().numpy() for i in idx]
        total = [float(c.sum()) for c in changes]
        lt = [ests_m[i].info_o(k)[0] for i in idx]
        ot = [ests_o[i].info_o(k)[0] for i in idx]
        xt = [exact[edit][i].total("io")[0] for i in idx]
        note = f"the learned model's ODE ({cfg.n_sigmas} noise levels); the edit's own CMI i^o (swap: caption vs swapped), full range for the exact map"
        q_img = "image-level r(change total, CMI total)"
        for ref, totals in ((SAME_DRAWS, ot), (EXACT_MAP, xt)):
            r_l, r_x = pearson_r(total, lt), pearson_r(total, totals)
            rows.append(
                _row("intervene", q_img, edit, ref, r_l, r_x, paired=False, note=note, n=len(idx))
            )
        px_l = [
            pearson_r(c, ests_m[i].io_map[k].numpy()) for c, i in zip(changes, idx, strict=True)
        ]
        px_o = [
            pearson_r(c, ests_o[i].io_map[k].numpy()) for c, i in zip(changes, idx, strict=True)
        ]
        px_x = [
            pearson_r(c, exact[edit][i].map().numpy()) for c, i in zip(changes, idx, strict=True)
        ]
        q_px = "pixel-level r(change, CMI map), mean over images"
        rows.append(_row("intervene", q_px, edit, SAME_DRAWS, px_l, px_o, paired=False, note=note))
        rows.append(_row("intervene", q_px, edit, EXACT_MAP, px_l, px_x, paired=False, note=note))
    return rows


# ----------------------------------------------------------------------------------- the command


def calibrate(
    model: Any, oracle: ShapesOracle, cfg: CalibrateConfig, out: Path
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Every configured section on `model` against `oracle`: (calibration table, curves,
    images scored)."""
    pair = Pair(model, oracle)
    rows, curves = [], []
    todo = [s for s in cfg.sections]
    with tqdm(
        total=len(todo),
        desc="calibrate",
        unit="section",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    ) as bar:
        if {"mmse", "pointwise"} & set(todo):
            bar.set_postfix_str("mmse, pointwise")
            r, curves = pointwise_sections(pair, cfg, todo)
            rows += r
            bar.update(len({"mmse", "pointwise"} & set(todo)))
        for name, fn in (
            ("ranking", lambda: ranking_section(pair, cfg)),
            ("localize", lambda: localize_section(pair, cfg, out)),
            ("intervene", lambda: intervene_section(pair, cfg)),
        ):
            if name in todo:
                bar.set_postfix_str(name)
                rows += fn()
                bar.update()
    table = pd.DataFrame(rows, columns=list(CALIBRATION_COLUMNS))
    return table, pd.DataFrame(curves, columns=list(CURVE_COLUMNS)), pair.n_images


def check_model(model: Any, cfg: CalibrateConfig, noise: float) -> None:
    """The calibrated model must take the ShapesWorld tensors as they are."""
    if needs_rgb(model):
        raise ConfigError(
            f"model={cfg.model.name} takes RGB images, not ShapesWorld's pixels; "
            "calibrate a model trained on ShapesWorld (model=shapes-learned, or model.path=<a "
            "train-shapes folder>) or a ShapesWorld oracle"
        )
    if isinstance(model, ExactLikelihood):
        if model.world != "shapes":
            raise ConfigError(
                f"model={cfg.model.name} is an oracle of the {model.world} world; "
                "calibrate compares against the ShapesWorld oracle"
            )
        if abs(model.noise - noise) > 1e-12:
            log.warning(
                "calibrate: model.sigma0=%s differs from the data noise %s: that oracle is not "
                "exact for this data (the reference uses the data's noise)",
                model.noise,
                noise,
            )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9^]+", "_", text.lower()).strip("_")


def summary_metrics(table: pd.DataFrame) -> dict:
    """Flat metrics: learned and exact values of every row, slope and bias where paired."""
    out: dict = {}
    for r in table.itertuples(index=False):
        key = "/".join(
            _slug(str(v))
            for v in ("calibrate", r.section, r.quantity, r.group, r.reference)
            if str(v)
        )
        for stat in ("learned", "exact", "bias", "slope", "corr"):
            value = getattr(r, stat)
            if isinstance(value, float) and math.isfinite(value):
                out[f"{key}/{stat}"] = value
    return out


def print_table(table: pd.DataFrame) -> None:
    cols = list(CALIBRATION_COLUMNS[:-1])  # all but the note
    with pd.option_context(
        "display.width", 250, "display.max_colwidth", 48, "display.max_rows", 500
    ):
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def run(cfg: CalibrateConfig) -> Path:
    from infodecomp.reporting.meta import write_meta, write_summary

    if cfg.estimator.adaptive:
        raise ConfigError(
            "estimator.adaptive=true is not supported; both models are scored at one "
            "fixed budget of estimator.n_samples draws, so drop it"
        )
    out = run_dir(cfg, "calibrate")
    start = time.time()
    torch.manual_seed(cfg.run.seed)
    device, dtype = resolve_device(cfg.run.device), resolve_dtype(cfg.run.dtype)
    noise = world.SIGMA0 if cfg.data.noise is None else float(cfg.data.noise)
    model = load_model(cfg.model, device, dtype)
    check_model(model, cfg, noise)
    oracle = ShapesOracle(sigma0=noise)
    # small tensors: on a CPU one intra-op thread is as fast idle and far faster on a shared
    # machine (OpenMP threads spin-waiting for a busy core made a 40 s run take 20 minutes)
    with one_thread() if device.type == "cpu" else contextlib.nullcontext():
        table, curves, n_images = calibrate(model, oracle, cfg, out)
    table.to_csv(out / CALIBRATION_FILE, index=False)
    curves.to_csv(out / CURVES_FILE, index=False)
    wall = time.time() - start
    write_meta(
        out,
        to_dict(cfg),
        command="calibrate",
        device=str(getattr(model, "device", device)),
        dtype=cfg.run.dtype,
        seed=cfg.run.seed,
        wall_time_s=wall,
        items_done=n_images,
        items_skipped=0,
        extra={
            "model_source": model_source(cfg.model),
            "reference": f"ShapesOracle(sigma0={noise:g})",
        },
    )
    write_summary(out, summary_metrics(table))
    print_table(table)
    print(
        "bias = mean(learned - exact), slope of learned on exact, corr = Pearson r, over items "
        "(ranking: over per-item margins); 'exact oracle, same draws': the oracle through the same "
        "estimator at the same (logsnr, eps) draws"
    )
    print(f"\ncalibrate: {len(table)} rows in {wall:.1f} s -> {out / CALIBRATION_FILE}")
    return out


main = hydra_main("calibrate", run)

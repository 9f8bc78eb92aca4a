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

Modules: pair (the two models fed the same points, the table's rows), pointwise (sections 1 and
2), ranking (3), localize (4), intervene (5); the command is here.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from infodecomp.experiments.commands.calibrate.intervene import intervene_section
from infodecomp.experiments.commands.calibrate.localize import localize_section
from infodecomp.experiments.commands.calibrate.pair import Pair
from infodecomp.experiments.commands.calibrate.pointwise import pointwise_sections
from infodecomp.experiments.commands.calibrate.ranking import ranking_section
from infodecomp.experiments.common import resolve_device, resolve_dtype, to_dict
from infodecomp.experiments.config import CalibrateConfig
from infodecomp.experiments.errors import ConfigError
from infodecomp.experiments.exact import one_thread
from infodecomp.experiments.shim import hydra_main, run_dir
from infodecomp.models.capabilities import ExactLikelihood, needs_rgb
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.models.registry import load_model, model_source
from infodecomp.reporting.calibration import (
    CALIBRATION_COLUMNS,
    CALIBRATION_FILE,
    CURVE_COLUMNS,
    CURVES_FILE,
)
from infodecomp.worlds import shapes as world

log = logging.getLogger("infodecomp")

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

"""Section 3 of calibrate (`ranking`): the accuracy of every score on the ShapesWorld relation,
attribute, order and Winoground-style sets (and under shuffled images), learned vs exact; slope
and r compare the per-item margins (true option minus the best other)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from infodecomp.data.controls import SHUFFLED_IMAGES
from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.engine import ItemEstimate
from infodecomp.estimators.queries import option_queries
from infodecomp.experiments.commands.calibrate.pair import SAME_DRAWS, Pair, row
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import CalibrateConfig
from infodecomp.reporting.calibration import compare
from infodecomp.reporting.metrics import ranking_scores
from infodecomp.scores import SCORES

log = logging.getLogger("infodecomp")


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
                    entry = row(
                        "ranking",
                        f"{label}, {SCORES[score].label}",
                        group,
                        SAME_DRAWS,
                        value,
                        acc_o[score][metric],
                        paired=False,
                        note="slope, corr: per-item margins (true option minus the best other)",
                    )
                    entry.update(slope=margins["slope"], corr=margins["corr"], n=len(items))
                    rows.append(entry)
    return rows

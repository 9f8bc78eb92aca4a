"""The zero-shot segmentation table (`aggregate`'s `segmentation.{md,tex,csv}`): every method of
every `localize` run on a segmentation benchmark (data=imagenet-seg, voc-seg) side by side, with
the benchmark's published metrics (reporting.segmentation).

Rows: benchmark x model x method x logsnr samples; a method is whatever the runs hold (the
information maps, the attention baselines under their aggregation, any method added later).
Columns (%): pixel accuracy, mIoU as the benchmark's published evaluation pools it, mAP, and the
per-class (background, object) mIoU for every benchmark (on ImageNet-Segmentation the published
mIoU is accuracy / (2 - accuracy), reporting.segmentation). A run's rows enter once per key; a
second run with the same (benchmark, model, method, samples) is left out (the first is kept).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.segmentation import SEG_COLUMNS, benchmark_metrics
from infodecomp.tasks.segmentation import LABELS

KEYS = ["benchmark", "model", "method", "n_steps"]
METRICS = {"pixel acc": "pixel_acc", "mIoU": "miou", "mAP": "map", "mIoU (fg/bg)": "miou_fg_bg"}
METHOD_ORDER = ("cmi", "mi", "attention", "attn_info")
TITLE = "Zero-shot segmentation (%): pixel accuracy, mIoU, mAP as the benchmarks' published evaluation computes them"
NOTE = (
    "Maps are thresholded at their mean on their own grid and scored at 224 x 224 "
    "(nearest); mAP ranks the min-max normalised map and its complement together. "
    "ImageNet-Segmentation's published mIoU equals accuracy / (2 - accuracy); "
    "mIoU (fg/bg) is the mean of the background and object IoU. PascalVOC (multi-class): "
    "per pixel the concept with the largest map among five background concepts and the "
    "image's classes, scored at 64 x 64 over the 21 labels (void pixels count in accuracy "
    "and unions); no mAP, as published."
)


def is_segmentation_run(run: Any) -> bool:
    """A localize run whose rows carry segmentation counts (its data set is a benchmark)."""
    df = run.results()
    return "seg_protocol" in df.columns and bool(df["seg_protocol"].notna().any())


def segmentation_table(runs: list[Any]) -> pd.DataFrame:
    """One row per (benchmark, model, method, samples) of the segmentation runs (objects with
    `model`, `attention` and `results()`, as aggregate.Run)."""
    rows, seen = [], set()
    for run in runs:
        df = run.results(("method", "n_steps", *SEG_COLUMNS))
        df = df[df["seg_protocol"].notna()]
        for (protocol, method, n), part in df.groupby(["seg_protocol", "method", "n_steps"]):
            aggregation = run.attention if method in pub.ATTENTION_METHODS else None
            label = pub.method_label(method, aggregation)  # "Attention (DAAM)", "ConceptAttention"
            bench = LABELS.get(protocol, protocol)
            if (run.config.get("multi_labels") or "direct") != "direct":
                bench += " [published relabelling bug]"
            key = (bench, run.model, label, int(n))
            if key in seen:
                continue
            seen.add(key)
            m = benchmark_metrics(part)
            rows.append(
                {
                    "benchmark": key[0],
                    "model": run.model,
                    "method": label,
                    "n_steps": int(n),
                    "images": m["images"],
                    **{label: 100 * m[name] for label, name in METRICS.items()},
                    "_order": _order(method),
                }
            )
    if not rows:
        return pd.DataFrame()
    out = pd.DataFrame(rows).sort_values(["benchmark", "model", "_order", "method", "n_steps"])
    return out.drop(columns="_order").reset_index(drop=True)


def _order(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)

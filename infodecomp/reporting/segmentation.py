"""Zero-shot segmentation metrics as the published ConceptAttention evaluation computes them
(pixel accuracy, mIoU, mAP; ImageNet-Segmentation and PascalVOC), restated from its code.

One map is scored against one binary target (`score_map`), then a data set's rows are pooled
(`benchmark_metrics`). Per map:

- the map (on its own grid, e.g. the latent or patch grid) is thresholded at its mean on that
  grid, and min-max normalised (a constant map becomes zeros); both the binary mask and the
  normalised map are then enlarged to EVAL_SIZE x EVAL_SIZE by nearest-neighbour lookup as
  torch's `interpolate(mode="nearest")` does (source index floor(i * in / out));
- the target is the ground truth resized to EVAL_SIZE with PIL's nearest filter (the published
  label transform; `eval_target`): 1 object, 0 background, -1 void (not scored);
- counts over the scored pixels: TP, FP, FN, TN, and the void pixels;
- AP: the normalised map c and 1 - c form one ranking of 2 x (scored pixels) scores, c labelled
  by the object pixels, 1 - c by the background pixels (the published code stacks (1 - c, c)
  against the one-hot target and ranks them together); AP as scikit-learn's
  `average_precision_score` defines it: sum over distinct thresholds, high to low, of
  (recall step) x precision. No positive pixel: 0 (the published `nan_to_num`).

Pooled over a data set (sums of counts before any ratio, as the published running totals):

- pixel accuracy = 2 sum(TP + TN) / (2 sum(scored) + sum(void)): the published scripts compare
  the stacked (background, object) planes of prediction and target, so each scored pixel counts
  twice and a void pixel once, in the denominator only (ImageNet-Segmentation has none: it is
  then the plain accuracy);
- mIoU, protocol "classes" (PascalVOC): mean over background and object of
  sum(intersection) / sum(union); protocol "stacked" (ImageNet-Segmentation): the published
  histogram of the stacked planes gives both bins sum(TP + TN) / (2 sum(N) - sum(TP + TN)),
  i.e. accuracy / (2 - accuracy); `miou_fg_bg` is the per-class mIoU for every protocol;
- mAP = mean of the per-map AP.

The published denominators add 2^-52 (numpy's spacing(1)); it is left out (below 1e-15).

PascalVOC multi-class (protocol voc-multi, the published multi-class script): per image, every
method gives one map per concept (the five background concepts, then the present classes); the
per-pixel argmax (the first of equal values) names a concept, a background concept is label 0,
a class its VOC label (`argmax_labels`); that label map, on its own grid, is enlarged to
MULTI_EVAL_SIZE by the same nearest rule and compared with the labels resized there by PIL's
nearest filter (`eval_labels`; `score_labels`):

- pixel accuracy = sum(correct) / sum(pixels), every pixel counted, void included (the
  published accuracy counts label + 1 > 0, i.e. all pixels; a void pixel is never correct);
- mIoU: per label 0-20, intersection (predicted c and labelled c) and union (predicted c or
  labelled c: a void pixel predicted c is in c's union), each summed over the data set, then
  the mean of intersection / union over the labels whose pooled union is non-empty (the
  published mean divides by (labels + 1e-6): left out, a relative 5e-8);
- no mAP (the published script computes none): NaN, as is the fg/bg mIoU.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from infodecomp.tasks.segmentation import EVAL_SIZE, MULTI_EVAL_SIZE, PROTOCOLS, VOC_WORDS, VOID

# binary protocols: the counts and AP of one map; voc-multi: correct and all pixels of one
# label map, and its per-label intersections and unions (N_LABELS counts, space separated)
MULTI_COLUMNS = ["seg_correct", "seg_pixels", "seg_inter", "seg_union"]
SEG_COLUMNS = [
    "seg_protocol", "seg_tp", "seg_fp", "seg_fn", "seg_tn", "seg_void", "seg_ap", *MULTI_COLUMNS
]  # fmt: skip
COUNTS = ["seg_tp", "seg_fp", "seg_fn", "seg_tn", "seg_void"]
N_LABELS = len(VOC_WORDS)  # 0 background, 1-20 the classes


def nearest_resize(a: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """`a` [h, w] enlarged (or shrunk) to size x size by torch's nearest rule: output index i
    reads input index floor(i * (in / out)), the scale a float32 as torch computes it."""
    a = np.asarray(a)
    rows = _nearest_index(a.shape[0], size)
    cols = _nearest_index(a.shape[1], size)
    return a[rows][:, cols]


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def eval_target(
    positive: np.ndarray, void: np.ndarray | None = None, size: int = EVAL_SIZE
) -> np.ndarray:
    """The published target at size x size: `positive` (bool [H, W], the object) and `void`
    (bool [H, W] or None) at the image's resolution, resized together with PIL's nearest
    filter. Returns int8 [size, size]: 1 object, 0 background, -1 void."""
    labels = np.asarray(positive, dtype=np.uint8)
    if void is not None:
        labels = np.where(np.asarray(void, dtype=bool), np.uint8(255), labels)
    small = np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST))
    return np.where(small == 255, -1, small.astype(np.int8)).astype(np.int8)


def min_max(heat: np.ndarray) -> np.ndarray:
    """(heat - min) / (max - min); a constant (or empty) map is zeros (the published NaN, then
    nan_to_num)."""
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    lo, hi = (heat.min(), heat.max()) if heat.size else (0.0, 0.0)
    return (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of `scores` ranking `labels` (bool): at each distinct score, high to
    low, the precision there times the recall gained there, summed (scikit-learn's
    `average_precision_score`). No positive label: 0."""
    y = np.asarray(labels, dtype=bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if not y.any():
        return 0.0
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last].astype(np.float64)
    seen = (last + 1).astype(np.float64)
    recall = tp / tp[-1]
    gained = np.diff(np.r_[0.0, recall])
    return float(np.sum(gained * tp / seen))


def score_map(heat: np.ndarray, target: np.ndarray, protocol: str) -> dict:
    """The counts and AP of one map [h, w] (any grid) against `target` (eval_target's
    int8 [S, S]); a dict of SEG_COLUMNS."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"segmentation protocol {protocol!r} unknown; one of {list(PROTOCOLS)}")
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float64))
    size = target.shape[0]
    mask = nearest_resize(heat > heat.mean(), size)
    coeff = nearest_resize(min_max(heat), size)
    valid = target >= 0
    obj = target == 1
    pred, obj, c = mask[valid], obj[valid], coeff[valid]
    ap = average_precision(np.r_[~obj, obj], np.r_[1.0 - c, c])
    return {
        "seg_protocol": protocol,
        "seg_tp": int(np.sum(pred & obj)),
        "seg_fp": int(np.sum(pred & ~obj)),
        "seg_fn": int(np.sum(~pred & obj)),
        "seg_tn": int(np.sum(~pred & ~obj)),
        "seg_void": int(np.sum(~valid)),
        "seg_ap": ap,
    }


def eval_labels(labels: np.ndarray, size: int = MULTI_EVAL_SIZE) -> np.ndarray:
    """A label image uint8 [H, W] resized to size x size with PIL's nearest filter (the
    published multi-class label transform)."""
    small = Image.fromarray(np.asarray(labels, dtype=np.uint8)).resize((size, size), Image.NEAREST)
    return np.asarray(small)


def argmax_labels(maps: np.ndarray, labels: list[int]) -> np.ndarray:
    """The label map [h, w] of concept maps [K, h, w]: at each pixel the label (`labels[k]`) of
    the concept with the largest value, the first of equal ones."""
    maps = np.nan_to_num(np.asarray(maps, dtype=np.float64))
    if maps.shape[0] != len(labels):
        raise ValueError(f"{maps.shape[0]} concept maps for {len(labels)} labels")
    return np.asarray(labels, dtype=np.int64)[np.argmax(maps, axis=0)]


def chained_labels(index: np.ndarray, n_background: int, classes: list[int]) -> np.ndarray:
    """The published multi-class script's label map, a bug reproduced only by name (localize
    multi_labels=chained-published-bug): from the argmax concept index, the background
    concepts' indices set to 0, then each class's index n_background + j replaced by its label
    one after the other in place, so a label written earlier that equals a later index is
    replaced again (present classes [6, 10] after 5 background concepts: bus pixels, label 6,
    become cow, 10)."""
    pred = np.asarray(index, dtype=np.int64).copy()
    pred[pred < n_background] = 0
    for j, c in enumerate(classes):
        pred[pred == n_background + j] = c
    return pred


def score_labels(pred: np.ndarray, target: np.ndarray) -> dict:
    """One label map [h, w] (any grid) against the labels `target` (eval_labels' uint8
    [S, S]): correct and all pixels, void pixels, per-label intersections and unions."""
    pred = nearest_resize(np.asarray(pred, dtype=np.int64), target.shape[0])
    target = np.asarray(target, dtype=np.int64)
    inter = [int(np.sum((pred == c) & (target == c))) for c in range(N_LABELS)]
    union = [int(np.sum((pred == c) | (target == c))) for c in range(N_LABELS)]
    return {
        "seg_protocol": "voc-multi",
        "seg_void": int(np.sum(target == VOID)),
        "seg_correct": int(np.sum(pred == target)),
        "seg_pixels": int(target.size),
        "seg_inter": " ".join(map(str, inter)),
        "seg_union": " ".join(map(str, union)),
    }


def multiclass_metrics(rows: pd.DataFrame) -> dict:
    """Pixel accuracy and mIoU of one method's voc-multi rows, pooled as the published
    multi-class script pools them; no mAP (NaN)."""
    inter = _pooled(rows["seg_inter"])
    union = _pooled(rows["seg_union"])
    seen = union > 0
    nan = float("nan")
    return {
        "pixel_acc": _ratio(float(rows["seg_correct"].sum()), float(rows["seg_pixels"].sum())),
        "miou": float(np.mean(inter[seen] / union[seen])) if seen.any() else nan,
        "miou_fg_bg": nan,
        "map": nan,
        "images": len(rows),
    }


def _pooled(column: pd.Series) -> np.ndarray:
    """The per-label counts of a voc-multi column summed over its rows."""
    total = np.zeros(N_LABELS, dtype=np.int64)
    for value in column:
        counts = np.array(str(value).split(), dtype=np.int64)
        if counts.size != N_LABELS:
            raise ValueError(
                f"a voc-multi count {value!r} has {counts.size} labels, not {N_LABELS}"
            )
        total += counts
    return total.astype(np.float64)


def benchmark_metrics(rows: pd.DataFrame) -> dict:
    """Pixel accuracy, mIoU (the protocol's), the per-class mIoU and mAP of one method's rows
    on one benchmark (fractions in [0, 1]), and the number of maps."""
    protocols = rows["seg_protocol"].dropna().unique()
    if len(protocols) != 1:
        raise ValueError(f"segmentation rows mix protocols {sorted(protocols)}; pool one")
    kind = PROTOCOLS[str(protocols[0])]
    if kind == "argmax":
        return multiclass_metrics(rows)
    tp, fp, fn, tn, void = (float(rows[c].sum()) for c in COUNTS)
    agree, scored = tp + tn, tp + fp + fn + tn
    fg_bg = (_ratio(tp, tp + fp + fn) + _ratio(tn, tn + fp + fn)) / 2
    miou = _ratio(agree, 2 * scored - agree) if kind == "stacked" else fg_bg
    return {
        "pixel_acc": _ratio(2 * agree, 2 * scored + void),
        "miou": miou,
        "miou_fg_bg": fg_bg,
        "map": float(rows["seg_ap"].mean()),
        "images": len(rows),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")

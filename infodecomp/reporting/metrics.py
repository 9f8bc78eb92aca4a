"""Benchmark metrics from result tables: ARO accuracy, localisation mIoU, intervention correlations.

Pure pandas / numpy, so tables can be rebuilt from run directories without a model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from infodecomp.data.aro_relations import EXCLUDED_RELATIONS

# ----------------------------------------------------------------------------- ARO (Tables 1, 2)

VG_RELATION = "vg-relation"
VG_ATTRIBUTION = "vg-attribution"
ORDER_SUBSETS = ("coco-order", "flickr-order")
MIN_ATTRIBUTE_GROUP = (
    25  # VG-Attribution averages over attribute pairs with at least this many items
)
_ALIASES = {
    "flickr30k-order": "flickr-order",
    "visual-genome-relation": VG_RELATION,
    "visual-genome-attribution": VG_ATTRIBUTION,
    "vg-r": VG_RELATION,
    "vg-a": VG_ATTRIBUTION,
}


def canonical_subset(name: str) -> str:
    """Normalise an ARO subset name: ``aro-vg-relation``, ``VG_Relation`` -> ``vg-relation``."""
    key = str(name).strip().lower().replace("_", "-")
    key = key.removeprefix("aro-")
    return _ALIASES.get(key, key)


def predict(scores: pd.DataFrame) -> pd.DataFrame:
    """Pick each item's option with the highest score, with the benchmark's tie rule.

    Ties go to the lowest option index, as ``np.argmax`` over options in their original order does
    in the ARO evaluation (VG: [false, true], so a tie counts as wrong; Order: true first).

    Args:
        scores: one row per (item, option) with columns ``item_id``, ``option`` (index of the
            caption among the item's options) and ``score`` (higher is better). Columns
            ``subset``, ``group`` and ``label``, when present, are carried over per item.

    Returns:
        One row per item: ``item_id``, ``pred`` and the carried-over columns.
    """
    missing = {"item_id", "option", "score"} - set(scores.columns)
    if missing:
        raise ValueError(f"predict: columns {sorted(missing)} missing; got {list(scores.columns)}.")
    bad = scores.loc[scores["score"].isna(), "item_id"].unique()
    if len(bad):
        raise ValueError(
            f"predict: NaN scores for items {list(bad[:5])}; an estimate failed, "
            "rerun those items or drop them explicitly."
        )
    if scores.duplicated(["item_id", "option"]).any():
        dup = scores.loc[scores.duplicated(["item_id", "option"]), "item_id"].tolist()[:5]
        raise ValueError(
            f"predict: items {dup} have an option scored twice; pass one estimator at a time."
        )
    df = scores.reset_index(drop=True).sort_values(["item_id", "option"], kind="stable")
    # idxmax returns the first occurrence of the maximum, i.e. the lowest option index.
    best = df.groupby("item_id", sort=False)["score"].idxmax()
    keep = ["item_id", "option"] + [c for c in ("subset", "group", "label") if c in df.columns]
    out = df.loc[best.values, keep].rename(columns={"option": "pred"})
    return out.reset_index(drop=True)


def _group_table(pred: pd.DataFrame) -> pd.DataFrame:
    correct = (pred["pred"].astype(int) == pred["label"].astype(int)).astype(float)
    g = correct.groupby(pred["group"].astype(str))
    return pd.DataFrame(
        {"group": g.mean().index, "n": g.size().values, "accuracy": g.mean().values}
    )


def aro_accuracy(pred: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """ARO accuracy of one subset exactly as the benchmark defines it.

    - ``vg-relation``: macro mean over relations of per-relation accuracy, leaving out the
      relations in ``EXCLUDED_RELATIONS``.
    - ``vg-attribution``: macro mean over attribute pairs with at least 25 items.
    - ``coco-order``, ``flickr-order``: plain accuracy (Precision@1).
    - any other subset (ShapesWorld ``shapes-*``): plain accuracy; the macro mean over groups is
      reported in ``per_group.attrs["macro"]``.

    Args:
        pred: one row per item with ``item_id``, ``subset``, ``group``, ``label``, ``pred``.

    Returns:
        ``(score, per_group)``: score in [0, 1]; ``per_group`` has columns ``group``, ``n``,
        ``accuracy`` and ``included`` (whether the group enters the score's macro mean), and
        ``attrs`` ``micro`` (plain accuracy), ``macro`` (mean over all groups) and ``rule``.
    """
    missing = {"item_id", "subset", "group", "label", "pred"} - set(pred.columns)
    if missing:
        raise ValueError(
            f"aro_accuracy: columns {sorted(missing)} missing; got {list(pred.columns)}."
        )
    if pred.empty:
        raise ValueError("aro_accuracy: no predictions.")
    subsets = {canonical_subset(s) for s in pred["subset"].unique()}
    if len(subsets) != 1:
        raise ValueError(
            f"aro_accuracy: one subset at a time, got {sorted(subsets)}; group by subset first."
        )
    if pred["item_id"].duplicated().any():
        dup = pred.loc[pred["item_id"].duplicated(), "item_id"].tolist()[:5]
        raise ValueError(f"aro_accuracy: items {dup} appear more than once; pass one row per item.")
    subset = subsets.pop()
    per_group = _group_table(pred)
    micro = float((pred["pred"].astype(int) == pred["label"].astype(int)).mean())
    if subset == VG_RELATION:
        per_group["included"] = ~per_group["group"].isin(EXCLUDED_RELATIONS)
        rule = "macro over relations, excluded relations left out"
    elif subset == VG_ATTRIBUTION:
        per_group["included"] = per_group["n"] >= MIN_ATTRIBUTE_GROUP
        rule = f"macro over attribute pairs with >= {MIN_ATTRIBUTE_GROUP} items"
    else:
        per_group["included"] = True
        rule = "plain accuracy"
    if subset in (VG_RELATION, VG_ATTRIBUTION):
        inc = per_group.loc[per_group["included"], "accuracy"]
        score = float(inc.mean()) if len(inc) else float("nan")
    else:
        score = micro
    per_group.attrs.update(
        micro=micro, macro=float(per_group["accuracy"].mean()), rule=rule, subset=subset
    )
    return score, per_group


def accuracy_se(per_group: pd.DataFrame) -> float:
    """Standard error of the accuracy `aro_accuracy` returned with this `per_group` table.

    Plain accuracy over n items: the binomial sqrt(p (1 - p) / n). A macro mean over the G
    included groups (VG-Relation, VG-Attribution): sqrt(sum_g p_g (1 - p_g) / n_g) / G, the
    groups being independent binomials. Both are plug-in estimates: 0 when every answer in a
    group is right or every one wrong.
    """
    if per_group.attrs.get("rule") == "plain accuracy":
        n = float(per_group["n"].sum())
        p = float(per_group.attrs["micro"])
        return float(np.sqrt(p * (1 - p) / n)) if n > 0 else float("nan")
    inc = per_group[per_group["included"]]
    if inc.empty:
        return float("nan")
    p, n = inc["accuracy"].to_numpy(float), inc["n"].to_numpy(float)
    return float(np.sqrt(np.sum(p * (1 - p) / n)) / len(inc))


# ------------------------------------------------------------------------ localisation (Table 3)

THRESHOLDS = np.linspace(0.1, 0.5, 50)
IOU_COLUMNS = [f"iou_{j:02d}" for j in range(len(THRESHOLDS))]


def min_max_normalise(heat: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1]; a constant map becomes all zeros."""
    heat = np.asarray(heat, dtype=np.float64)
    if not np.all(np.isfinite(heat)):
        raise ValueError("min_max_normalise: the map holds NaN or infinite values.")
    lo, hi = heat.min(), heat.max()
    if hi == lo:
        return np.zeros_like(heat)
    return (heat - lo) / (hi - lo)


def iou(pred_mask: np.ndarray, gt_mask: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one shape (NaN when both are empty)."""
    a, b = np.asarray(pred_mask, dtype=bool), np.asarray(gt_mask, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(
            f"iou: mask shapes differ, {a.shape} vs {b.shape}; resize the map to "
            "the ground truth first."
        )
    union = np.logical_or(a, b).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(a, b).sum() / union)


def iou_curve(
    heat: np.ndarray, gt_mask: np.ndarray, thresholds: np.ndarray = THRESHOLDS
) -> np.ndarray:
    """IoU of the min-max normalised map thresholded (``map > t``) at each threshold."""
    norm = min_max_normalise(heat)
    return np.array([iou(norm > t, gt_mask) for t in thresholds])


def miou_curve(df: pd.DataFrame) -> np.ndarray:
    """Mean IoU over rows at each threshold, from columns ``iou_00`` ... ``iou_49``."""
    missing = [c for c in IOU_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"miou: columns {missing[:3]}... missing; expected {IOU_COLUMNS[0]}..{IOU_COLUMNS[-1]}."
        )
    if df.empty:
        raise ValueError("miou: no rows.")
    values = df[IOU_COLUMNS].to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("miou: NaN IoU values (empty ground-truth masks?); fix those items.")
    return values.mean(axis=0)


def miou_paper(df: pd.DataFrame) -> float:
    """Published protocol: the best mean IoU over the 50 thresholds, chosen on the same rows."""
    return float(miou_curve(df).max())


def miou_heldout(df: pd.DataFrame, split_column: str = "split") -> float:
    """Honest variant: threshold chosen on split A and scored on B, and vice versa, averaged.

    Ties in the threshold choice go to the lowest threshold.
    """
    if split_column not in df.columns:
        raise ValueError(f"miou_heldout: no '{split_column}' column.")
    a = df[df[split_column] == "A"]
    b = df[df[split_column] == "B"]
    if a.empty or b.empty:
        raise ValueError(
            f"miou_heldout: needs rows in both splits A and B, got {len(a)} and {len(b)}."
        )
    ca, cb = miou_curve(a), miou_curve(b)
    return float((cb[int(np.argmax(ca))] + ca[int(np.argmax(cb))]) / 2)


# ------------------------------------------------------------------------ interventions (Table 4)


def pearson_r(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two vectors (NaN when either is constant or shorter than 2)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"pearson_r: need two vectors of one length, got {x.shape}, {y.shape}.")
    if len(x) < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def bootstrap_se(
    stat: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0
) -> float:
    """Bootstrap standard error of ``stat(indices)`` over resamples of ``n`` items.

    ``stat`` receives an index array of length ``n`` drawn with replacement. The standard
    error is the standard deviation (ddof=1) of the finite resampled statistics.
    """
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, size=n)) for _ in range(n_boot)])
    draws = draws[np.isfinite(draws)]
    return float(draws.std(ddof=1)) if len(draws) > 1 else float("nan")


def image_level_r(
    df: pd.DataFrame, column: str = "cmi_total", *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Pearson r across items between ``change_total`` and ``column``, with bootstrap se."""
    x = df["change_total"].to_numpy(dtype=np.float64)
    y = df[column].to_numpy(dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.all():
        raise ValueError(
            f"image_level_r: {int((~ok).sum())} rows with missing change_total or {column}."
        )
    r = pearson_r(x, y)
    se = bootstrap_se(lambda i: pearson_r(x[i], y[i]), len(x), n_boot=n_boot, seed=seed)
    return r, se


def pixel_level_r(
    df: pd.DataFrame, column: str = "pixel_r_cmi", *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, int]:
    """Mean over items of the per-item pixel Pearson r in ``column``, with bootstrap se.

    Items whose r is undefined (NaN: a constant map) are left out; the count used is returned.

    Returns:
        ``(mean_r, se, n_used)``.
    """
    r = df[column].to_numpy(dtype=np.float64)
    r = r[np.isfinite(r)]
    if len(r) == 0:
        return float("nan"), float("nan"), 0
    se = bootstrap_se(lambda i: float(r[i].mean()), len(r), n_boot=n_boot, seed=seed)
    return float(r.mean()), se, int(len(r))


def intervention_table(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Table 4 numbers: image- and pixel-level r for CMI and attention, with bootstrap se.

    A method whose totals are all missing (a model without cross-attention, such as the exact
    oracle, has no attention baseline) is left out rather than reported as zero.

    Returns:
        Rows ``cmi`` and ``attention`` (index ``method``) with columns ``image_r``,
        ``image_se``, ``pixel_r``, ``pixel_se``, ``n_items``, ``n_pixel``.
    """
    rows = []
    for method, total, pixel in (
        ("cmi", "cmi_total", "pixel_r_cmi"),
        ("attention", "attn_total", "pixel_r_attn"),
    ):
        if df[total].isna().all():
            continue
        image_r, image_se = image_level_r(df, total, n_boot=n_boot, seed=seed)
        pixel_r, pixel_se, n_pixel = pixel_level_r(df, pixel, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "method": method,
                "image_r": image_r,
                "image_se": image_se,
                "pixel_r": pixel_r,
                "pixel_se": pixel_se,
                "n_items": len(df),
                "n_pixel": n_pixel,
            }
        )
    return pd.DataFrame(rows).set_index("method")

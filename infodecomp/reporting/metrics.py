"""Benchmark metrics from result tables: ARO accuracy, localisation mIoU, intervention correlations.

Pure pandas / numpy, so tables can be rebuilt from run directories without a model.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from infodecomp.tasks import canonical_subset, get_task

# ----------------------------------------------------------------------------- ARO (Tables 1, 2)


def ranking_accuracy(pred: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """One subset's score from one prediction per item, by the subset's task rule
    (infodecomp.tasks); see `RankingTask.accuracy` for the returned per-group table."""
    if "subset" not in pred.columns or pred.empty:
        raise ValueError("ranking_accuracy: needs predictions with a 'subset' column.")
    subsets = {canonical_subset(s) for s in pred["subset"].unique()}
    if len(subsets) != 1:
        raise ValueError(
            f"ranking_accuracy: one subset at a time, got {sorted(subsets)}; group by subset first."
        )
    return get_task(subsets.pop()).accuracy(pred)


def ranking_scores(results: pd.DataFrame) -> list[dict]:
    """Every (estimator, subset) of an `aro` results table scored by its task's rule.

    Returns one dict per pair: ``estimator``, ``subset`` (canonical), ``metrics`` ({name: value
    in [0, 1]}, headline first: ``accuracy`` for most tasks, ``text`` / ``image`` / ``group``
    for Winoground), ``score`` (the headline value), ``per_group`` (see
    `RankingTask.accuracy`) and ``part`` (the rows scored). The `aro` summary and the
    aggregate tables both read this, so they cannot disagree.
    """
    df = results.copy()
    df["subset"] = df["subset"].map(canonical_subset)
    out = []
    for (est, subset), part in df.groupby(["estimator", "subset"], sort=False):
        cols = ["item_id", "option", "score", "subset", "group", "label"]
        task = get_task(subset)
        metrics, per_group = task.evaluate(part[cols])
        if len(task.metrics) == 1:
            ses = {name: accuracy_se(per_group) for name in metrics}
        else:  # fractions of the task's examples (e.g. Winoground's 2 x 2 examples)
            n = float(per_group["n"].sum())
            ses = {name: _binomial_se(v, n) for name, v in metrics.items()}
        out.append(
            {
                "estimator": est,
                "subset": subset,
                "metrics": metrics,
                "se": ses,
                "score": next(iter(metrics.values())),
                "per_group": per_group,
                "part": part,
            }
        )
    return out


def _binomial_se(p: float, n: float) -> float:
    return float(np.sqrt(p * (1 - p) / n)) if n > 0 else float("nan")


def accuracy_se(per_group: pd.DataFrame) -> float:
    """Standard error of the accuracy `RankingTask.accuracy` returned with this `per_group` table.

    Plain accuracy over n items: the binomial sqrt(p (1 - p) / n). A macro mean over the G
    included groups (VG-Relation, VG-Attribution): sqrt(sum_g p_g (1 - p_g) / n_g) / G, the
    groups being independent binomials. Both are plug-in estimates: 0 when every answer in a
    group is right or every one wrong.
    """
    if bool(per_group["included"].all()) and per_group.attrs.get("macro_rule") is None:
        return _binomial_se(float(per_group.attrs["micro"]), float(per_group["n"].sum()))
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


def miou_cells(df: pd.DataFrame) -> tuple[float, float]:
    """(paper-protocol mIoU, held-out-threshold mIoU) of scored rows; the held-out figure is NaN
    when the rows do not fill both splits (e.g. a run of one item), never an error."""
    both = set(df["split"].dropna()) >= {"A", "B"} if "split" in df.columns else False
    return miou_paper(df), (miou_heldout(df) if both else float("nan"))


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

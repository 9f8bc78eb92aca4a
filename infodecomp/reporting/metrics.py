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
    for Winoground), ``score`` (the headline value), ``interval`` ({name: (lo, hi)}, the 95 %
    interval of `accuracy_interval`), ``per_group`` (see `RankingTask.accuracy`) and ``part``
    (the rows scored). The `aro` summary and the aggregate tables both read this, so they
    cannot disagree.
    """
    df = results.copy()
    df["subset"] = df["subset"].map(canonical_subset)
    out = []
    for (est, subset), part in df.groupby(["estimator", "subset"], sort=False):
        cols = ["item_id", "option", "score", "subset", "group", "label"]
        task = get_task(subset)
        metrics, per_group = task.evaluate(part[cols])
        if len(task.metrics) == 1:
            intervals = {name: accuracy_interval(per_group) for name in metrics}
        else:  # fractions of the task's examples (e.g. Winoground's 2 x 2 examples)
            n = float(per_group["n"].sum())
            intervals = {name: wilson_interval(round(v * n), n) for name, v in metrics.items()}
        out.append(
            {
                "estimator": est,
                "subset": subset,
                "metrics": metrics,
                "interval": intervals,
                "score": next(iter(metrics.values())),
                "per_group": per_group,
                "part": part,
            }
        )
    return out


Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile: two-sided 95 % intervals
INTERVAL_LABEL = "95% interval: Wilson score (macro means over groups: Agresti-Coull)"


def wilson_interval(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion of k successes in n trials.

    Unlike the plug-in p +- z sqrt(p (1 - p) / n), it does not shrink to a point when every
    answer is right (or wrong): 3 of 3 right gives (0.44, 1.0), not (1.0, 1.0). (NaN, NaN)
    when n is 0.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def accuracy_interval(per_group: pd.DataFrame, z: float = Z95) -> tuple[float, float]:
    """95 % interval of the accuracy `RankingTask.accuracy` returned with this per-group table.

    Plain accuracy over n items: the Wilson score interval. A macro mean over the G included
    groups (VG-Relation, VG-Attribution): the mean p of the groups' accuracies +- z sqrt(sum_g
    v_g) / G, where v_g = p~ (1 - p~) / (n_g + z^2) with p~ = (k_g + z^2 / 2) / (n_g + z^2)
    (the Agresti-Coull variance of each group, which stays above 0 for an all-right or all-wrong
    group), clipped to [0, 1]; with one group it is that group's Wilson interval.
    """
    if bool(per_group["included"].all()) and per_group.attrs.get("macro_rule") is None:
        n = float(per_group["n"].sum())
        return wilson_interval(round(float(per_group.attrs["micro"]) * n), n, z)
    inc = per_group[per_group["included"]]
    if inc.empty:
        return float("nan"), float("nan")
    p, n = inc["accuracy"].to_numpy(float), inc["n"].to_numpy(float)
    if len(inc) == 1:
        return wilson_interval(round(p[0] * n[0]), n[0], z)
    z2 = z * z
    adjusted = (np.round(p * n) + z2 / 2) / (n + z2)
    half = z * float(np.sqrt(np.sum(adjusted * (1 - adjusted) / (n + z2)))) / len(inc)
    mean = float(p.mean())
    return max(0.0, mean - half), min(1.0, mean + half)


def mean_interval(values: list[float], intervals: list[tuple[float, float]]) -> tuple[float, float]:
    """Interval of the mean of independent estimates, each with its 95 % interval: the mean
    +- sqrt(sum of squared half-widths) / count, clipped to [0, 1] (a normal approximation
    on top of each estimate's own interval)."""
    mean = float(np.mean(values))
    half = float(np.sqrt(sum(((hi - lo) / 2) ** 2 for lo, hi in intervals))) / len(values)
    return max(0.0, mean - half), min(1.0, mean + half)


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


def iou_curve_maps(
    heat: np.ndarray, reference: np.ndarray, thresholds: np.ndarray = THRESHOLDS
) -> np.ndarray:
    """IoU of two min-max normalised maps thresholded at the same level, at each threshold: how
    well `heat` reproduces the pixels `reference` selects (e.g. an exact map)."""
    a, b = min_max_normalise(heat), min_max_normalise(reference)
    return np.array([iou(a > t, b > t) for t in thresholds])


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


def miou_bootstrap(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(bootstrap se, published "±") of the paper-protocol mIoU of scored rows, both in the
    statistic's units (the best threshold is chosen again on every resample, as the protocol
    chooses it on the data it scores).

    The se resamples all N items with replacement `n_boot` times (`bootstrap_se`); the
    published "±" is the published scripts' rule (`published_error_bar`), which is no se.
    """
    values = df[IOU_COLUMNS].to_numpy(dtype=np.float64)  # [N, thresholds]

    def stat(idx: np.ndarray) -> float:
        return float(values[idx].mean(axis=0).max())

    n = len(values)
    return bootstrap_se(stat, n, n_boot=n_boot, seed=seed), published_error_bar(stat, n, seed=seed)


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


# The published error bars: std of 100 resamples of int(0.9 N) items (with replacement), / 10
PUBLISHED_BOOT, PUBLISHED_FRACTION, PUBLISHED_DIVISOR = 100, 0.9, 10


def published_error_bar(stat: Callable[[np.ndarray], float], n: int, *, seed: int = 0) -> float:
    """The "±" of the published scripts: the standard deviation (numpy's, ddof=0) of ``stat``
    over 100 resamples of int(0.9 n) items drawn with replacement, divided by 10.

    It is not a standard error: subsampling 0.9 n widens the spread by about 1/sqrt(0.9), and
    the division by 10 shrinks it tenfold, whatever n is. Reported beside the bootstrap se,
    labelled, to compare with the paper's numbers only.
    """
    m = int(PUBLISHED_FRACTION * n)
    if n < 2 or m < 1:
        return float("nan")
    rng = np.random.default_rng(seed)
    draws = np.array([stat(rng.integers(0, n, size=m)) for _ in range(PUBLISHED_BOOT)])
    draws = draws[np.isfinite(draws)]
    return float(draws.std()) / PUBLISHED_DIVISOR if len(draws) > 1 else float("nan")


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


# (method, image-level x column, pixel-level r column); image-level r is r(change, x) except for
# cmi_vs_exact, which is r(cmi_total, exact_total): how well the estimate tracks the exact CMI.
INTERVENTION_METHODS = (
    ("cmi", "cmi_total", "pixel_r_cmi"),
    ("attention", "attn_total", "pixel_r_attn"),
    ("exact", "exact_total", "pixel_r_exact"),
    ("cmi_vs_exact", "exact_total", "pixel_r_cmi_exact"),
)


def intervention_table(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Table 4 numbers: image- and pixel-level r for CMI and attention, with bootstrap se; with
    exact references (ShapesWorld oracle) also for the exact CMI, and the estimate against it.

    A method whose totals are all missing (a model without cross-attention, such as the exact
    oracle, has no attention baseline; a learned model has no exact CMI) is left out rather
    than reported as zero.

    Returns:
        Rows among ``cmi``, ``attention``, ``exact``, ``cmi_vs_exact`` (index ``method``) with
        columns ``image_r``, ``image_se``, ``pixel_r``, ``pixel_se``, ``n_items``, ``n_pixel``.
    """
    rows = []
    for method, total, pixel in INTERVENTION_METHODS:
        if total not in df.columns or df[total].isna().all():
            continue
        if method == "cmi_vs_exact":
            image_r, image_se = image_level_r(
                df.assign(change_total=df["cmi_total"]), total, n_boot=n_boot, seed=seed
            )
        else:
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


def _between_share(values: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of `values` between the group means (eta squared)."""
    total = ((values - values.mean()) ** 2).sum()
    if total == 0:
        return float("nan")
    between = sum(
        (groups == g).sum() * (values[groups == g].mean() - values.mean()) ** 2
        for g in np.unique(groups)
    )
    return float(between / total)


def _within(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Values minus their group's mean."""
    out = values.astype(np.float64).copy()
    for g in np.unique(groups):
        out[groups == g] -= values[groups == g].mean()
    return out


def intervention_decomposition(df: pd.DataFrame) -> dict | None:
    """How much of the image-level r is word type and how much the estimator's noise.

    Needs several word types and the exact CMI (ShapesWorld oracle). Returns image-level r of the
    estimate and of the exact CMI, both again within word types (each type's mean removed), the
    share of the exact CMI's and of the change's variance that lies between word types, and the
    share of the estimated CMI's variance that is Monte Carlo noise (mean se^2 / variance), and
    the same for the exact reference within word types (its quadrature is exact; its expectation
    over eps is a Monte Carlo average with a small error, which matters only within a type).
    """
    need = {"word_type", "exact_total", "cmi_stderr", "cmi_total", "change_total"}
    if not need <= set(df.columns) or df["exact_total"].isna().all():
        return None
    df = df.dropna(subset=["exact_total", "cmi_total", "change_total"])
    types = df["word_type"].astype(str).to_numpy()
    if len(np.unique(types)) < 2 or len(df) < 4:
        return None
    change = df["change_total"].to_numpy(dtype=np.float64)
    est = df["cmi_total"].to_numpy(dtype=np.float64)
    exact = df["exact_total"].to_numpy(dtype=np.float64)
    se = df["cmi_stderr"].to_numpy(dtype=np.float64)
    exact_se = (
        df["exact_stderr"].to_numpy(dtype=np.float64)
        if "exact_stderr" in df.columns
        else np.zeros(len(df))
    )
    return {
        "r_estimate": pearson_r(change, est),
        "r_exact": pearson_r(change, exact),
        "r_within_estimate": pearson_r(_within(change, types), _within(est, types)),
        "r_within_exact": pearson_r(_within(change, types), _within(exact, types)),
        "type_share_exact": _between_share(exact, types),
        "type_share_change": _between_share(change, types),
        "noise_share_estimate": float(np.mean(se**2) / np.var(est, ddof=1)),
        # the exact reference's own Monte Carlo noise, within word types (where it matters)
        "noise_share_exact_within": float(
            np.mean(exact_se**2) / np.var(_within(exact, types), ddof=1)
        ),
        "n_items": len(df),
    }


def decomposition_note(d: dict) -> str:
    """One sentence for Table 4 from `intervention_decomposition`."""
    return (
        f"image-level r {d['r_estimate']:.2f} (estimate) vs {d['r_exact']:.2f} (exact CMI); "
        f"within word types {d['r_within_estimate']:.2f} vs {d['r_within_exact']:.2f}. "
        f"Word type holds {d['type_share_exact']:.0%} of the exact CMI's variance and "
        f"{d['type_share_change']:.0%} of the change's; Monte Carlo noise is "
        f"{d['noise_share_estimate']:.0%} of the estimated CMI's variance (the exact "
        f"reference's own noise: {d['noise_share_exact_within']:.0%} of its within-type variance)."
    )

"""The calibration table (`infodecomp calibrate`): its files, its statistics, and how `aggregate`
and `report` read it. Pure pandas / numpy (no torch).

A calibrate run directory holds ``calibration.csv`` (one row per section x quantity x group x
reference: learned, exact, bias, slope, corr, n, note) and ``curves.csv`` (per-sample denoising
errors of both models: item, condition, model, logsnr, mmse), plus ``figures/maps-*.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infodecomp.reporting.metrics import pearson_r

CALIBRATION_FILE = "calibration.csv"
CURVES_FILE = "curves.csv"
FIGURES = "figures"
CALIBRATION_COLUMNS = (
    "section",
    "quantity",
    "group",
    "reference",
    "learned",
    "exact",
    "bias",
    "slope",
    "corr",
    "n",
    "note",
)
CURVE_COLUMNS = ("item", "condition", "model", "logsnr", "mmse")
SECTION_ORDER = ("mmse", "pointwise", "ranking", "localize", "intervene")


def _values(v: Any) -> np.ndarray:
    return np.atleast_1d(np.asarray(v, dtype=np.float64))


def compare(learned: Any, exact: Any, *, paired: bool = True) -> dict[str, float]:
    """learned and exact: means over their finite values; with `paired` (one value per item each,
    same items) also bias = mean(learned - exact), slope of learned regressed on exact and
    Pearson corr, over the items where both are finite; unpaired: bias = difference of the means.
    n: items with both values finite (unpaired: learned's)."""
    lv, ev = _values(learned), _values(exact)
    nan = float("nan")

    def mean(v: np.ndarray) -> float:
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else nan

    out = {"learned": mean(lv), "exact": mean(ev)}
    if not paired or lv.shape != ev.shape:
        out.update(bias=out["learned"] - out["exact"], slope=nan, corr=nan)
        out["n"] = int(np.isfinite(lv).sum())
        return out
    ok = np.isfinite(lv) & np.isfinite(ev)
    lv, ev = lv[ok], ev[ok]
    n = len(lv)
    bias = float((lv - ev).mean()) if n else nan
    slope = nan
    if n > 1:
        ec = ev - ev.mean()
        var = float((ec * ec).sum())
        slope = float(((lv - lv.mean()) * ec).sum() / var) if var > 0 else nan
    return {**out, "bias": bias, "slope": slope, "corr": pearson_r(lv, ev), "n": n}


def read_calibration(run_dir: str | Path) -> pd.DataFrame:
    """A calibrate run's table; a one-line error when the file is missing or lacks columns."""
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; a calibrate run writes it at its end (rerun `infodecomp calibrate` "
            "into that run.out_dir)"
        )
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in CALIBRATION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} missing; found {list(df.columns)}")
    for col in ("group", "reference", "note"):
        df[col] = df[col].fillna("")
    return df


def calibration_table(runs: Sequence[tuple[str, str | Path]]) -> pd.DataFrame:
    """The calibration tables of (setting, run directory) pairs, one after another, sections
    in their order."""
    parts = []
    for setting, path in runs:
        df = read_calibration(path)
        order = {s: i for i, s in enumerate(SECTION_ORDER)}
        df = df.assign(_o=df["section"].map(order).fillna(len(order)))
        df = df.sort_values("_o", kind="stable").drop(columns="_o")
        parts.append(df.assign(setting=setting)[["setting", *CALIBRATION_COLUMNS]])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def curve_data(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """label ("learned, conditional", ...) -> (logsnr, mmse) of every sample of a calibrate run,
    as reporting.figures.mmse_curves draws them; empty when the run has no curves."""
    path = Path(run_dir) / CURVES_FILE
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    if df.empty:
        return {}
    out = {}
    for (cond, model), part in df.groupby(["condition", "model"], sort=True):
        out[f"{model}, {cond}"] = (part["logsnr"].to_numpy(), part["mmse"].to_numpy())
    return out

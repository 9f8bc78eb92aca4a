"""What every calibrate section shares: the model and the oracle fed the same data points, the
rows of calibration.csv and the names of their references."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.experiments.errors import ConfigError
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.reporting.calibration import compare
from infodecomp.reporting.metrics import pearson_r as _pearson

SAME_DRAWS = "exact oracle, same draws"
LOG_RATIO = "log p(x|y) - log p(x)"
EXACT_LOGP = "exact log p(x|y)"
EXACT_MAP = "exact map (posteriors)"
KINDS = ("true", "partial", "contradicting")


def pearson_r(a: Any, b: Any) -> float:
    return _pearson(
        np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64))
    )


def row(
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


def with_x(queries: list[Query], xs: torch.Tensor) -> list[Query]:
    return [Query(x, q.conditions, q.contrasts, q.key) for q, x in zip(queries, xs, strict=True)]

"""`mmse_curves`: denoising error against logsnr for several captions of one image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from infodecomp.api.loading import (
    ImageLike,
    Model,
    as_images,
    as_model,
    check_for_model,
    content_key,
    settings,
)
from infodecomp.estimators.engine import Query, estimate
from infodecomp.estimators.protocol import encode_keyed
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import EstimatorConfig, RunConfig, VisualizeConfig
from infodecomp.experiments.maps import mmse_curve_data
from infodecomp.reporting import figures

UNCONDITIONAL = "'' (unconditional)"


@dataclass
class MMSECurves:
    """Per-sample denoising errors of one image under several captions, at shared draws.

    Attributes:
        curves: label -> (logsnr [S] sorted, ||eps - eps_hat(z | caption)||^2 [S]); the error is
            summed over the model's data dimensions (latent for latent models). Labels are the
            quoted captions and "'' (unconditional)".
        captions: caption of each label, in order ("" for the unconditional).
    """

    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    captions: list[str]

    def frame(self) -> pd.DataFrame:
        """Long format: one row per (caption, sample) with columns caption, logsnr, mse."""
        parts = [
            pd.DataFrame({"caption": caption, "logsnr": x, "mse": y})
            for caption, (x, y) in zip(self.captions, self.curves.values(), strict=True)
        ]
        return pd.concat(parts, ignore_index=True)

    def plot(self, title: str | None = None, *, log_y: bool | None = None) -> Figure:
        """Samples as dots and a binned mean line per caption (colour-blind-safe colours and
        dash patterns), MMSE against logsnr. Returns a matplotlib Figure."""
        return figures.mmse_curves(self.curves, title=title, log_y=log_y)

    def save(self, path: str | Path, title: str | None = None) -> Path:
        """Writes `plot()` as a PNG; returns its path."""
        return figures.save(self.plot(title), path)


def mmse_curves(
    model: Model | Any,
    image: ImageLike,
    captions: str | Sequence[str],
    *,
    unconditional: bool = True,
    n_samples: int = VisualizeConfig().n_curve_samples,
    estimator: EstimatorConfig | None = None,
    run: RunConfig | None = None,
    seed: int | None = None,
    key: str | None = None,
) -> MMSECurves:
    """MMSE curves of an image: its denoising error at each sampled logsnr, for each caption.

    The area between the unconditional curve and a caption's curve is that caption's i^s
    (paper eq. 5); every caption is evaluated at the same (logsnr, eps) draws.

    Args:
        model: a `Model` from `load` / `from_pipeline`, or a bare denoiser.
        image: a PIL image, file path or tensor (see `score`).
        captions: one caption or several.
        unconditional: add the unconditional "" curve.
        n_samples: logsnr samples (the `visualize` command's `n_curve_samples`).
        estimator, run, seed: the command line's `estimator` (logsnr proposal) and `run` configs.
        key: seeds the draws; default: a hash of the image's encoding.

    Returns:
        An `MMSECurves` with `plot()`, `save()` and `frame()`.
    """
    m = as_model(model)
    texts = [captions] if isinstance(captions, str) else list(captions)
    if not texts or not all(isinstance(c, str) for c in texts):
        raise ValueError("captions: one caption string or a list of them")
    texts = list(dict.fromkeys(texts + ([""] if unconditional else [])))
    est, rcfg = settings(estimator, run, seed=seed)
    (img,), _ = as_images(image)
    check_for_model(m, [img])
    x = encode_keyed(m.denoiser, [img], [content_key(img)], rcfg.seed)  # [1, C, h, w]
    ecfg = replace(engine_config(est, rcfg), n_samples=int(n_samples), pixel_maps=False)
    (e,) = estimate(
        m.denoiser, [Query(x[0].cpu(), tuple(texts), key=key or content_key(img))], ecfg
    )
    labels = {k: (UNCONDITIONAL if t == "" else f"'{t}'") for k, t in enumerate(texts)}
    return MMSECurves(mmse_curve_data(e, labels), texts)

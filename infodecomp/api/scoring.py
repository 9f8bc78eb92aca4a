"""`score`: i^o, i^s and the denoising loss of captions for images, as a tidy DataFrame."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd

from infodecomp.api.loading import (
    ImageLike,
    Model,
    as_images,
    as_model,
    check_for_model,
    content_key,
    settings,
)
from infodecomp.estimators.protocol import encode_keyed
from infodecomp.estimators.queries import option_queries
from infodecomp.experiments.commands.aro import estimate_options
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import EstimatorConfig, RunConfig
from infodecomp.scores import SCORES, check_scores

# What `infodecomp aro` prints when i^o trails i^s on ShapesWorld with the exact oracle
# (experiments.commands.aro.SHAPES_IO_NOTE); the API cannot see labels, so it says it for every score
# on that oracle.
IO_CAVEAT = (
    "on the exact ShapesWorld oracle a higher i^o is not a better match: i^o prefers a caption "
    "that contradicts the image there, while i^s and mmse rank captions as expected; rank by "
    "is or mmse (README, 'What ShapesWorld shows')"
)


def io_caveat(denoiser: Any) -> str | None:
    """IO_CAVEAT where it applies (an exact oracle of ShapesWorld), else None."""
    from infodecomp.models.capabilities import ExactLikelihood

    exact = isinstance(denoiser, ExactLikelihood)
    return IO_CAVEAT if exact and getattr(denoiser, "world", None) == "shapes" else None


SCORE_COLUMNS = (
    ("image", "name", "caption") + tuple(c for s in SCORES for c in (s, f"{s}_se")) + ("n_samples",)
)


def _captions_per_image(captions: str | Sequence[str] | Sequence[Sequence[str]], n: int) -> list:
    """A caption or a list of captions for every image, or one list per image."""
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    if not captions:
        raise ValueError("no captions given")
    if all(isinstance(c, str) for c in captions):
        per = [tuple(captions)] * n
    elif all(not isinstance(c, str) and isinstance(c, Sequence) for c in captions):
        if len(captions) != n:
            raise ValueError(
                f"got {len(captions)} caption lists for {n} images; give one per image"
            )
        per = [tuple(c) for c in captions]
    else:
        raise TypeError("captions: a string, a list of strings, or one list of strings per image")
    for opts in per:
        if not opts or not all(isinstance(c, str) for c in opts):
            raise ValueError(f"every image needs one or more caption strings, got {opts!r}")
        if len(set(opts)) != len(opts):
            raise ValueError(f"captions of one image must differ, got {opts!r}")
    return per


def score(
    model: Model | Any,
    images: ImageLike | Sequence[ImageLike],
    captions: str | Sequence[str] | Sequence[Sequence[str]],
    *,
    estimator: EstimatorConfig | None = None,
    run: RunConfig | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    keys: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    adaptive_score: str = "io",
) -> pd.DataFrame:
    """How much each caption tells about each image: i^o, i^s and the denoising loss.

    Every caption of an image and the unconditional "" run at the same (logsnr, eps) draws
    (common random numbers), so differences between captions carry little sampling noise. Images
    go through the engine `run.items_per_step` at a time, in denoiser calls of at most
    `run.batch_size` rows: the same code path as `infodecomp aro` (experiments.commands.aro), so
    `keys=<item ids>` reproduces an `aro` run's values exactly.

    Args:
        model: a `Model` from `load` / `from_pipeline`, or a bare denoiser.
        images: one image or a list: PIL images, file paths, float tensors [C, H, W] (or one
            tensor [N, C, H, W]). Image models (e.g. tiny-sd, sd-2.1-base) take RGB in [-1, 1]
            and resize as `model.resize` says; the ShapesWorld oracle takes its [3, 16, 16]
            data-space tensors.
        captions: one caption, a list of captions (each scored against every image), or one
            list of captions per image.
        estimator: the `estimator` config of the command line (logsnr proposal, n_samples,
            adaptive stopping); default `EstimatorConfig()`, 100 samples as in the paper.
        run: the `run` config (seed, batch_size, items_per_step); device and dtype are the
            model's.
        n_samples, seed: shortcuts for `estimator.n_samples` and `run.seed`.
        keys: one string per image that seeds its draws (e.g. a data set's item ids). Default:
            a hash of the image's encoding, so an image's estimates do not depend on its
            position in `images` or on the batching.
        names: one label per image for the `name` column (default: the file path, else "").
        adaptive_score: with `estimator.adaptive`, the score whose leader decides when an
            image has enough samples.

    Returns:
        One row per (image, caption), columns:
        `image` (position in `images`), `name`, `caption`;
        `io`, `io_se`: orthogonal pointwise information i^o(x; caption) in nats and its
        standard error (paper eq. 6; >= 0 per sample);
        `is`, `is_se`: standard pointwise information i^s(x; caption) = log p(x | caption) -
        log p(x) in nats (eq. 5), estimated as the drop in denoising error from "" to the
        caption;
        `mmse`, `mmse_se`: the denoising loss 1/2 int E||eps - eps_hat(z | caption)||^2 dlogsnr
        under the logsnr proposal, in nats up to a constant shared by all captions of one image
        (lower: better match; -log p(x | caption) up to that constant);
        `n_samples`: logsnr samples used for the image.
        Higher i^o / i^s and lower mmse mean a better match (infodecomp.scores), except i^o on
        the exact ShapesWorld oracle: there the frame's `attrs["caveat"]` holds IO_CAVEAT and
        a UserWarning says it (the note `infodecomp aro` prints).
    """
    m = as_model(model)
    check_scores([adaptive_score], key="adaptive_score")
    est, rcfg = settings(estimator, run, n_samples=n_samples, seed=seed)
    imgs, paths = as_images(images)
    check_for_model(m, imgs)
    per_image = _captions_per_image(captions, len(imgs))
    labels = _labels(len(imgs), paths, keys, names)
    ecfg = engine_config(est, rcfg)
    rows: list[dict] = []
    step = max(1, rcfg.items_per_step)
    for start in range(0, len(imgs), step):
        idx = list(range(start, min(start + step, len(imgs))))
        rows += _score_step(
            m, imgs, idx, per_image, keys, labels, est, ecfg, rcfg.seed, adaptive_score
        )
    df = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    caveat = io_caveat(m.denoiser)
    if caveat is not None:
        df.attrs["caveat"] = caveat
        warnings.warn(f"infodecomp.api.score: {caveat}", UserWarning, stacklevel=2)
    return df


def _labels(
    n: int, paths: list, keys: Sequence[str] | None, names: Sequence[str] | None
) -> list[str]:
    """The `name` column of the n images; keys and names, when given, must be one per image."""
    for what, given in (("keys", keys), ("names", names)):
        if given is not None and len(given) != n:
            raise ValueError(f"got {len(given)} {what} for {n} images")
    return list(names) if names is not None else [p or "" for p in paths]


def _score_step(
    m: Model,
    imgs: list,
    idx: list[int],
    per_image: list,
    keys: Sequence[str] | None,
    labels: list[str],
    est: EstimatorConfig,
    ecfg: Any,
    seed: int,
    adaptive_score: str,
) -> list[dict]:
    """The rows of the images `idx` (one engine step): one per (image, caption)."""
    ks = [str(keys[i]) if keys is not None else content_key(imgs[i]) for i in idx]
    # the encoding is keyed by the pixels (a user key may be shared by several images)
    pix = [content_key(imgs[i]) for i in idx]
    xs = encode_keyed(m.denoiser, [imgs[i] for i in idx], pix, seed)  # [n, C, h, w]
    options = [per_image[i] for i in idx]
    queries = option_queries(xs, options, ks)
    ests, used = estimate_options(
        m.denoiser, queries, [len(o) for o in options], est, ecfg, adaptive_score
    )
    rows: list[dict] = []
    for i, e, n in zip(idx, ests, used, strict=True):
        for j, caption in enumerate(per_image[i]):
            row: dict[str, Any] = {"image": i, "name": labels[i], "caption": caption}
            for name in SCORES:
                row[name], row[f"{name}_se"] = e.score(name, j)
            row["n_samples"] = int(n)
            rows.append(row)
    return rows

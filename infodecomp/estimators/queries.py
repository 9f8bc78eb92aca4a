"""Engine queries built from caption options (one place for `aro`, `calibrate` and the API)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from infodecomp.estimators.engine import Query


def option_queries(
    xs: torch.Tensor,
    options: Sequence[Sequence[str]],
    keys: Sequence[str],
    unconditional: bool = True,
) -> list[Query]:
    """One query per image: its caption options and the unconditional "", contrast j = (option j,
    ""), so i^o / i^s of option j is contrast j and its denoising loss condition j. Shared by
    `aro`, `calibrate` and the Python API (infodecomp.api.score). unconditional=False: the options alone, no
    contrasts (enough for condition scores such as the denoising loss; the draws, keyed by the
    item, and so the values are the same, at options / (options + 1) of the evaluations)."""
    return [
        Query(
            xs[i].cpu(),
            (*opts, "") if unconditional else tuple(opts),
            tuple((j, len(opts)) for j in range(len(opts))) if unconditional else (),
            key=keys[i],
        )
        for i, opts in enumerate(options)
    ]

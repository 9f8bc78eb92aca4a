"""The score table: every per-item score a ranking task can rank caption options by.

One entry per score: its name on the command line and in results.csv (`estimator` column), its
label in tables, which per-sample array of an ItemEstimate it integrates, and the sign that turns
it into "higher is a better match". The engine's estimates, adaptive stopping, the `aro` command
and the tables all read this table; a new score is one entry here (plus, if it needs a new
per-sample array, that array in the engine's reducer).

Pure Python: reporting reads it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Score:
    """One score of a caption option.

    Args:
        name: key on the command line (`estimators=[io,is]`) and in results.csv.
        label: how tables name it.
        samples: the ItemEstimate field with the per-sample integrand ([P or K, S]).
        index: whether option j is row j of the contrasts ("contrast": i(x; option_j | "")) or
            of the conditions ("condition": the option's own denoising error).
        sign: +1 when a larger value means a better match, -1 when a smaller one does.
    """

    name: str
    label: str
    samples: str
    index: Literal["contrast", "condition"]
    sign: int
    description: str = ""


SCORES: dict[str, Score] = {
    s.name: s
    for s in (
        Score("io", "Info. i^o", "io", "contrast", +1, "orthogonal pointwise information (nats)"),
        Score("is", "Info. i^s", "is_", "contrast", +1, "standard pointwise information (nats)"),
        Score(
            "mmse",
            "Denoising loss",
            "mse",
            "condition",
            -1,
            "1/2 int E||eps - eps_hat(z|y)||^2 dlogsnr (nats up to a constant)",
        ),
    )
}
SCORE_NAMES = tuple(SCORES)


def get_score(name: str) -> Score:
    """The Score called `name`; a ValueError naming the known scores otherwise."""
    if name not in SCORES:
        raise ValueError(f"score '{name}' is not one of: {', '.join(SCORES)}")
    return SCORES[name]


def check_scores(names: list[str] | tuple[str, ...], key: str = "estimators") -> None:
    """Raises a one-line ValueError when a configured score name is unknown."""
    unknown = [n for n in names if n not in SCORES]
    if unknown:
        raise ValueError(f"{key}={unknown} unknown; choose from {list(SCORES)}")

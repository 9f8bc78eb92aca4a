"""Reduced precision for the denoiser, judged against float32 on the same draws.

A bfloat16 / float16 denoiser returns float32 predictions and the engine accumulates every error
in float32 (per-sample sums in float64), so the only change is the network's own rounding. That
rounding is independent noise delta in each prediction, and i^o = ||eps_hat(z|y) - eps_hat(z)||^2
can only grow from it on average (E||d + delta_y - delta||^2 = ||d||^2 + E||delta_y - delta||^2):
the tolerance is therefore one-sided-wide, [-2%, +5%] of the float32 value per item and option
(tiny-sd, bfloat16 on CPU: +0.5% to +4%). An answer is checked where float32's margin is clear,
i.e. wider than the tolerance can close (10% of the leading score): there the reduced-precision
ranking must agree with float32's on >= 99% of the items.

The check fails on the errors it guards against: scores 5% too high or too low, of the wrong
sign, or halved (tests/test_bench.py injects each).
"""

from __future__ import annotations

import torch

REL_RANGE = (-0.02, 0.05)  # allowed (reduced - float32) / float32 per item and option
CLEAR_MARGIN = 0.10  # a clear answer: float32's lead >= 10% of its leading score
MIN_AGREEMENT = 0.99  # rankings agreeing with float32 on the clear items


def compare_scores(
    reference: torch.Tensor,
    reduced: torch.Tensor,
    rel_range: tuple[float, float] = REL_RANGE,
    clear_margin: float = CLEAR_MARGIN,
    min_agreement: float = MIN_AGREEMENT,
) -> dict:
    """Reduced-precision scores [N, O] against float32's [N, O] on the same draws (higher wins).

    Returns the relative differences (min, median, max), the number of clear-margin items, the
    ranking agreement on them, the tolerance used and `passed`.
    """
    ref, red = reference.double(), reduced.double()
    rel = (red - ref) / ref.abs()
    top2 = ref.topk(2, dim=1).values  # [N, 2]
    clear = (top2[:, 0] - top2[:, 1]) >= clear_margin * top2[:, 0].abs()
    agree = ref.argmax(1) == red.argmax(1)
    agreement = float(agree[clear].double().mean()) if bool(clear.any()) else float("nan")
    in_range = bool(((rel >= rel_range[0]) & (rel <= rel_range[1])).all())
    return {
        "rel_diff_min": float(rel.min()),
        "rel_diff_median": float(rel.median()),
        "rel_diff_max": float(rel.max()),
        "tolerance": list(rel_range),
        "clear_items": int(clear.sum()),
        "items": int(ref.shape[0]),
        "ranking_agreement_clear": agreement,
        "ranking_agreement_all": float(agree.double().mean()),
        "passed": in_range and agreement >= min_agreement,
    }

"""validate's table: one row per check, with the criterion as it is applied and why.

Statistical rows pass when |z| < Z_MAX (z from the estimate's and the exact value's standard
errors) and, with the relative criterion, when |estimate - exact| / |exact| < REL_MAX.
Deterministic rows pass when the measured value is within a float tolerance, absolute or
relative to a named scale. Every row carries `criterion` (what was applied) and `reason` (why
that tolerance); `run` prints each distinct criterion with its reason under the table.
"""

from __future__ import annotations

import math

import torch

from infodecomp.estimators.samplers import LogsnrSampler

# The paper's proposal: truncated logistic, loc 1, scale 2, clip 3 (range [-5, 7]); stratified
# draws of it keep the paper-sampler rows affordable (the density, hence the bias, is the paper's).
PAPER = LogsnrSampler(mode="stratified")
PAPER_RANGE = PAPER.support
# Wide proposals for the checks against full-range values, chosen so that the truncation bias is
# far below the tolerance. SHAPES_FOCUS covers where ShapesWorld captions carry information
# (logsnr -14 .. 10) at a fifth of the variance of the uniform SHAPES_WIDE.
GAUSS_WIDE = LogsnrSampler(kind="logistic", loc=0.7, scale=2.0, clip=6.0, mode="stratified")
SHAPES_WIDE = LogsnrSampler(kind="uniform", low=-12.0, high=20.0, mode="stratified")
SHAPES_FOCUS = LogsnrSampler(kind="logistic", loc=-2.0, scale=1.5, clip=8.0, mode="stratified")
Z_MAX, REL_MAX = 4.0, 0.03
# A row also gets the relative criterion when its relative standard error is at most REL_MAX / 3:
# then a chance failure needs a 3-sigma deviation and a 5% error is caught at >= 97.7%.
REL_PRECISION = REL_MAX / 3
Z_REASON = f"|z| < {Z_MAX:g}: a correct estimator fails a row by chance with probability 6e-5"
REL_REASON = (
    f"rel < {REL_MAX:.0%} (relative to |exact|), applied where the row's relative se is <= "
    f"{REL_PRECISION:.0%}: a 5% error then fails at >= 97.7% and a correct one needs a 3-sigma "
    "chance deviation"
)


def row(
    check: str,
    quantity: str,
    exact: float,
    est: float,
    se: float,
    *,
    rel: bool | str = False,
    exact_se: float = 0.0,
    sampler: str = "",
    truncation: float = float("nan"),
    tol: float | None = None,
    relative_to: str | None = None,
    reason: str = "",
    note: str = "",
) -> dict:
    """One row of the table.

    Statistical rows (tol None): |z| < Z_MAX, and with `rel` also |estimate - exact| / |exact| <
    REL_MAX; rel="auto" applies the relative criterion when the row is precise enough for it
    (relative se <= REL_PRECISION) and says so otherwise.
    Deterministic rows (`tol`): |estimate - exact| <= tol, absolute unless `relative_to` names
    the scale the estimate was already divided by (the criterion then prints it); `reason`
    says why that tolerance.
    """
    se_all = math.hypot(se, exact_se)
    z = (est - exact) / se_all if se_all > 0 else (0.0 if est == exact else math.inf)
    rel_err = abs(est - exact) / abs(exact) if exact else float("nan")
    rel_se = se_all / abs(exact) if exact else float("nan")
    if rel == "auto":
        rel = rel_se <= REL_PRECISION
        if not rel:
            note = "; ".join(
                n for n in (note, f"z only: rel_se {rel_se:.1%} > {REL_PRECISION:.0%}") if n
            )
    if tol is not None:  # deterministic checks: float tolerance, no z-test
        if not reason:
            raise ValueError(f"row {check!r}: a tolerance needs its reason")
        passed = abs(est - exact) <= tol
        z = float("nan")
        if relative_to:  # the estimate is already a ratio to that scale, exact 0
            criterion = f"|estimate - exact| <= {tol:.3g}, relative to {relative_to}"
        else:
            criterion = f"|estimate - exact| <= {tol:.3g}, absolute"
    else:
        passed = abs(z) < Z_MAX and (not rel or rel_err < REL_MAX)
        criterion = f"|z| < {Z_MAX:g}" + (f", rel < {REL_MAX:.0%} of |exact|" if rel else "")
        reason = reason or (Z_REASON + ("; " + REL_REASON if rel else ""))
    return {
        "check": check,
        "quantity": quantity,
        "sampler": sampler,
        "exact": exact,
        "exact_se": exact_se,
        "estimate": est,
        "stderr": se,
        "z": z,
        "rel_error": rel_err,
        "rel_se": rel_se,
        "criterion": criterion,
        "reason": reason,
        "truncation_bias": truncation,
        "passed": bool(passed),
        "note": note,
    }


def mean_se(values: list[float] | torch.Tensor) -> tuple[float, float]:
    t = torch.as_tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std() / math.sqrt(len(t)))


def label(sampler: LogsnrSampler) -> str:
    if sampler.kind == "uniform":
        return f"uniform [{sampler.low:g}, {sampler.high:g}], {sampler.mode}"
    lo, hi = sampler.support
    return (
        f"logistic loc {sampler.loc:g} scale {sampler.scale:g} clip {sampler.clip:g} "
        f"[{lo:g}, {hi:g}], {sampler.mode}"
    )

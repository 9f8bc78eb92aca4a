"""What the commands that compare with an exact oracle share (`validate`, `calibrate`): the
support IoU of two maps and a one-thread section for the oracles' small tensors."""

from __future__ import annotations

from contextlib import contextmanager

import torch

SUPPORT_FRACTION = 0.05  # a map's support: pixels above this fraction of its maximum


def _support(m: torch.Tensor) -> torch.Tensor:
    return m > SUPPORT_FRACTION * m.max()


def support_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two maps' supports (pixels above SUPPORT_FRACTION of each map's maximum); NaN
    when both supports are empty."""
    sa, sb = _support(a), _support(b)
    union = int((sa | sb).sum())
    return float((sa & sb).sum()) / union if union else float("nan")


@contextmanager
def one_thread():
    """The oracles' tensors are small: one intra-op thread is as fast on an idle machine and
    avoids OpenMP threads spin-waiting for each other on a shared one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

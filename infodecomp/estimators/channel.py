"""The variance-preserving Gaussian channel z = sqrt(sigmoid(logsnr)) x + sqrt(sigmoid(-logsnr)) eps."""

from __future__ import annotations

import torch


def alpha_sigma(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales (a, s) with a^2 + s^2 = 1 and a^2 / s^2 = exp(logsnr)."""
    return torch.sigmoid(logsnr).sqrt(), torch.sigmoid(-logsnr).sqrt()


def noisy_channel(x: torch.Tensor, logsnr: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z for x [B, ...], logsnr [B], eps [B, ...] (paper section 2, docs/architecture.md convention)."""
    a, s = alpha_sigma(logsnr)
    shape = (-1,) + (1,) * (x.dim() - 1)
    return a.view(shape) * x + s.view(shape) * eps

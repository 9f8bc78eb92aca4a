"""The narrow interface every model (Stable Diffusion, exact oracles, test pipelines) implements."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """A batched noise predictor eps_hat(z | condition) on the variance-preserving channel.

    Conditions are hashable keys (prompts for text models; the empty prompt "" is the
    unconditional). `encode_conditions` turns keys into rows of a tensor that the engine gathers
    and hands back to `eps_hat`; implementations cache the encoding of each distinct key.
    """

    device: torch.device

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> points x in the space the channel noises. Returns [N, C, H, W]."""
        ...

    def encode_conditions(self, conditions: Sequence[Hashable]) -> torch.Tensor:
        """Condition keys -> encodings, one row per key. Returns [K, ...]."""
        ...

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predicted noise for z [B, C, H, W] at logsnr [B] under encodings cond [B, ...]."""
        ...

"""Pixel-space diffusion on the latent-diffusion base: the data space is the image itself.

A pixel-space family (the learned ShapesWorld model; cascaded pixel models such as DeepFloyd IF
have the same first stage) uses `IdentityAutoencoder` where a latent family has its VAE, so
every part of `LatentDiffusionDenoiser` (prompt cache, timesteps, attention capture, maps, DAAM,
the probability-flow ODE) runs unchanged with a scale factor of 1.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from types import SimpleNamespace
from typing import Any

import torch

from infodecomp.models.families.preprocess import to_model_input


class _PointMass:
    """The identity encoder's posterior: the image itself (mean), with zero spread."""

    def __init__(self, x: torch.Tensor) -> None:
        self.mean, self.std = x, torch.zeros_like(x)


class IdentityAutoencoder(torch.nn.Module):
    """The autoencoder of a pixel-space model: encode and decode are the identity.

    It has the attributes of a diffusers autoencoder the base reads (config.block_out_channels
    gives a scale factor of 1; scaling_factor 1, no shift) and no parameters.
    """

    def __init__(self, channels: int = 3, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            block_out_channels=(channels,), scaling_factor=1.0, shift_factor=None
        )
        self._dtype = dtype

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def to(self, *args: Any, **kwargs: Any) -> IdentityAutoencoder:
        dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
        if dtype is not None:
            self._dtype = dtype
        return self

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(latent_dist=_PointMass(x))

    def decode(self, z: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        return (z,)


class PixelSpaceMixin:
    """Image handling of a pixel-space family (put it before the latent base in the bases).

    Tensors of the model's own data space ([3, S, S] at its image size) are its data points as
    they are, values outside [-1, 1] included (a synthetic world's noisy pixels); other tensors
    and PIL images go through the usual preprocessing (resize, [-1, 1]).
    """

    image_size: int
    resize: str
    resample: str
    image_encodes: int

    @classmethod
    def _autoencoder(cls, dtype: torch.dtype) -> IdentityAutoencoder:
        """No `vae` part: the identity stands in for it."""
        return IdentityAutoencoder(dtype=dtype)

    def _own(self, image: Any) -> bool:
        """Whether `image` is a tensor of the model's own data space."""
        size = (3, self.image_size, self.image_size)
        return isinstance(image, torch.Tensor) and tuple(image.shape) == size

    def preview(self, image: Any) -> torch.Tensor:
        """The image as the model sees it, [3, H, W] in [0, 1] (own-space pixels clipped for display)."""
        x = (
            image.detach().float().cpu()
            if self._own(image)
            else to_model_input(image, self.image_size, self.resize, self.resample)
        )
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[Any], keys: Sequence[Hashable] | None = None
    ) -> torch.Tensor:
        """Images -> data points [N, 3, S, S] float32 on CPU (pixels in the model's space)."""
        if keys is not None and len(keys) != len(images):
            raise ValueError(
                f"got {len(keys)} keys for {len(images)} images; give one key per image or none"
            )
        rows = [
            img.detach().float().cpu()
            if self._own(img)
            else to_model_input(img, self.image_size, self.resize, self.resample)
            for img in images
        ]
        self.image_encodes += len(rows)
        return torch.stack(rows)  # [N, 3, S, S]

"""The image side of a latent text-to-image model (models.families.latent): images to scaled VAE
latents and back, the image as the model sees it, masks and maps at the latent grid.

`LatentImageModel` is a base of `LatentDiffusionDenoiser`, which sets what it reads: `vae`,
`vae_dtype`, `vae_batch`, `device`, `image_size`, `latent_size`, `resize`, `resample`,
`mask_resample`, `latent`, `seed`, `_latent_cache`, `image_encodes` and `_visiting` (moves an
offloaded VAE to the device for a call). Pixel-space families reach it through the identity
autoencoder (models.families.pixel).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from infodecomp.models.families.preprocess import mask_transform, to_model_input, upsample_map


def _key_gen(seed: int, key: Hashable) -> torch.Generator:
    from infodecomp.estimators.engine import item_generator

    return item_generator(seed, ("vae-sample", key))


def _pixel_key(px: torch.Tensor) -> str:
    """A key for an image given without one: a digest of its preprocessed pixels [3, S, S]."""
    import hashlib

    data = px.detach().float().cpu().contiguous().numpy()
    return "pixels:" + hashlib.blake2b(data.tobytes(), digest_size=8).hexdigest()


class LatentImageModel:
    """ImageModel capability over a VAE: encode_images, decode_latents, preview, mask_transform,
    upsample_map (see the module doc for the attributes the adapter provides)."""

    @torch.no_grad()
    def encode_images(
        self,
        images: Sequence[Any],
        keys: Sequence[Hashable] | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Images -> scaled VAE latents [N, C, h, w] float32 (on CPU), cached per key if keys are given.

        Preprocessing: `resize` ("squash": to image_size x image_size, no crop, as published;
        "center-crop": central square first) with the `resample` filter (bicubic; the
        published localisation: bilinear), pixels mapped to [-1, 1], VAE
        posterior mean or (latent="sample") a posterior sample whose noise is drawn from
        (seed, key) alone: `seed` (default: the adapter's) and the image's key (without keys:
        a digest of its preprocessed pixels), never its position in the call, so a draw is the
        same whatever the batch or shard layout. Shifted and scaled by the VAE's shift_factor
        and scaling_factor. Cached per (seed, key) for samples, per key for the mean.
        """
        if keys is not None and len(keys) != len(images):
            raise ValueError(
                f"got {len(keys)} keys for {len(images)} images; give one key per image or none"
            )
        seed = self.seed if seed is None else int(seed)

        def cache_key(i: int) -> Hashable:
            return (seed, keys[i]) if self.latent == "sample" else keys[i]  # type: ignore[index]

        todo = [
            i for i in range(len(images)) if keys is None or cache_key(i) not in self._latent_cache
        ]
        fresh: dict[int, torch.Tensor] = {}
        for start in range(0, len(todo), self.vae_batch):
            idx = todo[start : start + self.vae_batch]
            px = torch.stack(
                [
                    to_model_input(images[i], self.image_size, self.resize, self.resample)
                    for i in idx
                ]
            )  # [b, 3, S, S]
            with self._visiting(self.vae):
                dist = self.vae.encode(px.to(self.device, self.vae_dtype)).latent_dist
            lat = dist.mean.float()  # [b, C, h, w]
            if self.latent == "sample":
                gens = [
                    _key_gen(seed, keys[i] if keys else _pixel_key(px[j]))
                    for j, i in enumerate(idx)
                ]
                noise = torch.stack(
                    [torch.randn(lat.shape[1:], generator=g) for g in gens]
                )  # [b, C, h, w]
                lat = lat + dist.std.float() * noise.to(lat.device)
            lat = (lat - self._vae_shift) * self.vae.config.scaling_factor
            self.image_encodes += len(idx)
            for j, i in enumerate(idx):
                fresh[i] = lat[j].cpu()
                if keys is not None:
                    self._latent_cache[cache_key(i)] = fresh[i]
        rows = [
            fresh[i] if i in fresh else self._latent_cache[cache_key(i)] for i in range(len(images))
        ]
        return torch.stack(rows)  # [N, C, h, w]

    @property
    def _vae_shift(self) -> float:
        return getattr(self.vae.config, "shift_factor", None) or 0.0

    # --- ImageModel: images, masks, maps -----------------------------------------------------

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, C, h, w] -> images [N, 3, H, W] in [0, 1], float32 on CPU."""
        lat = (
            latents.to(self.device, self.vae_dtype) / self.vae.config.scaling_factor
            + self._vae_shift
        )  # [N, C, h, w]
        with self._visiting(self.vae):
            out = self.vae.decode(lat, return_dict=False)[0]  # [N, 3, H, W] in [-1, 1]
        return ((out.float() + 1) / 2).clamp(0, 1).cpu()  # [N, 3, H, W]

    def preview(self, image: Any) -> torch.Tensor:
        """The image as the model sees it (resize rule applied): [3, H, W] in [0, 1]."""
        px = to_model_input(image, self.image_size, self.resize, self.resample)
        return ((px + 1) / 2).clamp(0, 1)

    def mask_transform(
        self, mask: torch.Tensor, size: int | tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Resizes a ground-truth mask [H, W] the way images are resized; see `mask_transform`."""
        return mask_transform(mask, size or self.latent_size, self.resize, self.mask_resample)

    @staticmethod
    def upsample_map(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Bilinear upsampling of a map [h, w] to `size`; returned unchanged when already that size."""
        return upsample_map(heat, size)

"""Image and mask preprocessing of the Stable Diffusion adapter: the paper's squash, or a centre crop.

Masks go through exactly the geometry their image went through, so IoU compares like with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("squash", "center-crop")


def _crop_box(h: int, w: int, resize: str) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region kept before resizing."""
    if resize == "squash":
        return 0, 0, h, w
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def to_model_input(image: Any, size: int, resize: str = "squash") -> torch.Tensor:
    """A PIL image or a [3, H, W] float tensor in [-1, 1] -> [3, size, size] float32 in [-1, 1].

    Bicubic resize (PIL's for images, antialiased torch bicubic for tensors), after a central
    square crop when resize == "center-crop".
    """
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
            raise ValueError(
                f"image tensors must be float [3, H, W] in [-1, 1], got {image.dtype} {tuple(image.shape)}"
            )
        lo, hi = float(image.min()), float(image.max())
        if lo < -1.001 or hi > 1.001:
            raise ValueError(
                f"image tensor values span [{lo:.3g}, {hi:.3g}]; expected [-1, 1] (map [0, 1] with 2x - 1)"
            )
        top, left, hh, ww = _crop_box(image.shape[1], image.shape[2], resize)
        x = image[:, top : top + hh, left : left + ww].float()  # [3, h', w']
        if tuple(x.shape[1:]) != (size, size):
            x = F.interpolate(
                x[None], (size, size), mode="bicubic", align_corners=False, antialias=True
            )[0]
        return x.clamp(-1, 1)  # [3, S, S]
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(
            f"images must be PIL images or [3, H, W] tensors in [-1, 1], got {type(image).__name__}"
        )
    im = image.convert("RGB")
    top, left, hh, ww = _crop_box(im.height, im.width, resize)
    if (hh, ww) != (im.height, im.width):
        im = im.crop((left, top, left + ww, top + hh))
    if im.size != (size, size):
        im = im.resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())  # [S, S, 3] in [0, 255]
    return arr.permute(2, 0, 1) / 127.5 - 1.0  # [3, S, S]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def mask_transform(
    mask: torch.Tensor, size: int | tuple[int, int], resize: str = "squash"
) -> torch.Tensor:
    """Resizes a mask [H, W] exactly as its image is resized (same crop), to bool [h, w].

    Area averaging then threshold 0.5: a target pixel is in the mask when at least half of the
    source pixels it covers are (when enlarging, area averaging picks the covering pixel).
    """
    if mask.dim() != 2:
        raise ValueError(f"masks must be [H, W], got shape {tuple(mask.shape)}")
    top, left, hh, ww = _crop_box(mask.shape[0], mask.shape[1], resize)
    m = mask[top : top + hh, left : left + ww].float()  # [h', w']
    return F.interpolate(m[None, None], _pair(size), mode="area")[0, 0] >= 0.5  # [h, w]


def upsample_map(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a map [h, w] to `size`, float32; unchanged when already that size."""
    target = _pair(size)
    if tuple(heat.shape[-2:]) == target:
        return heat.float()
    return F.interpolate(heat.float()[None, None], target, mode="bilinear", align_corners=False)[
        0, 0
    ]

"""Image and mask preprocessing of the Stable Diffusion adapter: the paper's squash, or a centre crop.

Masks go through exactly the geometry their image went through, so IoU compares like with like.
The filters are options (`model.resample`, `model.mask_resample`): bicubic images and
area-averaged masks by default; the published localisation code resized images with PIL's
bilinear filter and masks with PIL's nearest (`resample=bilinear mask_resample=nearest`, set by
configs/experiment/paper-table3.yaml).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from infodecomp.models.presets import MASK_RESAMPLE_MODES, RESAMPLE_MODES

RESIZE_MODES = ("squash", "center-crop")


def _crop_box(h: int, w: int, resize: str) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the region kept before resizing."""
    if resize == "squash":
        return 0, 0, h, w
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def to_model_input(
    image: Any, size: int, resize: str = "squash", resample: str = "bicubic"
) -> torch.Tensor:
    """A PIL image or a [3, H, W] float tensor in [-1, 1] -> [3, size, size] float32 in [-1, 1].

    Resize with `resample` ("bicubic" or "bilinear": PIL's filter for images, torch's
    antialiased one for tensors), after a central square crop when resize == "center-crop".
    """
    if resample not in RESAMPLE_MODES:
        raise ValueError(f"model.resample {resample!r} is not one of: {', '.join(RESAMPLE_MODES)}")
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
                x[None], (size, size), mode=resample, align_corners=False, antialias=True
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
        im = im.resize(
            (size, size), {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[resample]
        )
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy())  # [S, S, 3] in [0, 255]
    return arr.permute(2, 0, 1) / 127.5 - 1.0  # [3, S, S]


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def mask_transform(
    mask: torch.Tensor, size: int | tuple[int, int], resize: str = "squash", mode: str = "area"
) -> torch.Tensor:
    """Resizes a mask [H, W] exactly as its image is resized (same crop), to bool [h, w].

    mode "area": area averaging then threshold 0.5, a target pixel is in the mask when at least
    half of the source pixels it covers are (when enlarging, area averaging picks the covering
    pixel). mode "nearest": PIL's nearest-neighbour resize (the pixel under each target pixel's
    centre), as the published localisation code resized its masks.
    """
    if mask.dim() != 2:
        raise ValueError(f"masks must be [H, W], got shape {tuple(mask.shape)}")
    if mode not in MASK_RESAMPLE_MODES:
        raise ValueError(
            f"model.mask_resample {mode!r} is not one of: {', '.join(MASK_RESAMPLE_MODES)}"
        )
    top, left, hh, ww = _crop_box(mask.shape[0], mask.shape[1], resize)
    m = mask[top : top + hh, left : left + ww]  # [h', w']
    h, w = _pair(size)
    if mode == "nearest":
        from PIL import Image

        img = Image.fromarray(m.bool().cpu().numpy().astype(np.uint8) * 255)
        return torch.from_numpy(np.asarray(img.resize((w, h), Image.NEAREST)) > 0)  # [h, w]
    return F.interpolate(m.float()[None, None], (h, w), mode="area")[0, 0] >= 0.5  # [h, w]


def upsample_map(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a map [h, w] to `size`, float32; unchanged when already that size."""
    target = _pair(size)
    if tuple(heat.shape[-2:]) == target:
        return heat.float()
    return F.interpolate(heat.float()[None, None], target, mode="bilinear", align_corners=False)[
        0, 0
    ]

"""Reading real images: files on disk or rows of a Hugging Face dataset, cropped to a bbox."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from infodecomp.data.records import ImageLoadError, ImageRef

BBox = tuple[float, float, float, float]
log = logging.getLogger("infodecomp")


@dataclass(frozen=True, eq=False)
class HFImage:
    """An image held in a column of a Hugging Face dataset, read lazily by row index.

    Keeping the table and an index (not the decoded PIL image) keeps memory flat for the
    tens of thousands of ARO items; the row is decoded when `Dataset.load_image` asks for it.
    """

    table: Any  # datasets.Dataset
    index: int
    column: str = "image"
    bbox: BBox | None = None


CROP_MODES = ("pad", "clamp")


def crop_to_bbox(
    image: Image.Image, bbox: Sequence[float] | None, name: str, mode: str = "pad"
) -> Image.Image:
    """Crop to an (x, y, w, h) box in pixels.

    A box that lies wholly outside the image is refused in both modes (its crop would be a
    black image, scored as if it were the object). A box partly outside is cropped by `mode`,
    and a log line names the image, the box and what was done.

    Args:
        image: the full image.
        bbox: (x, y, w, h) or None for the whole image.
        name: how to name the image in an error message.
        mode: "pad" crops exactly as ARO's own code does, `image.crop((x, y, x + w, y + h))`:
            PIL rounds the corners and fills the part of the box outside the image with black,
            so the crop always has the box's size. "clamp" first clips the box to the image.

    Returns:
        The cropped image (the image itself when bbox is None).

    Raises:
        ImageLoadError: the box is empty, or lies wholly outside the image.
        ValueError: mode is not "pad" or "clamp".
    """
    if mode not in CROP_MODES:
        raise ValueError(f"data.crop={mode} is not one of {', '.join(CROP_MODES)}")
    if bbox is None:
        return image
    x, y, w, h = (float(v) for v in bbox)
    width, height = image.size
    box = (round(x), round(y), round(x + w), round(y + h))  # PIL's own rounding of the corners
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ImageLoadError(f"bbox {tuple(bbox)} (x, y, w, h) of image {name} is empty")
    clipped = (
        min(max(box[0], 0), width),
        min(max(box[1], 0), height),
        min(max(box[2], 0), width),
        min(max(box[3], 0), height),
    )
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        raise ImageLoadError(
            f"bbox {tuple(bbox)} (x, y, w, h) lies wholly outside image {name} of size "
            f"{width}x{height}; the record's box is wrong (its crop would be all black)"
        )
    if clipped != box:
        done = (
            f"clipped to {clipped} (data.crop=clamp)"
            if mode == "clamp"
            else "the part outside is black, as ARO crops (data.crop=clamp clips it)"
        )
        log.info(
            "bbox %s (x, y, w, h) reaches past image %s of size %dx%d: %s",
            tuple(bbox),
            name,
            width,
            height,
            done,
        )
    if mode == "pad":
        return image.crop((x, y, x + w, y + h))
    return image.crop(clipped)


# Integer modes holding more than 8 bits per value, and the largest value of each.
_WIDE_INT_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535}


def to_rgb(image: Image.Image, name: str) -> Image.Image:
    """An RGB image from any PIL mode, with the mode's own value range scaled to 0..255.

    PIL's own conversion clips 16-bit (``I;16*``, and ``I`` as PNG and TIFF store 16-bit
    grey) and float (``F``) values to 0..255; here a 16-bit value v becomes round(v / 257)
    and a float image in [0, 1] becomes round(255 v). A 32-bit integer or float image whose
    values lie outside those ranges has no known scaling and is refused.

    Raises:
        ImageLoadError: the values have no known scaling, or the mode has no RGB conversion.
    """
    mode = image.mode
    if mode in _WIDE_INT_MODES or mode == "F":
        import numpy as np

        arr = np.asarray(image).astype(np.float64)  # [H, W]
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        top = _WIDE_INT_MODES.get(mode, 1.0)
        if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= top):
            raise ImageLoadError(
                f"image {name}: mode {mode} with values in [{lo:g}, {hi:g}], outside 0..{top:g}; "
                "its scaling is unknown, convert it to 8-bit RGB"
            )
        grey = np.rint(arr * (255.0 / top)).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))  # [H, W, 3]
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ImageLoadError(f"image {name}: mode {mode} has no RGB conversion ({err})") from err


def _bomb(name: str, err: Exception) -> ImageLoadError:
    return ImageLoadError(
        f"image {name} is larger than PIL's decompression-bomb limit "
        f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}): {err}"
    )


def load_image(ref: ImageRef, crop: str = "pad") -> Image.Image:
    """Read an image file as RGB, cropped to `ref.bbox` (x, y, w, h); see crop_to_bbox.

    Args:
        ref: the file path and optional bounding box.
        crop: "pad" (ARO's crop) or "clamp", for boxes that leave the image.

    Returns:
        An RGB PIL image (16-bit and float images scaled, see `to_rgb`).

    Raises:
        ImageLoadError: the file is missing, unreadable, corrupt or truncated (``transient``:
            the file may be restored), over PIL's decompression-bomb limit, of an unknown value
            range, or the box is empty.
    """
    try:
        with Image.open(ref.path) as img:
            img.load()  # forces a full decode, so truncation surfaces here
            rgb = to_rgb(img, ref.path)
    except FileNotFoundError as err:
        raise ImageLoadError(f"image file not found: {ref.path}", transient=True) from err
    except Image.DecompressionBombError as err:
        raise _bomb(ref.path, err) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageLoadError(f"cannot read image {ref.path}: {err}", transient=True) from err
    return crop_to_bbox(rgb, ref.bbox, ref.path, crop)


def load_hf_image(ref: HFImage, crop: str = "pad") -> Image.Image:
    """Decode one row's image from a Hugging Face dataset as RGB, cropped to `ref.bbox`.

    Raises:
        ImageLoadError: the cell is empty or cannot be decoded, or the image is over PIL's
            decompression-bomb limit.
    """
    name = f"row {ref.index} of column {ref.column!r}"
    try:
        img = ref.table[ref.index][ref.column]
        if img is None:
            raise ImageLoadError(f"no image in {name}")
        rgb = to_rgb(img, name)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise _bomb(name, err) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, AttributeError) as err:
        raise ImageLoadError(f"cannot decode image in {name}: {err}") from err
    return crop_to_bbox(rgb, ref.bbox, name, crop)


def load_item_image(item: Any, crop: str = "pad") -> Any:
    """Image loader for items of real data sets: `item.image` is an ImageRef or an HFImage."""
    ref = item.image
    if isinstance(ref, ImageRef):
        return load_image(ref, crop)
    if isinstance(ref, HFImage):
        return load_hf_image(ref, crop)
    return ref

"""Clear errors for missing benchmark files, shared by every real-data loader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infodecomp.data.records import ImageLoadError

ARO_SOURCE = (
    "the ARO benchmark (https://github.com/mertyg/vision-language-models-are-bows): "
    "`git clone` it and let its dataset_zoo download helper fetch the files "
    "(VG_Relation / VG_Attribution with download=True), or read the frozen Hugging Face copy "
    "with data.source=hf"
)
COCO_ORDER_SOURCE = (
    "coco_karpathy_test.json from the BLIP/ARO bucket "
    "(https://storage.googleapis.com/sfr-vision-language-research/datasets/coco_karpathy_test.json, "
    "the file ARO's COCO_Order downloads) and the COCO 2014 val images (val2014.zip from "
    "https://cocodataset.org), or the frozen Hugging Face copy with data.source=hf"
)
FLICKR_ORDER_SOURCE = (
    "flickr30k_test.json from the BLIP/ARO bucket "
    "(https://storage.googleapis.com/sfr-vision-language-research/datasets/flickr30k_test.json) "
    "and the Flickr30k images (flickr30k-images/, by request form from the Flickr30k site), "
    "or the frozen Hugging Face copy with data.source=hf"
)
COCO2017_SOURCE = (
    "the COCO site (https://cocodataset.org/#download): images from "
    "http://images.cocodataset.org/zips/val2017.zip, annotations (instances_val2017.json, "
    "captions_val2017.json) from "
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
)
MANIFEST_SOURCE = (
    "the paper's public repository (COCO-IT.csv, COCO100-IT.csv, COCO-WL.csv), or build one with "
    "`infodecomp build-coco-manifest` from the COCO val2017 annotations"
)


class DataError(ValueError):
    """A data file (annotation JSON, manifest) cannot be read as a whole; the message names the
    file and, where it applies, the line or record. Such an error stops a run before any item."""


class MissingDataError(FileNotFoundError):
    """A data file or folder is missing; the message names the path and where to get it."""


class MaskLoadError(ImageLoadError):
    """A ground-truth mask could not be built (unknown image or category, no instances).

    It subclasses ImageLoadError so that a run skips and logs the item exactly as it does for an
    unreadable image, instead of scoring an empty mask.
    """


def require_path(
    path: str | Path | None,
    what: str,
    expected: Sequence[str],
    source: str,
    *,
    setting: str | None = None,
) -> Path:
    """Return `path` as a Path, or raise one FileNotFoundError that says how to get it.

    Args:
        path: the file or folder a loader needs; None when the user gave no path at all.
        what: what the path should be, e.g. "ARO VG-Relation folder".
        expected: the files (or sub-folders) expected at or inside that path.
        source: where those files come from (download site, clone command, ...).
        setting: the config key that sets the path (e.g. "data.root"), quoted in the message.

    Returns:
        The existing path.

    Raises:
        MissingDataError: the path is None or does not exist.
    """
    how = f" (set {setting}=<path>)" if setting else ""
    listing = ", ".join(expected) if expected else "-"
    if path is None:
        raise MissingDataError(
            f"{what}: no path given{how}. Expected there: {listing}. They come from {source}."
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise MissingDataError(
            f"{what} not found: {p}{how}. Expected there: {listing}. They come from {source}."
        )
    return p


def read_text(path: str | Path, what: str, encoding: str = "utf-8") -> str:
    """The text of a data file; an encoding error is a DataError naming the file and the byte.

    Raises:
        DataError: the file is not valid `encoding` (e.g. a Latin-1 export of a UTF-8 file).
    """
    try:
        return Path(path).read_text(encoding=encoding)
    except UnicodeDecodeError as err:
        raise DataError(encoding_message(path, what, err, encoding)) from None


def encoding_message(path: str | Path, what: str, err: UnicodeDecodeError, encoding: str) -> str:
    """`err` from decoding the whole file: names the file, the byte and its line."""
    line = err.object[: err.start].count(b"\n") + 1
    name = encoding.upper().removesuffix("-SIG")
    return (
        f"{what} {path} is not valid {name}: byte {err.object[err.start]:#04x} on line {line} "
        f"(offset {err.start}, {err.reason}); save it as {name}"
    )


def read_json(
    path: str | Path, what: str, *, object_pairs_hook: Any = None, encoding: str = "utf-8"
) -> Any:
    """A JSON data file parsed; encoding and syntax errors are one DataError naming the file,
    the line and the column.

    Raises:
        DataError: the file is not valid `encoding` or not valid JSON.
    """
    text = read_text(path, what, encoding)
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{what} {path} is not valid JSON: {err.msg} at line {err.lineno} column "
            f"{err.colno}; fix or download the file again"
        ) from None

"""Clear errors for missing benchmark files, shared by every real-data loader."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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

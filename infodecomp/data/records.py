"""Records shared by every data set: frozen dataclasses the experiments consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageRef:
    """An image on disk, optionally cropped to a bounding box (x, y, w, h) in pixels."""

    path: str
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True, eq=False)
class RankingItem:
    """One ARO-style item: an image and caption options, exactly one of them correct.

    `image` is an ImageRef (real data) or an in-memory tensor [C, H, W] (ShapesWorld).
    `group` is what the macro accuracy averages over (relation name, attribute pair, ...).
    `subset` names the ranking task (infodecomp.tasks) whose rule scores the item.
    `draw_key` seeds the item's (logsnr, eps) draws (default: the item id); items that are
    compared with each other (the two images of a Winoground example) share one, so their
    scores use common random numbers.
    """

    item_id: str
    image: Any
    options: tuple[str, ...]
    label: int
    group: str
    subset: str
    draw_key: str | None = None


@dataclass(frozen=True, eq=False)
class WordItem:
    """One (image, caption, word) pair for localisation and interventions.

    `context` is the caption with the word deleted, `context_blank` with the word replaced by "_".
    `mask` is how the ground truth is obtained: a tensor [H, W] (ShapesWorld) or a loader-specific
    reference resolved by the data set's `load_mask`. `swap_word` / `swap_caption` are the
    intervention partner (COCO100-IT), absent elsewhere.
    """

    item_id: str
    image: Any
    caption: str
    word: str
    context: str
    context_blank: str
    word_type: str = "noun"
    mask: Any = None
    swap_word: str | None = None
    swap_caption: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Skipped:
    """An item left out of a run, with the reason; written to the run's skipped.csv."""

    item_id: str
    reason: str


class ImageLoadError(RuntimeError):
    """An item's image (or mask) could not be read or decoded; the item is skipped and logged,
    the run goes on.

    `transient` marks causes that may go away without a change to the data set's records (a
    missing, unreadable or truncated file): a resumed run retries those items
    (`run.retry_skipped`).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass
class Dataset:
    """A loaded benchmark: its items plus how to fetch each item's image and mask.

    `load_image(item)` returns a PIL image (real data) or a tensor [C, H, W] (ShapesWorld) and
    raises ImageLoadError for unreadable files. `load_mask(item)` returns a bool tensor [H, W] at
    the image's original resolution (after any bbox crop). Items that could not be built at all
    (e.g. a manifest word missing from its caption) are listed in `skipped`.
    """

    name: str
    items: list
    skipped: list[Skipped] = field(default_factory=list)
    image_loader: Any = None  # callable(item) -> image
    mask_loader: Any = None  # callable(item) -> bool tensor [H, W]
    info: dict = field(default_factory=dict)

    def load_image(self, item: Any) -> Any:
        if self.image_loader is None:
            return item.image
        return self.image_loader(item)

    def load_mask(self, item: Any) -> Any:
        if self.mask_loader is None:
            return item.mask
        return self.mask_loader(item)

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
    """

    item_id: str
    image: Any
    options: tuple[str, ...]
    label: int
    group: str
    subset: str


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

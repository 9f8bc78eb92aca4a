"""Data-set settings: one dataclass, used as the `data` config schema and by every loader."""

from __future__ import annotations

from dataclasses import dataclass

WL_MASKS = ("none", "all-objects-published")


@dataclass
class DataSpec:
    """Where a data set lives and how to read it.

    Args:
        name: registry name (aro-vg-relation, coco-it, shapes-relation, ...).
        root: folder of the benchmark (ARO: JSON files + images/; COCO: the image folder root).
        manifest: COCO-style manifest CSV (COCO-IT / COCO100-IT / COCO-WL).
        annotations: COCO instances JSON (masks).
        images: image folder when it is not under root (COCO: e.g. .../val2017).
        source: "files" (original JSON + images) or "hf" (frozen Hugging Face copy).
        hf_name: Hugging Face dataset id or local saved-dataset folder when source == "hf".
        revision: Hugging Face dataset revision (commit hash, tag or branch) when hf_name is a hub
            id; None takes the revision pinned for the default ids (data.aro.HF_REVISIONS), the
            latest for any other id.
        crop: how VG boxes that leave the image are cropped: "pad" (ARO's own crop, the part
            outside the image is black) or "clamp" (the box is clipped to the image).
        size: number of items for generated sets (ShapesWorld).
        seed: seed for generated sets and for caption perturbations.
        noise: ShapesWorld pixel noise of generated images (None: the world's default, worlds.shapes.SIGMA0);
            pair it with the same `model.sigma0` so the oracle stays exact for the data.
        control: None or "shuffled-images" (data.controls): score every
            ranking item's captions on another item's image (a fixed derangement from `seed`).
        wl_mask: COCO manifests, the ground truth of a word that is no COCO category (the
            COCO-WL words): "none" (no mask, the pair is not scored; the default) or
            "all-objects-published" (the mask the published code scored against: every
            annotated object of the image, because pycocotools' getAnnIds(catIds=[]) returns all
            annotations; those rows carry the reference "all objects (published COCO-WL)").
            COCO-IT and COCO100-IT rows are categories: their mask is the same either way.
        swaps: the word-swap edit of COCO100-IT (data.swaps.SWAPS): "distinct" (infodecomp's
            partners, the item's word only, articles fixed) or "published" (the published
            intervention script's pairs, every listed word of the caption swapped).
        classes: PascalVOC segmentation (data=voc-seg, data.segmentation): "single" (the
            images with one object class, as ConceptAttention's single-class split), "multi"
            (every val image, scored as ConceptAttention's multi-class evaluation: argmax over
            the image's classes and the background concepts) or "per-class" (every val image,
            one binary item per object class present).
    """

    name: str = "shapes-relation"
    root: str | None = None
    manifest: str | None = None
    annotations: str | None = None
    images: str | None = None
    source: str = "files"
    hf_name: str | None = None
    revision: str | None = None
    crop: str = "pad"
    size: int = 64
    seed: int = 0
    noise: float | None = None
    control: str | None = None
    wl_mask: str = "none"
    swaps: str = "distinct"
    classes: str = "single"

    def __post_init__(self) -> None:
        if self.wl_mask not in WL_MASKS:
            raise ValueError(f"data.wl_mask={self.wl_mask} is not one of {', '.join(WL_MASKS)}")
        if self.crop not in ("pad", "clamp"):
            raise ValueError(f"data.crop={self.crop} is not one of pad, clamp")
        if self.swaps not in ("distinct", "published"):
            raise ValueError(f"data.swaps={self.swaps} is not one of distinct, published")
        if self.classes not in ("single", "multi", "per-class"):
            raise ValueError(f"data.classes={self.classes} is not one of single, multi, per-class")

"""ImageNet-Segmentation and PascalVOC 2012 segmentation, in their published formats: the
zero-shot segmentation benchmarks of ConceptAttention (Helbling et al., ICML 2025).

Neither has captions: an item's caption is its class word alone (context ""), so its CMI
contrast is its MI (the engine evaluates the repeated condition once) and `localize` scores the
MI map; `extra["prompt"]` is the prompt the published evaluation gives the attention methods,
"a <word>". `extra["segmentation"]` names the protocol (tasks.segmentation) the maps are scored
with; `load_target(item)` gives the object and void pixels at the image's resolution;
`extra["concepts"]` (PascalVOC) lists the image's other class words, the concepts a
ConceptAttention map of the item competes with (experiments.maps.concept_list).

**ImageNet-Segmentation** (`data=imagenet-seg`): `gtsegs_ijcv.mat` (Guillaumin et al., 4,276
images), a MATLAB v7.3 file, i.e. HDF5 (read with h5py). Under the group `value`, `img`, `gt`
and `id` are [N, 1] arrays of object references, one per image: `img[i]` refers to a uint8
array [3, W, H] (MATLAB's column-major order: transposed to [H, W, 3]); `gt[i]` refers to a
[1, 1] array of references (a MATLAB cell) whose one element refers to the mask [W, H]
(transposed to [H, W]; non-zero = object); `id[i]` refers to the image id as UTF-16 code units
[L, 1], a WordNet noun id and an image number (`n02084071_1234`). The class word: the published
evaluation takes the synset's first WordNet lemma and maps it through its class-name table
(`imagenet_class_map.json`, `{"categories": {lemma: word}}`); give that file as
`data.annotations` (its lemmas need nltk's WordNet: the `pos` extra and `python -m
nltk.downloader wordnet`), or a JSON `{wnid: word}` (no nltk). Without a map the lemma itself is
the word. An image whose synset the map lacks is skipped with the reason.

**PascalVOC 2012** (`data=voc-seg`): `VOC2012/` of the trainval archive (`data.root` may be it,
or a folder holding `VOCdevkit/VOC2012` or `VOC2012`): `ImageSets/Segmentation/val.txt` (1,449
ids), `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` (palette PNGs whose indices are the
labels: 0 background, 1-20 the classes of tasks.segmentation.VOC_WORDS, 255 void). The classes
present in an image are those of its label image resized to the protocol's grid with PIL's
nearest filter (void left out), as the published evaluation finds them (224 x 224; 64 x 64 for
the multi-class script). `data.classes=single` (default): the images with exactly one object
class (the paper's 930), one item each, every object pixel positive; `data.classes=multi`: the
published multi-class evaluation, every val image one item (protocol voc-multi): its word lists
the present classes ("cat,dog"), its caption and prompt are the published "a cat,a dog", and
`extra["classes"]` holds their labels (`load_labels` gives the label image);
`data.classes=per-class`: every val image, one item per object class present, that class
positive (protocol voc-per-class).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from infodecomp.data.errors import DataError, MaskLoadError, require_path
from infodecomp.data.images import load_item_image
from infodecomp.data.records import Dataset, ImageLoadError, ImageRef, Skipped, WordItem
from infodecomp.data.spec import DataSpec
from infodecomp.tasks.segmentation import EVAL_SIZE, MULTI_EVAL_SIZE, VOC_WORDS, VOID

IMAGENET_SEG_FILE = "gtsegs_ijcv.mat"
IMAGENET_SEG_SOURCE = (
    "the ImageNet-Segmentation release of Guillaumin et al. "
    "(http://calvin-vision.net/bigstuff/proj-imagenet/data/gtsegs_ijcv.mat, the file the "
    "Transformer-Explainability and ConceptAttention evaluations read)"
)
CLASS_MAP_SOURCE = (
    "the ConceptAttention repository (experiments/imagenet_segmentation/data/"
    "imagenet_class_map.json), or write a JSON {wnid: word}"
)
VOC_SOURCE = (
    "the PascalVOC 2012 trainval archive (VOCtrainval_11-May-2012.tar from "
    "host.robots.ox.ac.uk/pascal/VOC/voc2012/), unpacked"
)
VOC_EXPECTED = [
    "ImageSets/Segmentation/val.txt",
    "JPEGImages/<id>.jpg",
    "SegmentationClass/<id>.png",
]
CLASSES = ("single", "multi", "per-class")
PROTOCOL_OF = {"single": "voc-single", "multi": "voc-multi", "per-class": "voc-per-class"}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:  # a dependency of the project; missing only in a partial install
        raise DataError(
            f"data=imagenet-seg reads {IMAGENET_SEG_FILE} (MATLAB v7.3 = HDF5) with h5py, "
            "which is not installed: pip install 'h5py>=3.8,<4'"
        ) from None
    return h5py


@lru_cache(maxsize=4)
def _mat(path: str) -> Any:
    """The open file (one handle per path and process; read-only)."""
    return _h5py().File(path, "r")


def _text(f: Any, ref: Any) -> str:
    return "".join(map(chr, np.asarray(f[ref]).ravel().tolist()))


def wordnet_lemma(wnid: str) -> str:
    """The first lemma of a WordNet noun id (`n02084071` -> "dog"), as the published evaluation
    names a synset; needs nltk and its WordNet corpus."""
    try:
        from nltk.corpus import wordnet as wn

        synset = wn.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
    except (ImportError, LookupError) as err:
        raise DataError(
            f"data=imagenet-seg names synsets by their WordNet lemma, which needs nltk's "
            f"WordNet ({type(err).__name__}): pip install 'infodecomp[pos]' and run python -m "
            "nltk.downloader wordnet, or give data.annotations=<JSON {wnid: word}>"
        ) from None
    return synset.lemmas()[0].name().replace("_", " ")


def _class_words(path: str | None) -> tuple[dict[str, str], bool]:
    """(map, keyed by lemma) from data.annotations: the published `{"categories": {lemma:
    word}}` or a plain `{wnid: word}`; no path: an empty lemma-keyed map (the lemma is the word)."""
    if path is None:
        return {}, True
    file = require_path(
        path, "ImageNet-Segmentation class-name map", ["<map>.json"], CLASS_MAP_SOURCE,
        setting="data.annotations",
    )  # fmt: skip
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"class-name map {file} is not a JSON object: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("categories"), dict):
        return {str(k): str(v) for k, v in data["categories"].items()}, True
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}, False
    raise DataError(
        f'class-name map {file}: expected {{"categories": {{lemma: word}}}} or {{wnid: word}}'
    )


def _imagenet_path(spec: DataSpec) -> Path:
    root = Path(spec.root).expanduser() if spec.root else None
    path = root / IMAGENET_SEG_FILE if root is not None and root.is_dir() else root
    return require_path(
        path, "ImageNet-Segmentation file", [IMAGENET_SEG_FILE], IMAGENET_SEG_SOURCE,
        setting="data.root",
    )  # fmt: skip


def _refuse_unused(spec: DataSpec, *used: str) -> None:
    """A one-line error for a path setting the data set does not read."""
    for name in ("manifest", "annotations", "images"):
        if name not in used and getattr(spec, name):
            raise DataError(
                f"data.{name} is not read by data={spec.name} (it reads data.root"
                f"{', data.annotations' if used else ''}): leave data.{name} unset"
            )


def load_imagenet_seg(spec: DataSpec) -> Dataset:
    """ImageNet-Segmentation as WordItems, one per image (item id = its index, 4 digits)."""
    _refuse_unused(spec, "annotations")
    path = str(_imagenet_path(spec))
    words, by_lemma = _class_words(spec.annotations)
    f = _mat(path)
    try:
        ids = f["value/id"]
    except KeyError:
        raise DataError(f"{path} has no value/id: not the gtsegs_ijcv.mat layout") from None
    items, skipped = [], []
    for i in range(ids.shape[0]):
        code = _text(f, ids[i, 0]).strip()
        wnid = code.split("_")[0]
        key = wordnet_lemma(wnid) if by_lemma else wnid
        word = words.get(key, key if not words else None)
        if not word:
            skipped.append(Skipped(f"{i:04d}", f"synset {wnid} ({key}) is not in the class map"))
            continue
        items.append(_item(f"{i:04d}", word, "imagenet-seg", index=i, synset=code, source=path))
    info = {"source": path, "segmentation": "imagenet-seg", "images": int(ids.shape[0])}
    return Dataset("imagenet-seg", items, skipped, _imagenet_image, _imagenet_mask, info)


def _item(item_id: str, word: str, protocol: str, image: Any = None, **extra: Any) -> WordItem:
    return WordItem(
        item_id=item_id,
        image=image,
        caption=word,
        word=word,
        context="",
        context_blank="_",
        extra={"prompt": f"a {word}", "captioned": False, "segmentation": protocol, **extra},
    )


def _imagenet_image(item: WordItem) -> Image.Image:
    f = _mat(_source_of(item))
    try:
        pixels = np.asarray(f[f["value/img"][item.extra["index"], 0]]).transpose(2, 1, 0)
    except (KeyError, ValueError, OSError) as err:
        raise ImageLoadError(f"image {item.item_id} of {f.filename}: {err}") from None
    return Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).convert("RGB")


def _imagenet_mask(item: WordItem) -> torch.Tensor:
    f = _mat(_source_of(item))
    try:
        cell = f[f["value/gt"][item.extra["index"], 0]]
        mask = np.asarray(f[cell[0, 0]]).transpose(1, 0)
    except (KeyError, ValueError, OSError) as err:
        raise MaskLoadError(f"mask {item.item_id} of {f.filename}: {err}") from None
    return torch.from_numpy(np.ascontiguousarray(mask != 0))


def _source_of(item: WordItem) -> str:
    return item.extra["source"]


def voc_root(spec: DataSpec) -> Path:
    """The VOC2012 folder under data.root (itself, VOCdevkit/VOC2012 or VOC2012)."""
    root = require_path(spec.root, "PascalVOC 2012 folder", VOC_EXPECTED, VOC_SOURCE,
                        setting="data.root")  # fmt: skip
    for cand in (root, root / "VOCdevkit" / "VOC2012", root / "VOC2012"):
        if (cand / "ImageSets" / "Segmentation" / "val.txt").is_file():
            return cand
    return require_path(root / "ImageSets/Segmentation/val.txt", "PascalVOC 2012 val list",
                        VOC_EXPECTED, VOC_SOURCE, setting="data.root")  # fmt: skip


def present_classes(labels: np.ndarray, size: int = EVAL_SIZE) -> list[int]:
    """The object classes (1-20) of a label image as the published evaluation finds them: on
    the labels resized to size x size with PIL's nearest filter, void left out."""
    small = np.asarray(Image.fromarray(labels).resize((size, size), Image.NEAREST))
    return [int(v) for v in np.unique(small) if v != VOID and v != 0]


def _voc_labels(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"mode {im.mode}, expected a palette (P) PNG")
            return np.asarray(im)
    except (OSError, ValueError) as err:
        raise MaskLoadError(f"label image {path}: {err}", transient=True) from None


def load_voc_seg(spec: DataSpec) -> Dataset:
    """PascalVOC 2012 val as WordItems: `data.classes=single` one per single-class image,
    `multi` one per image (the published multi-class evaluation), `per-class` one per (image,
    object class)."""
    _refuse_unused(spec)
    root = voc_root(spec)
    ids = [s.strip() for s in (root / "ImageSets/Segmentation/val.txt").read_text().split()]
    protocol = PROTOCOL_OF[spec.classes]
    size = MULTI_EVAL_SIZE if spec.classes == "multi" else EVAL_SIZE
    items, skipped, excluded = [], [], 0
    for sid in ids:
        mask_path = root / "SegmentationClass" / f"{sid}.png"
        try:
            labels = _voc_labels(mask_path)
        except MaskLoadError as err:
            skipped.append(Skipped(sid, str(err)))
            continue
        classes = present_classes(labels, size)
        if any(c >= len(VOC_WORDS) for c in classes):
            skipped.append(Skipped(sid, f"{mask_path}: labels {classes} beyond 20 and not 255"))
            continue
        if spec.classes == "single" and len(classes) != 1:
            excluded += 1  # not in the single-class subset (several classes, or none)
            continue
        image = ImageRef(str(root / "JPEGImages" / f"{sid}.jpg"))
        if spec.classes == "multi":
            items.append(_multi_item(sid, classes, image, str(mask_path)))
            continue
        for c in classes:
            item_id = sid if spec.classes == "single" else f"{sid}/{VOC_WORDS[c]}"
            one = None if spec.classes == "single" else c  # single: every object pixel
            others = [VOC_WORDS[o] for o in classes if o != c]  # ConceptAttention's concepts
            items.append(_item(item_id, VOC_WORDS[c], protocol, image, mask_path=str(mask_path),
                               class_index=one, concepts=others))  # fmt: skip
    info = {"source": str(root), "segmentation": protocol, "images": len(ids)}
    info["not_in_subset"] = excluded
    return Dataset("voc-seg", items, skipped, load_item_image, _voc_mask, info)


def _multi_item(sid: str, classes: list[int], image: ImageRef, mask_path: str) -> WordItem:
    """One image of the published multi-class evaluation: word "cat,dog" (the present classes;
    "" for none), caption and prompt "a cat,a dog" as the published script prompts."""
    words = [VOC_WORDS[c] for c in classes]
    caption = ",".join(f"a {w}" for w in words)
    return WordItem(
        item_id=sid, image=image, caption=caption, word=",".join(words), context="",
        context_blank="_",
        extra={"prompt": caption, "captioned": False, "segmentation": "voc-multi",
               "mask_path": mask_path, "classes": list(classes), "concepts": words},
    )  # fmt: skip


def load_labels(item: WordItem) -> np.ndarray:
    """A PascalVOC item's label image uint8 [H, W] (0 background, 1-20 classes, 255 void)."""
    return _voc_labels(Path(item.extra["mask_path"]))


def load_target(item: WordItem) -> tuple[np.ndarray, np.ndarray | None]:
    """(object bool [H, W], void bool [H, W] or None) of a segmentation item at the image's
    resolution: what reporting.segmentation.eval_target resizes."""
    if "mask_path" not in item.extra:
        return _imagenet_mask(item).numpy(), None
    labels = _voc_labels(Path(item.extra["mask_path"]))
    void = labels == VOID
    k = item.extra.get("class_index")
    obj = (labels == k) if k is not None else ((labels >= 1) & ~void)
    return obj, void


def _voc_mask(item: WordItem) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(load_target(item)[0]))

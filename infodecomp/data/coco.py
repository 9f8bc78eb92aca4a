"""COCO-IT, COCO100-IT and COCO-WL: manifest CSVs over COCO val2017, with instance masks.

Manifest format (as published): header `Image ID,Label,correct_obj+context,context,correct_obj`,
then `context_` (COCO100-IT, COCO-WL) and, for COCO-WL, a 7th column with an empty header that
holds the word type (verb, num, adj, adv, perp, pronoun, conj). The loader is lenient but
explicit about the published artefacts:
- whitespace in every text field is collapsed to single spaces and trimmed (the files hold
  double spaces, trailing spaces and a trailing newline inside some quoted captions); CLIP's
  tokenizer does the same, so prompts are unchanged. Rows touched are counted in
  `Dataset.info["whitespace_normalized"]`;
- `context` is kept as published, including the published deletion artefacts (a word deleted
  everywhere it occurs, also inside longer words); `context_blank` is the `context_` column or,
  when absent, rebuilt by the rule that reproduces the published `context`;
- a row whose word is not a whole word of its caption, whose caption, word or label is empty,
  whose field count differs from the header's, or whose image file is missing, goes to
  `Dataset.skipped` with the reason and the manifest line.

The file itself is read strictly: a header of another layout than the four in MANIFEST_LAYOUTS
is refused (a column is never reinterpreted), and a CSV quoting error (an unbalanced quote would
otherwise swallow every later row) is refused naming the line where the record starts.

Masks: `Dataset.load_mask(item)` is the union of all instances (crowd ones included) of the
row's category in the image, a bool tensor [H, W] at the image's original size, built with
pycocotools from polygons or RLE alike. COCO-WL words are verbs, numbers, adjectives, ...: no
COCO category marks their pixels, so their mask is None (the pair is counted, not scored).
`data.wl_mask=all-objects-published` scores them as the published code did instead: it asked
pycocotools for the annotations of the categories named like the Label, and for a word that is
no category that list of categories is empty, which pycocotools reads as "no filter": the mask is
every annotated object of the image. Those rows carry the reference PUBLISHED_WL_REFERENCE.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infodecomp.data.errors import (
    COCO2017_SOURCE,
    MANIFEST_SOURCE,
    DataError,
    MaskLoadError,
    read_json,
    read_text,
    require_path,
)
from infodecomp.data.images import load_item_image
from infodecomp.data.records import Dataset, ImageRef, Skipped, WordItem
from infodecomp.data.spec import WL_MASKS, DataSpec
from infodecomp.data.swaps import swap_edit
from infodecomp.data.text import normalize_space, whole_word
from infodecomp.tasks.references import PUBLISHED_WL_REFERENCE

BASE_COLUMNS = ("Image ID", "Label", "correct_obj+context", "context", "correct_obj")
MANIFEST_KINDS = ("coco-it", "coco100-it", "coco-wl")
DEFAULT_MANIFESTS = {
    "coco-it": "COCO-IT.csv",
    "coco100-it": "COCO100-IT.csv",
    "coco-wl": "COCO-WL.csv",
}
DEFAULT_ANNOTATIONS = "annotations/instances_val2017.json"
# The ground truth of COCO-WL words under data.wl_mask=all-objects-published (see the module doc)
PUBLISHED_WL_RULE = WL_MASKS[1]


def load_coco_manifest(spec: DataSpec, kind: str) -> Dataset:
    """Load a COCO-IT / COCO100-IT / COCO-WL manifest into WordItems.

    Paths: `spec.manifest` (default `spec.root`/<COCO-IT.csv|COCO100-IT.csv|COCO-WL.csv>);
    images `spec.images`, else `spec.root`/val2017 when it exists, else `spec.root`, holding
    `{image_id:012d}.jpg`; annotations `spec.annotations`, else
    `spec.root`/annotations/instances_val2017.json (read on the first mask request).

    Args:
        spec: data settings.
        kind: "coco-it", "coco100-it" or "coco-wl".

    Returns:
        The data set; items carry mask = (image_id, category) (None for COCO-WL non-nouns) and,
        for COCO100-IT, swap_word / swap_caption by `spec.swaps` (swap_edit).
    """
    if kind not in MANIFEST_KINDS:
        raise ValueError(f"unknown COCO manifest kind {kind!r}; expected one of {MANIFEST_KINDS}")
    manifest_name = DEFAULT_MANIFESTS[kind]
    default = Path(spec.root) / manifest_name if spec.root else None
    manifest = require_path(
        spec.manifest or default,
        f"{kind} manifest",
        [manifest_name],
        MANIFEST_SOURCE,
        setting="data.manifest",
    )
    images_dir = require_path(
        _images_dir(spec),
        "COCO val2017 image folder",
        ["000000397133.jpg ... ({id:012d}.jpg)"],
        COCO2017_SOURCE,
        setting="data.images",
    )
    annotations: Path | None = None
    if spec.annotations:
        annotations = require_path(
            spec.annotations,
            "COCO instances annotation file",
            ["instances_val2017.json"],
            COCO2017_SOURCE,
            setting="data.annotations",
        )
    elif spec.root:
        annotations = Path(spec.root) / DEFAULT_ANNOTATIONS

    header, rows = _read_manifest(manifest)
    items: list[WordItem] = []
    skipped: list[Skipped] = []
    counts = {"whitespace_normalized": 0, "context_blank_rebuilt": 0, "without_swap": 0}
    for r, (line, row) in enumerate(rows):
        item, reason = _row_to_item(
            row, r, header, kind, images_dir, counts, spec.wl_mask, swaps=spec.swaps
        )
        if item is None:
            label = normalize_space(row[1]) if len(row) > 1 else "?"
            where = f"manifest {manifest.name} line {line}"
            skipped.append(
                Skipped(f"{(row or ['?'])[0].strip()}-{_slug(label)}-{r}", f"{where}: {reason}")
            )
        else:
            items.append(item)
    return Dataset(
        name=kind,
        items=items,
        skipped=skipped,
        image_loader=load_item_image,
        mask_loader=CocoMasks(annotations),
        info={
            "manifest": str(manifest),
            "images": str(images_dir),
            "annotations": str(annotations) if annotations else None,
            **counts,
        },
    )


def _images_dir(spec: DataSpec) -> Path | None:
    if spec.images:
        return Path(spec.images)
    if spec.root:
        root = Path(spec.root)
        return root / "val2017" if (root / "val2017").is_dir() else root
    return None


# The fields each COCO annotation file's records need (instances: masks and the manifest
# builder; captions: the builder). A record without one is a DataError naming the file.
INSTANCE_FIELDS = {
    "images": ("id",),
    "annotations": ("image_id", "category_id"),
    "categories": ("id", "name"),
}
CAPTION_FIELDS = {"images": ("id",), "annotations": ("image_id", "caption")}


def check_instances(
    data: Any, path: str | Path, what: str, needs: dict[str, tuple[str, ...]] = INSTANCE_FIELDS
) -> dict:
    """`data` (a parsed COCO annotation file) if every record has the fields `needs` lists.

    Raises:
        DataError: one line naming the file, the list, the record and the missing field.
    """
    if not isinstance(data, dict):
        raise DataError(
            f"{what} {path} should hold a JSON object with {list(needs)}, found "
            f"{type(data).__name__}"
        )
    for section, fields in needs.items():
        records = data.get(section)
        if not isinstance(records, list):
            raise DataError(
                f"{what} {path} has no {section!r} list (keys: {sorted(data)}); is it a COCO "
                f"{'captions' if 'caption' in needs.get('annotations', ()) else 'instances'} file?"
            )
        for i, rec in enumerate(records):
            missing = [f for f in fields if not isinstance(rec, dict) or f not in rec]
            if missing:
                ident = f" (id {rec['id']})" if isinstance(rec, dict) and "id" in rec else ""
                raise DataError(
                    f"{what} {path}: {section} record {i}{ident} has no {missing[0]!r} field; "
                    f"each needs {list(fields)}"
                )
    return data


# The published layouts (COCO-IT; COCO100-IT; COCO-WL with the word type under an empty header;
# and the builder's COCO-WL without `context_`). Any other header is refused, never reinterpreted.
MANIFEST_LAYOUTS = (
    BASE_COLUMNS,
    (*BASE_COLUMNS, "context_"),
    (*BASE_COLUMNS, "context_", ""),
    (*BASE_COLUMNS, ""),
)
# A quoted field may span lines (published captions end in a newline inside the quotes; the
# longest published record spans 5 lines); a record spanning more is an unbalanced quote.
MAX_RECORD_LINES = 12


def _read_manifest(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (first line number, fields) of every non-blank record, strictly parsed.

    Raises:
        DataError: a CSV quoting error (naming the line where the record starts), a record
            spanning more than MAX_RECORD_LINES lines, or a header of an unknown layout.
    """
    records: list[tuple[int, list[str]]] = []
    with io.StringIO(read_text(path, "manifest", "utf-8-sig"), newline="") as f:
        reader = csv.reader(f, strict=True)
        start = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise DataError(
                    f"manifest {path}: CSV quoting error in the record starting at line {start} "
                    f"({err}); fix the quotes on that line"
                ) from None

            if reader.line_num - start + 1 > MAX_RECORD_LINES:
                raise DataError(
                    f"manifest {path}: the record starting at line {start} runs over "
                    f"{reader.line_num - start + 1} lines (an unbalanced quote?); fix the quotes "
                    "on that line"
                )
            records.append((start, row))
            start = reader.line_num + 1
    if not records:
        raise DataError(f"manifest {path} is empty; expected header {list(BASE_COLUMNS)}")
    header = [h.strip() for h in records[0][1]]
    if tuple(header) not in MANIFEST_LAYOUTS:
        known = "; ".join(",".join(layout) for layout in MANIFEST_LAYOUTS)
        raise DataError(
            f"manifest {path}: expected columns {list(BASE_COLUMNS)} [+ context_] [+ word type "
            f"under an empty header], found {records[0][1]}; the known layouts are: {known}"
        )
    return header, [(n, r) for n, r in records[1:] if any(c.strip() for c in r)]


def _row_to_item(
    row: list[str],
    r: int,
    header: list[str],
    kind: str,
    images_dir: Path,
    counts: dict,
    wl_mask: str = "none",
    *,
    swaps: str = "distinct",
) -> tuple[WordItem | None, str]:
    if len(row) != len(header):
        return None, f"{len(row)} fields, the header has {len(header)}; the row is not read"
    raw_id, raw_label, raw_caption, raw_context, raw_word = row[:5]
    try:
        image_id = int(raw_id.strip())
    except ValueError:
        return None, f"Image ID {raw_id!r} is not an integer"
    label = normalize_space(raw_label)
    item_id = f"{image_id}-{_slug(label)}-{r}"
    caption, word = normalize_space(raw_caption), normalize_space(raw_word)
    if not caption:
        return None, "empty caption (correct_obj+context)"
    if not word:
        return None, "empty word (correct_obj)"
    if not label:
        return None, "empty Label"
    if not whole_word(word, re.IGNORECASE).search(caption):
        return None, f"word {word!r} is not a whole word of the caption {caption!r}"
    path = images_dir / f"{image_id:012d}.jpg"
    if not path.is_file():
        return None, f"image file missing: {path}"
    raw_blank = row[header.index("context_")] if "context_" in header else ""
    extra: dict[str, Any] = {"image_id": image_id, "label": label, "row": r}
    if raw_blank.strip():
        blank = normalize_space(raw_blank)
    else:
        blank, rule = _rebuild_blank(raw_caption, raw_context, raw_word.strip())
        extra["context_blank_rule"] = rule
        counts["context_blank_rebuilt"] += 1
    type_col = header.index("") if "" in header else None  # the word type's column
    word_type = normalize_space(row[type_col]) if type_col is not None else ""
    word_type = word_type or "noun"
    context = normalize_space(raw_context)
    if any(
        raw != normalize_space(raw)
        for raw in (raw_label, raw_caption, raw_context, raw_word, raw_blank or blank)
    ):
        counts["whitespace_normalized"] += 1
        extra["raw"] = {
            "label": raw_label,
            "caption": raw_caption,
            "context": raw_context,
            "word": raw_word,
        }
    mask: tuple | None = (image_id, label) if word_type == "noun" else None
    if mask is None and wl_mask == PUBLISHED_WL_RULE:
        mask = (image_id, label, PUBLISHED_WL_RULE)
        extra["mask_reference"] = PUBLISHED_WL_REFERENCE
    swap_word = swap_text = None
    if kind == "coco100-it":
        swap_word, swap_text = swap_edit(caption, word, swaps)
        if swap_word is None:
            counts["without_swap"] += 1
    item = WordItem(
        item_id=item_id,
        image=ImageRef(str(path)),
        caption=caption,
        word=word,
        context=context,
        context_blank=blank,
        word_type=word_type,
        mask=mask,
        swap_word=swap_word,
        swap_caption=swap_text,
        extra=extra,
    )
    return item, ""


def _rebuild_blank(caption: str, context: str, word: str) -> tuple[str, str]:
    """context_ from the caption, by the rule that produced the published context."""
    if normalize_space(caption.replace(word, "")) == normalize_space(context):
        return normalize_space(caption.replace(word, "_")), "replace-all"
    return normalize_space(whole_word(word, re.IGNORECASE).sub("_", caption, count=1)), "whole-word"


def _slug(label: str) -> str:
    return label.replace(" ", "_")


class CocoMasks:
    """Mask loader: union of a category's instance masks in an image, from instances JSON.

    The annotation file (about 450 MB for val2017) is read once, on the first request.
    """

    def __init__(self, annotations: str | Path | None) -> None:
        self.annotations = annotations
        self._coco: Any = None
        self._cats: dict[str, int] = {}

    def _load(self) -> Any:
        if self._coco is None:
            path = require_path(
                self.annotations,
                "COCO instances annotation file (needed for masks)",
                ["instances_val2017.json"],
                COCO2017_SOURCE,
                setting="data.annotations",
            )
            from pycocotools.coco import COCO

            what = "COCO instances annotation file"
            coco = COCO()  # filled from our own read, so that a bad file is named (DataError)
            coco.dataset = check_instances(read_json(path, what), path, what)
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                coco.createIndex()
            self._coco = coco
            self._cats = {c["name"]: c["id"] for c in self._coco.loadCats(self._coco.getCatIds())}
        return self._coco

    def __call__(self, item: Any) -> torch.Tensor | None:
        if item.mask is None:
            return None
        image_id, category, *rule = item.mask
        if rule == [PUBLISHED_WL_RULE]:
            return self.published_mask(int(image_id), str(category))
        return self.mask(int(image_id), str(category))

    def published_mask(self, image_id: int, label: str) -> torch.Tensor:
        """The published code's mask of a manifest row, by pycocotools' own lookups: the union of
        the image's annotations of the categories named `label`, or of all its annotations when
        no category has that name (getAnnIds with an empty category list does not filter).

        Raises:
            MaskLoadError: unknown image, or an image without annotations.
        """
        coco = self._load()
        cat_ids = coco.getCatIds(catNms=[label])
        return self._union(image_id, coco.getAnnIds(imgIds=[image_id], catIds=cat_ids), label)

    def mask(self, image_id: int, category: str) -> torch.Tensor:
        """Bool tensor [H, W]: union of all instances of `category` in image `image_id`.

        Raises:
            MaskLoadError: unknown image or category, or no instance of it in the image.
        """
        coco = self._load()
        if image_id not in coco.imgs:
            raise MaskLoadError(f"image {image_id} is not in {self.annotations}")
        if category not in self._cats:
            raise MaskLoadError(
                f"{category!r} is not a COCO category of {self.annotations} "
                f"(known: {sorted(self._cats)[:5]}...)"
            )
        ann_ids = coco.getAnnIds(imgIds=[image_id], catIds=[self._cats[category]], iscrowd=None)
        return self._union(image_id, ann_ids, category)

    def _union(self, image_id: int, ann_ids: list, category: str) -> torch.Tensor:
        """Bool tensor [H, W]: the union of annotations `ann_ids` of image `image_id`."""
        coco = self._load()
        if image_id not in coco.imgs:
            raise MaskLoadError(f"image {image_id} is not in {self.annotations}")
        if not ann_ids:
            raise MaskLoadError(f"image {image_id} has no instance of {category!r}")
        info = coco.imgs[image_id]
        try:
            shape = (int(info["height"]), int(info["width"]))
        except (KeyError, TypeError, ValueError) as err:
            raise MaskLoadError(
                f"image {image_id} of {self.annotations} has no usable height/width ({err!r})"
            ) from err
        union = np.zeros(shape, dtype=bool)  # [H, W]
        with warnings.catch_warnings():  # pycocotools' Cython decode warns under numpy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            for ann in coco.loadAnns(ann_ids):
                try:
                    mask = coco.annToMask(ann).astype(bool)
                except Exception as err:  # pycocotools raises anything on a malformed record
                    raise MaskLoadError(
                        f"annotation {ann.get('id')} ({category!r} in image {image_id}) of "
                        f"{self.annotations}: unreadable segmentation "
                        f"{str(ann.get('segmentation'))[:60]!r} ({type(err).__name__}: {err})"
                    ) from err
                if mask.shape != shape:
                    raise MaskLoadError(
                        f"annotation {ann.get('id')} ({category!r} in image {image_id}): mask "
                        f"{mask.shape} does not match the image's {shape}"
                    )
                union |= mask
        return torch.from_numpy(union)

"""ARO benchmark loaders: VG-Relation, VG-Attribution, COCO-Order, Flickr30k-Order.

Two sources per subset. `spec.source == "files"` reads the benchmark's own files (as the ARO
code lays them out); `spec.source == "hf"` reads a frozen Hugging Face copy: by hub id, at the
revision pinned in HF_REVISIONS (or `spec.revision`), or from a local folder, either a snapshot
of the hub repository's parquet files (what `huggingface-cli download` writes) or a folder
written with `save_to_disk`. Each data set's `info` records where it came from.

Conventions kept from ARO: VG options are [false_caption, true_caption] with label 1, Order
options are [true, 4 perturbations] with label 0. With the original tie rule (argmax takes the
first maximal index) a tie counts as wrong on VG, where the false caption comes first, and as
right on the Order tasks, where the true caption does. Item ids are stable (position in the
source file), so a resumed run skips exactly what finished.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from infodecomp.data.errors import (
    ARO_SOURCE,
    COCO_ORDER_SOURCE,
    FLICKR_ORDER_SOURCE,
    DataError,
    read_json,
    require_path,
)
from infodecomp.data.images import HFImage, load_item_image
from infodecomp.data.perturb import Tagger, clean_caption, nltk_tagger, order_options
from infodecomp.data.records import Dataset, ImageRef, RankingItem, Skipped
from infodecomp.data.spec import DataSpec

VG_RELATION_FILE = "visual_genome_relation.json"
VG_ATTRIBUTION_FILE = "visual_genome_attribution.json"
COCO_ORDER_FILES = ("coco_karpathy_test.json",)
# ARO's Flickr30k_Order reads BLIP's flickr30k_test.json; the other name is accepted too.
FLICKR_ORDER_FILES = ("flickr30k_test.json", "flickr30k_test_karpathy.json")

HF_DEFAULTS = {
    "vg-relation": "gowitheflow/ARO-Visual-Relation",
    "vg-attribution": "gowitheflow/ARO-Visual-Attribution",
    "coco-order": "gowitheflow/ARO-COCO-order",
    "flickr-order": "gowitheflow/ARO-Flickr-Order",
}
# The revision each default hub id is pinned to: the commit of its "Upload dataset" (the head of
# main when pinned; the MTEB benchmark pins the same commits). data.revision overrides it.
HF_REVISIONS = {
    "vg-relation": "3867ad4f46a1ac2e63be034d1fc77dd8c2ef7209",
    "vg-attribution": "18f7e01358d91df599d723f00e16a18640e19398",
    "coco-order": "853ec8757226585a38a80886c51fe0f3f268787c",
    "flickr-order": "1f9485f69c87947812378a1aedf86410c86a0aa8",
}
# The hub copies name the image column "image" (VG) or "images" (COCO/Flickr-Order); both are read.
_HF_IMAGE_COLUMNS = ("image", "images")
_HF_ORDER_COLUMNS = (
    "correct_caption",
    "hard_text_1",
    "hard_text_2",
    "hard_text_3",
    "hard_text_4",
)
_ID_PREFIX = {
    "vg-relation": "vgr",
    "vg-attribution": "vga",
    "coco-order": "coco-order",
    "flickr-order": "flickr-order",
}


def load_vg_relation(spec: DataSpec) -> Dataset:
    """VG-Relation: 23,937 items, options [false, true], group = relation name.

    Files: `spec.root`/visual_genome_relation.json and `spec.root`/images/ (or `spec.images`).
    """
    if spec.source == "hf":
        return _load_vg_hf(spec, "vg-relation")
    return _load_vg_files(spec, "vg-relation", VG_RELATION_FILE)


def load_vg_attribution(spec: DataSpec) -> Dataset:
    """VG-Attribution: 28,748 items, options [false, true], group = f"{a0}_{a1}".

    Files: `spec.root`/visual_genome_attribution.json and `spec.root`/images/ (or `spec.images`).
    """
    if spec.source == "hf":
        return _load_vg_hf(spec, "vg-attribution")
    return _load_vg_files(spec, "vg-attribution", VG_ATTRIBUTION_FILE)


def load_coco_order(spec: DataSpec, tagger: Tagger | None = None) -> Dataset:
    """COCO-Order: one item per caption of the Karpathy test split, options [true, 4 perturbed].

    Files: `spec.root`/coco_karpathy_test.json; images `spec.images` or `spec.root` joined with
    each record's "image" (e.g. val2014/COCO_val2014_000000391895.jpg).

    Args:
        spec: data settings (root, images, source, hf_name, seed).
        tagger: words -> Penn Treebank tags; NLTK's tagger when None (files source only).
    """
    if spec.source == "hf":
        return _load_order_hf(spec, "coco-order")
    return _load_order_files(spec, "coco-order", COCO_ORDER_FILES, COCO_ORDER_SOURCE, tagger)


def load_flickr_order(spec: DataSpec, tagger: Tagger | None = None) -> Dataset:
    """Flickr30k-Order: one item per caption of the Flickr30k test split, options [true, 4 perturbed].

    Files: `spec.root`/flickr30k_test.json (or flickr30k_test_karpathy.json); images `spec.images`
    or `spec.root` joined with each record's "image" (e.g. flickr30k-images/1007129816.jpg).

    Args:
        spec: data settings (root, images, source, hf_name, seed).
        tagger: words -> Penn Treebank tags; NLTK's tagger when None (files source only).
    """
    if spec.source == "hf":
        return _load_order_hf(spec, "flickr-order")
    return _load_order_files(spec, "flickr-order", FLICKR_ORDER_FILES, FLICKR_ORDER_SOURCE, tagger)


# ---------------------------------------------------------------- original files


def _read_json_list(path: Path, what: str) -> list[dict]:
    data = read_json(path, what)  # encoding and syntax errors name the file
    if not isinstance(data, list):
        raise DataError(f"{what} {path} should hold a JSON list of records, found {type(data)}")
    return data


def _check_fields(record: Any, fields: Sequence[str], where: str) -> None:
    missing = [k for k in fields if not isinstance(record, dict) or k not in record]
    if missing:
        found = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(
            f"{where}: missing fields {missing}; expected {list(fields)}, found {found}"
        )


def _load_vg_files(spec: DataSpec, subset: str, filename: str) -> Dataset:
    expected = [VG_RELATION_FILE, VG_ATTRIBUTION_FILE, "images/"]
    what = f"ARO {subset} folder"
    root = require_path(spec.root, what, expected, ARO_SOURCE, setting="data.root")
    ann = require_path(root / filename, f"ARO {subset} annotation file", expected, ARO_SOURCE)
    image_dir = require_path(
        spec.images or root / "images",
        f"ARO {subset} image folder",
        ["<Visual Genome id>.jpg files named by each record's image_path"],
        ARO_SOURCE,
        setting="data.images",
    )
    group_field = "relation_name" if subset == "vg-relation" else "attributes"
    fields = (
        "image_path",
        "bbox_x",
        "bbox_y",
        "bbox_w",
        "bbox_h",
        "true_caption",
        "false_caption",
        group_field,
    )
    items, skipped = [], []
    prefix = _ID_PREFIX[subset]
    for i, rec in enumerate(_read_json_list(ann, f"ARO {subset} annotation file")):
        where = f"{ann} record {i}"
        _check_fields(rec, fields, where)
        item_id = f"{prefix}-{i}"
        try:  # one bad record is skipped with its reason; the others load
            bbox = _record_bbox(rec, where)
            options = (
                _record_caption(rec, "false_caption", where),
                _record_caption(rec, "true_caption", where),
            )
            group = _vg_group(rec[group_field], subset, where)
            if not isinstance(rec["image_path"], str) or not rec["image_path"]:
                raise ValueError(f"{where}: image_path is {rec['image_path']!r}, not a file name")
        except ValueError as err:
            skipped.append(Skipped(item_id, str(err)))
            continue
        path = _resolve_image(image_dir, root, rec["image_path"])
        if path is None:
            skipped.append(Skipped(item_id, f"image file missing: {image_dir / rec['image_path']}"))
            continue
        items.append(
            RankingItem(
                item_id=item_id,
                image=ImageRef(str(path), bbox),
                options=options,
                label=1,
                group=group,
                subset=subset,
            )
        )
    return _dataset(
        subset, items, skipped, source="files", annotation_file=str(ann), crop=spec.crop
    )


def _record_bbox(rec: dict, where: str) -> tuple[float, float, float, float]:
    """(x, y, w, h) of a VG record; a null, non-numeric or non-finite field is a ValueError."""
    out = []
    for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"):
        value = rec[k]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{where}: {k} is {value!r}, not a number")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{where}: {k} is {value!r}, not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{where}: {k} is {value!r}, not a finite number")
        out.append(number)
    if out[2] <= 0 or out[3] <= 0:
        raise ValueError(f"{where}: bbox width and height must be > 0, found {out[2:]}")
    return out[0], out[1], out[2], out[3]


def _record_caption(rec: dict, key: str, where: str) -> str:
    """A caption field of a record; null, non-text or empty is a ValueError."""
    value = rec[key]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key} is {value!r}, not a caption")
    return value


def _vg_group(value: Any, subset: str, where: str) -> str:
    if subset == "vg-relation":
        return str(value)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where}: 'attributes' should be a list of two strings, found {value!r}")
    return f"{value[0]}_{value[1]}"


def _resolve_image(image_dir: Path, root: Path, name: str) -> Path | None:
    for candidate in (image_dir / name, root / name):
        if candidate.is_file():
            return candidate
    return None


def _load_order_files(
    spec: DataSpec,
    subset: str,
    filenames: Sequence[str],
    source: str,
    tagger: Tagger | None,
) -> Dataset:
    what = f"ARO {subset}"
    root = require_path(spec.root, f"{what} folder", list(filenames), source, setting="data.root")
    ann = next((root / n for n in filenames if (root / n).is_file()), None)
    if ann is None:  # raises, naming every accepted file name
        ann = require_path(root / filenames[0], f"{what} annotation file", list(filenames), source)
    image_root = require_path(
        spec.images or root,
        f"{what} image folder",
        ["the files named by each record's 'image' field"],
        source,
        setting="data.images",
    )
    tag = tagger if tagger is not None else nltk_tagger()
    items, skipped = [], []
    prefix = _ID_PREFIX[subset]
    for i, rec in enumerate(_read_json_list(ann, f"{what} annotation file")):
        where = f"{ann} record {i}"
        _check_fields(rec, ("image", "caption"), where)
        captions = rec["caption"] if isinstance(rec["caption"], list) else [rec["caption"]]
        bad_image = not isinstance(rec["image"], str) or not rec["image"]
        path = image_root / rec["image"] if not bad_image else None
        exists = path is not None and path.is_file()
        for j, caption in enumerate(captions):
            item_id = f"{prefix}-{i}-{j}"
            if bad_image:
                skipped.append(Skipped(item_id, f"{where}: image is {rec['image']!r}, not a file"))
                continue
            if not isinstance(caption, str) or not caption.strip():
                skipped.append(Skipped(item_id, f"{where}: caption {j} is {caption!r}, not text"))
                continue
            if not exists:
                skipped.append(Skipped(item_id, f"image file missing: {path}"))
                continue
            try:
                options = order_options(caption, item_id, spec.seed, tag)
            except ValueError as err:
                skipped.append(Skipped(item_id, f"{where}: caption {j}: {err}"))
                continue
            items.append(
                RankingItem(
                    item_id=item_id,
                    image=ImageRef(str(path)),
                    options=options,
                    label=0,
                    group=subset,
                    subset=subset,
                )
            )
    return _dataset(
        subset, items, skipped, source="files", annotation_file=str(ann), seed=spec.seed
    )


# ---------------------------------------------------------------- frozen Hugging Face copies


_SHARD = re.compile(r"^(?P<split>[A-Za-z0-9_.]+?)-\d{5}-of-\d{5}$")  # data/test-00000-of-00007
_SNAPSHOT_REVISION = re.compile(r"^[0-9a-f]{40}$")


def _parquet_splits(folder: Path) -> dict[str, list[str]]:
    """Parquet files of a hub snapshot by split: `data/<split>-00000-of-00001.parquet` (the hub's
    layout) or `<split>/0000.parquet` (the parquet-converter's); hidden folders are left out."""
    splits: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.parquet")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        m = _SHARD.match(path.stem)
        split = m["split"] if m else (rel.parts[-2] if len(rel.parts) > 1 else "train")
        splits.setdefault(split, []).append(str(path))
    return splits


def _open_local_copy(folder: Path) -> tuple[Any, str]:
    """A local frozen copy: a save_to_disk folder or a hub snapshot of parquet files."""
    import datasets

    saved = ("dataset_dict.json", "state.json")
    if any((folder / name).is_file() for name in saved):
        return datasets.load_from_disk(str(folder)), "save_to_disk"
    splits = _parquet_splits(folder)
    if splits:
        return datasets.load_dataset("parquet", data_files=splits), "parquet snapshot"
    raise FileNotFoundError(
        f"data.hf_name={folder} holds neither a save_to_disk copy ({' or '.join(saved)}) nor "
        "the parquet files of a hub snapshot (e.g. data/test-00000-of-00001.parquet); download "
        "one with `huggingface-cli download --repo-type dataset <id> --local-dir <folder>`"
    )


def _snapshot_revision(folder: Path) -> str | None:
    """The commit of a hub-cache snapshot folder (.../snapshots/<commit>/), else None."""
    parts = folder.resolve().parts
    for parent, name in zip(parts, parts[1:], strict=False):
        if parent == "snapshots" and _SNAPSHOT_REVISION.match(name):
            return name
    return None


def _load_hf_table(spec: DataSpec, subset: str, split: str = "test") -> tuple[Any, dict]:
    """Open the frozen copy; returns the table and its provenance (hf_name, revision, layout)."""
    import datasets

    name = spec.hf_name or HF_DEFAULTS[subset]
    folder = Path(name).expanduser()
    if folder.is_dir():
        table, layout = _open_local_copy(folder)
        revision = spec.revision or _snapshot_revision(folder)
        name = str(folder)
    else:
        pinned = HF_REVISIONS[subset] if name == HF_DEFAULTS[subset] else None
        revision = spec.revision or pinned
        layout = "hub"
        try:
            table = datasets.load_dataset(name, revision=revision)
        except Exception as err:  # offline, unknown id or revision, gated repository
            at = f" at revision {revision}" if revision else ""
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FileNotFoundError(
                f"Hugging Face dataset {name}{at} could not be loaded ({reason}); on a machine "
                f"with network run `huggingface-cli download --repo-type dataset {name}"
                f"{f' --revision {revision}' if revision else ''} --local-dir <folder>` and pass "
                "data.hf_name=<folder>"
            ) from err
    if isinstance(table, datasets.DatasetDict):
        splits = list(table)
        if split in table:
            table = table[split]
        elif len(splits) == 1:
            table = table[splits[0]]
        else:
            raise ValueError(f"{name}: no {split!r} split; splits found: {splits}")
    return table, {"source": "hf", "hf_name": name, "revision": revision, "layout": layout}


def _require_columns(table: Any, expected: Sequence[str], name: str) -> str:
    """Check the text columns and return the image column's name ("image" or "images")."""
    found = list(table.column_names)
    image_col = next((c for c in _HF_IMAGE_COLUMNS if c in found), None)
    missing = [c for c in expected if c not in found]
    if image_col is None:
        missing.insert(0, " or ".join(_HF_IMAGE_COLUMNS))
    if missing:
        raise ValueError(
            f"Hugging Face dataset {name} lacks columns {missing}: expected "
            f"{['image'] + list(expected)}, found {found}; use a copy with these columns or "
            "data.source=files with ARO's own JSON files and images"
        )
    return image_col  # type: ignore[return-value]


def _hf_bbox(row: dict) -> tuple[float, float, float, float] | None:
    box = row.get("bbox")
    if isinstance(box, dict):
        box = [box.get(k) for k in ("x", "y", "w", "h")]
    if box is None and "bbox_x" in row:
        box = [row[k] for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")]
    if box is None:
        return None
    if len(box) != 4 or any(v is None for v in box):
        raise ValueError(f"bbox should be (x, y, w, h), found {box!r}")
    return tuple(float(v) for v in box)  # type: ignore[return-value]


def _load_vg_hf(spec: DataSpec, subset: str) -> Dataset:
    table, origin = _load_hf_table(spec, subset)
    name = origin["hf_name"]
    group_field = "relation_name" if subset == "vg-relation" else "attributes"
    image_col = _require_columns(table, ("true_caption", "false_caption", group_field), name)
    meta = table.remove_columns([image_col])  # iterate the text columns without decoding images
    prefix = _ID_PREFIX[subset]
    items, skipped = [], []
    for i, row in enumerate(meta):
        item_id = f"{prefix}-hf-{i}"
        try:  # a bad row (e.g. a null bbox in a frozen copy) costs only itself
            bbox = _hf_bbox(row)
        except ValueError as err:
            skipped.append(Skipped(item_id, f"{name} row {i}: {err}"))
            continue
        items.append(
            RankingItem(
                item_id=item_id,
                image=HFImage(table, i, image_col, bbox),
                options=(row["false_caption"], row["true_caption"]),
                label=1,
                group=_vg_group(row[group_field], subset, f"{name} row {i}"),
                subset=subset,
            )
        )
    return _dataset(subset, items, skipped, **origin, crop=spec.crop)


def _load_order_hf(spec: DataSpec, subset: str) -> Dataset:
    table, origin = _load_hf_table(spec, subset)
    name = origin["hf_name"]
    image_col = _require_columns(table, _HF_ORDER_COLUMNS, name)
    meta = table.remove_columns([image_col])
    prefix = _ID_PREFIX[subset]
    items = []
    for i, row in enumerate(meta):
        options = [row["correct_caption"]] + [row[f"hard_text_{k}"] for k in range(1, 5)]
        items.append(
            RankingItem(
                item_id=f"{prefix}-hf-{i}",
                image=HFImage(table, i, image_col),
                options=tuple(clean_caption(o) for o in options),
                label=0,
                group=subset,
                subset=subset,
            )
        )
    return _dataset(subset, items, [], **origin)


def _dataset(subset: str, items: list, skipped: list[Skipped], **info: Any) -> Dataset:
    """`info` is the data set's provenance (source, files or hub id and revision, crop mode)."""
    return Dataset(
        name=f"aro-{subset}",
        items=items,
        skipped=skipped,
        image_loader=partial(load_item_image, crop=info.get("crop", "pad")),
        info={"subset": subset, **info},
    )

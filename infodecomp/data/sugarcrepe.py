"""SugarCrepe loader: seven hard-negative subsets over COCO val2017 images.

Files (as the authors publish them in their repository's `data/` folder): `data.root` holds
`add_att.json`, `add_obj.json`, `replace_att.json`, `replace_obj.json`, `replace_rel.json`,
`swap_att.json`, `swap_obj.json`, each a JSON object mapping an id string (ids need not be
contiguous) to `{"filename": "000000565045.jpg", "caption": ..., "negative_caption": ...}`;
images live in `data.root/val2017/` or `data.images`. Options are [negative, positive] with
label 1, so the first-index tie rule makes a tie count as wrong (the authors' rule). Metric
rules: infodecomp.tasks.sugarcrepe.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from infodecomp.data.errors import DataError, read_json, require_path
from infodecomp.data.images import load_item_image
from infodecomp.data.records import Dataset, ImageRef, RankingItem, Skipped
from infodecomp.data.spec import DataSpec
from infodecomp.tasks.sugarcrepe import SUBSETS

SOURCE = (
    "the SugarCrepe repository (https://github.com/RAIVNLab/sugar-crepe, folder data/) and the "
    "COCO 2017 val images (http://images.cocodataset.org/zips/val2017.zip)"
)
FIELDS = ("filename", "caption", "negative_caption")
log = logging.getLogger("infodecomp")


class _Pairs(list):
    """A JSON object read as its (key, value) pairs, so that a key the file repeats is seen
    (json.loads keeps only the last record of a repeated key). A repeated key holding the
    same record again is skipped with its reason (scored once); a different record is a
    distinct item, kept under `<task>-<key>@<occurrence>` with a warning naming the file and
    the key. Nothing is dropped silently."""


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def load_sugarcrepe(spec: DataSpec, stems: tuple[str, ...] = tuple(SUBSETS)) -> Dataset:
    """The items of the given subsets (file stems, e.g. "swap_att"), in file and id order."""
    files = [f"{s}.json" for s in stems]
    root = require_path(spec.root, "SugarCrepe folder", files, SOURCE, setting="data.root")
    images = require_path(
        spec.images or root / "val2017",
        "SugarCrepe image folder (COCO val2017)",
        ["000000xxxxxx.jpg files named by each record's filename"],
        SOURCE,
        setting="data.images",
    )
    items, skipped = [], []
    for stem in stems:
        path = require_path(root / f"{stem}.json", f"SugarCrepe {stem} file", files, SOURCE)
        data = read_json(path, "SugarCrepe file", object_pairs_hook=_Pairs)
        if not isinstance(data, _Pairs):
            raise DataError(
                f"SugarCrepe file {path} should hold a JSON object id -> record, found "
                f"{type(data).__name__}"
            )
        task, _, _ = SUBSETS[stem]
        seen: dict[str, list[Any]] = {}  # key -> the records under it so far
        for key, rec in data:
            rec = dict(rec) if isinstance(rec, _Pairs) else rec
            item_id = f"{task}-{key}"
            earlier = seen.setdefault(key, [])
            earlier.append(rec)
            if len(earlier) > 1:  # a key the file repeats: see _Pairs
                item_id = f"{item_id}@{len(earlier)}"
                if rec in earlier[:-1]:
                    skipped.append(
                        Skipped(
                            item_id,
                            f"{path.name}: key {key!r} repeats an earlier record of that key "
                            f"(occurrence {len(earlier)}); the repeat is skipped",
                        )
                    )
                    continue
                log.warning(
                    "%s: key %r appears %d times with different records; each is kept, this "
                    "one as %s",
                    path,
                    key,
                    len(earlier),
                    item_id,
                )
            if not isinstance(rec, dict) or any(_text(rec.get(f)) is None for f in FIELDS):
                found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                skipped.append(
                    Skipped(
                        item_id,
                        f"{path.name} record {key!r}: needs non-empty {list(FIELDS)}, found {found}",
                    )
                )
                continue
            items.append(
                RankingItem(
                    item_id=item_id,
                    image=ImageRef(str(Path(images) / _text(rec["filename"]))),  # type: ignore[operator]
                    options=(_text(rec["negative_caption"]), _text(rec["caption"])),  # type: ignore[arg-type]
                    label=1,
                    group=stem,
                    subset=task,
                )
            )
    name = "sugarcrepe" if len(stems) > 1 else SUBSETS[stems[0]][0]
    return Dataset(name, items, skipped, image_loader=load_item_image, info={"source": "files"})


def subset_loader(stem: str):
    """The loader of one subset (`data=sugarcrepe-<subset>`)."""

    def load(spec: DataSpec) -> Dataset:
        return load_sugarcrepe(spec, (stem,))

    return load

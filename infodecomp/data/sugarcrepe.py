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

import json
from pathlib import Path
from typing import Any

from infodecomp.data.errors import require_path
from infodecomp.data.images import load_item_image
from infodecomp.data.records import Dataset, ImageRef, RankingItem, Skipped
from infodecomp.data.spec import DataSpec
from infodecomp.tasks.sugarcrepe import SUBSETS

SOURCE = (
    "the SugarCrepe repository (https://github.com/RAIVNLab/sugar-crepe, folder data/) and the "
    "COCO 2017 val images (http://images.cocodataset.org/zips/val2017.zip)"
)
FIELDS = ("filename", "caption", "negative_caption")


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
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"SugarCrepe file {path} is not valid JSON: {err}") from err
        if not isinstance(data, dict):
            raise ValueError(
                f"SugarCrepe file {path} should hold a JSON object id -> record, found {type(data).__name__}"
            )
        task, _, _ = SUBSETS[stem]
        for key, rec in data.items():
            item_id = f"{task}-{key}"
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

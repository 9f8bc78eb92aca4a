"""Ranking benchmarks published as one JSON file: the loader a new benchmark reuses.

`data.root` holds `<task>.json`: a list of records, or an object mapping ids to records, each
`{"image": "<file>", "options": ["<caption>", ...], "label": <index of the correct option>}`
with an optional `"group"` (what a macro mean averages over; default: the task name). Images
are read from `data.images`, else from `data.root`. A record that lacks a field or whose label
is not an option's index is skipped with its reason; the items keep the file's order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infodecomp.data.errors import require_path
from infodecomp.data.images import load_item_image
from infodecomp.data.records import Dataset, ImageRef, RankingItem, Skipped
from infodecomp.data.spec import DataSpec

FORMAT = '[{"image": "<file>", "options": ["<caption>", ...], "label": <index>, "group": ...}]'


def _problem(rec: Any) -> str | None:
    """Why a record cannot be an item (None: it can)."""
    if not isinstance(rec, dict):
        return f"a record is an object, found {type(rec).__name__}"
    opts = rec.get("options")
    if not isinstance(rec.get("image"), str) or not rec["image"].strip():
        return "needs a non-empty image file name"
    if not isinstance(opts, list) or len(opts) < 2 or not all(isinstance(o, str) for o in opts):
        return f"needs options: a list of two or more captions, found {opts!r}"
    label = rec.get("label")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(opts):
        return f"label {label!r} is not the index of one of its {len(opts)} options"
    return None


def json_ranking(
    task: str, source: str = "the benchmark's authors"
) -> Callable[[DataSpec], Dataset]:
    """The loader of `data=<task>`: `data.root/<task>.json` in the format above."""

    def load(spec: DataSpec) -> Dataset:
        file = f"{task}.json"
        root = require_path(spec.root, f"{task} folder", [file], source, setting="data.root")
        path = require_path(root / file, f"{task} file", [file], source)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); expected {FORMAT}") from err
        records = data.items() if isinstance(data, dict) else enumerate(data)
        images = Path(spec.images or root)
        items, skipped = [], []
        for key, rec in records:
            item_id = f"{task}-{key}"
            why = _problem(rec)
            if why:
                skipped.append(Skipped(item_id, f"{path.name} record {key!r}: {why}"))
                continue
            items.append(
                RankingItem(
                    item_id=item_id,
                    image=ImageRef(str(images / rec["image"])),
                    options=tuple(rec["options"]),
                    label=int(rec["label"]),
                    group=str(rec.get("group", task)),
                    subset=task,
                )
            )
        return Dataset(task, items, skipped, image_loader=load_item_image, info={"source": "files"})

    return load

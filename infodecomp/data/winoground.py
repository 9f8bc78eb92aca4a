"""Winoground loader: 400 examples, two images and two captions each.

Sources:
- files: `data.root/examples.jsonl` (one JSON object per line with `id`, `caption_0`,
  `caption_1`, `image_0`, `image_1` (names without extension, e.g. `ex_0_img_0`), `tag`,
  `secondary_tag`, `num_main_preds`, `collapsed_tag`) and `data.root/images/<name>.png` (or
  `data.images`);
- hf: the frozen Hugging Face copy (`data.source=hf`, default id `facebook/winoground`, split
  test, columns `id, image_0, image_1, caption_0, caption_1, tag, ...`), or a folder written
  with `save_to_disk`. The hub copy is gated: accept its terms on the dataset page and log in
  (`huggingface-cli login` or HF_TOKEN).

Each example becomes two RankingItems, `<example>-img0` and `<example>-img1`, options
(caption_0, caption_1), label = the image index, group = `tag`, both with draw_key = the
example id (common random numbers). Scores: infodecomp.tasks.winoground.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from infodecomp.data.errors import read_text, require_path
from infodecomp.data.images import HFImage, load_item_image
from infodecomp.data.records import Dataset, ImageRef, RankingItem, Skipped
from infodecomp.data.spec import DataSpec
from infodecomp.tasks.winoground import IMAGE_SEP

SOURCE = (
    "the Winoground release (Hugging Face dataset facebook/winoground, gated: accept its terms "
    "and log in; files examples.jsonl and images/ from its data/ folder), or data.source=hf"
)
HF_DEFAULT = "facebook/winoground"
FIELDS = ("id", "caption_0", "caption_1", "image_0", "image_1")


def _items(
    example: str, caps: tuple[str, str], images: tuple[Any, Any], tag: str, subset: str
) -> list[RankingItem]:
    return [
        RankingItem(f"{example}{IMAGE_SEP}{k}", images[k], caps, k, tag, subset, draw_key=example)
        for k in (0, 1)
    ]


def _caption(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def repeated_example(
    example: str, n: int, line: str, earlier: list[tuple[int, str]], where: str
) -> tuple[str, Skipped | None]:
    """A line whose `id` an earlier line already used.

    The same record again (a repeated line) is skipped with its reason: scoring it twice would
    count that example twice. A different record under the same id is a distinct example, so
    it is kept under the id `<example>@line<n>` (`@row<n>` for the hub copy; deterministic:
    the line it is on), and nothing
    is lost either way. `earlier`: (line, text) of the lines before with this id; `where`: how
    lines are named ("examples.jsonl line", "row"). Returns (the example id to use, or the skip
    of the repeat).
    """
    tag = "@row" if where == "row" else "@line"
    same = next((m for m, text in earlier if text == line.strip()), None)
    if same is not None:
        reason = (
            f"{where} {n} repeats {where} {same} (same id {example!r} and record); the repeat "
            "is skipped, the example is scored once"
        )
        return example, Skipped(f"{example}{tag}{n}", reason)
    return f"{example}{tag}{n}", None


def load_winoground(spec: DataSpec) -> Dataset:
    if spec.source == "hf":
        return _load_hf(spec)
    root = require_path(
        spec.root, "Winoground folder", ["examples.jsonl", "images/"], SOURCE, setting="data.root"
    )
    ann = require_path(
        root / "examples.jsonl", "Winoground examples file", ["examples.jsonl"], SOURCE
    )
    image_dir = require_path(
        spec.images or root / "images",
        "Winoground image folder",
        ["<image name>.png"],
        SOURCE,
        setting="data.images",
    )
    items, skipped = [], []
    seen: dict[str, list[tuple[int, str]]] = {}  # example id -> [(line, text)] with that id
    for n, line in enumerate(read_text(ann, "Winoground examples file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            skipped.append(
                Skipped(f"winoground-line{n}", f"{ann.name} line {n} is not valid JSON: {err}")
            )
            continue
        example = f"winoground-{rec.get('id')}" if isinstance(rec, dict) else f"winoground-line{n}"
        if example in seen:  # a repeated id: see repeated_example
            earlier = seen[example]
            example, repeat = repeated_example(example, n, line, earlier, f"{ann.name} line")
            earlier.append((n, line.strip()))
            if repeat is not None:
                skipped.append(repeat)
                continue
        else:
            seen[example] = [(n, line.strip())]
        caps = (
            (_caption(rec.get("caption_0")), _caption(rec.get("caption_1")))
            if isinstance(rec, dict)
            else (None, None)
        )
        if not isinstance(rec, dict) or any(k not in rec for k in FIELDS) or None in caps:
            skipped.append(
                Skipped(
                    example, f"{ann.name} line {n}: needs {list(FIELDS)} with non-empty captions"
                )
            )
            continue
        images = tuple(ImageRef(str(Path(image_dir) / f"{rec[f'image_{k}']}.png")) for k in (0, 1))
        items += _items(example, caps, images, str(rec.get("tag", "")), "winoground")  # type: ignore[arg-type]
    return Dataset(
        "winoground", items, skipped, image_loader=load_item_image, info={"source": "files"}
    )


def _load_hf(spec: DataSpec) -> Dataset:
    import datasets

    name = spec.hf_name or HF_DEFAULT
    try:
        if Path(name).expanduser().is_dir():
            table = datasets.load_from_disk(str(Path(name).expanduser()))
        else:
            table = datasets.load_dataset(name, split="test")
    except Exception as err:  # the hub client raises several types for gated / missing access
        if "gated" in str(err).lower() or "401" in str(err) or "403" in str(err):
            raise PermissionError(
                f"{name} is gated: accept its terms on the dataset page, then `huggingface-cli "
                f"login` or set HF_TOKEN ({type(err).__name__}: {err})"
            ) from err
        raise
    if isinstance(table, datasets.DatasetDict):
        table = table["test"] if "test" in table else table[next(iter(table))]
    missing = [c for c in FIELDS if c not in table.column_names]
    if missing:
        raise ValueError(
            f"Hugging Face dataset {name} lacks columns {missing}; found {table.column_names}"
        )
    items, skipped = [], []
    seen: dict[str, list[tuple[int, str]]] = {}
    for i, row in enumerate(
        table.select_columns([c for c in table.column_names if not c.startswith("image")])
    ):
        example = f"winoground-{row['id']}"
        text = json.dumps(row, sort_keys=True, default=str)
        if example in seen:  # a repeated id: see repeated_example (rows are the "lines")
            earlier = seen[example]
            example, repeat = repeated_example(example, i, text, earlier, "row")
            earlier.append((i, text))
            if repeat is not None:
                skipped.append(repeat)
                continue
        else:
            seen[example] = [(i, text)]
        caps = (_caption(row["caption_0"]), _caption(row["caption_1"]))
        if None in caps:
            skipped.append(Skipped(example, f"row {i}: empty caption"))
            continue
        images = (HFImage(table, i, "image_0"), HFImage(table, i, "image_1"))
        items += _items(example, caps, images, str(row.get("tag", "")), "winoground")  # type: ignore[arg-type]
    return Dataset(
        "winoground",
        items,
        skipped,
        image_loader=load_item_image,
        info={"source": "hf", "hf_name": name},
    )

"""Data set names -> loaders, one plain dict (`data=<name>` on the command line)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace

from infodecomp.data.controls import apply_control
from infodecomp.data.errors import DataError
from infodecomp.data.records import Dataset, Skipped
from infodecomp.data.shapes import SHAPES_SETS
from infodecomp.data.spec import DataSpec
from infodecomp.tasks import TASKS
from infodecomp.tasks.sugarcrepe import SUBSETS as SUGARCREPE_SUBSETS


def _aro(fn_name: str) -> Callable[[DataSpec], Dataset]:
    def load(spec: DataSpec) -> Dataset:
        from infodecomp.data import aro

        return getattr(aro, fn_name)(spec)

    return load


def _lazy(module: str, fn_name: str, *args: str) -> Callable[[DataSpec], Dataset]:
    """A loader imported on first use: `infodecomp.data.<module>.<fn_name>(*args)(spec)` when
    args are given (a loader factory), else `<fn_name>(spec)`."""

    def load(spec: DataSpec) -> Dataset:
        import importlib

        fn = getattr(importlib.import_module(f"infodecomp.data.{module}"), fn_name)
        return fn(*args)(spec) if args else fn(spec)

    return load


def _coco(kind: str) -> Callable[[DataSpec], Dataset]:
    def load(spec: DataSpec) -> Dataset:
        from infodecomp.data.coco import load_coco_manifest

        return load_coco_manifest(spec, kind)

    return load


# Kinds of data set, by the record their items are: RankingItem (caption options, one correct:
# the `aro` command) or WordItem (image, caption, word and mask: localize, intervene, visualize).
RANKING, WORDS = "ranking", "words"


@dataclass(frozen=True)
class DataEntry:
    """One `data=<name>`: its loader and the kind of items it yields."""

    load: Callable[[DataSpec], Dataset]
    kind: str


DATASETS: dict[str, DataEntry] = {
    **{name: DataEntry(fn, kind) for name, (fn, kind) in SHAPES_SETS.items()},
    "aro-vg-relation": DataEntry(_aro("load_vg_relation"), RANKING),
    "aro-vg-attribution": DataEntry(_aro("load_vg_attribution"), RANKING),
    "aro-coco-order": DataEntry(_aro("load_coco_order"), RANKING),
    "aro-flickr-order": DataEntry(_aro("load_flickr_order"), RANKING),
    **{
        task: DataEntry(_lazy("sugarcrepe", "subset_loader", stem), RANKING)
        for stem, (task, _, _) in SUGARCREPE_SUBSETS.items()
    },
    "sugarcrepe": DataEntry(_lazy("sugarcrepe", "load_sugarcrepe"), RANKING),
    "winoground": DataEntry(_lazy("winoground", "load_winoground"), RANKING),
    "coco-it": DataEntry(_coco("coco-it"), WORDS),
    "coco-wl": DataEntry(_coco("coco-wl"), WORDS),
    "coco100-it": DataEntry(_coco("coco100-it"), WORDS),
    "imagenet-seg": DataEntry(_lazy("segmentation", "load_imagenet_seg"), WORDS),
    "voc-seg": DataEntry(_lazy("segmentation", "load_voc_seg"), WORDS),
}


def _entry(name: str) -> DataEntry:
    if name not in DATASETS and name in TASKS:
        # a ranking task without a loader of its own reads data.root/<task>.json (data.json_ranking)
        return DataEntry(_lazy("json_ranking", "json_ranking", name), RANKING)
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(f"data={name} is not a known data set ({', '.join(DATASETS)}).{hint}")
    return DATASETS[name]


def check_kind(name: str, kind: str, command: str) -> None:
    """A one-line ValueError when `data=<name>` does not yield the items `command` consumes."""
    entry = _entry(name)
    if entry.kind != kind:
        fitting = [n for n, e in DATASETS.items() if e.kind == kind]
        raise ValueError(
            f"data={name} holds {entry.kind} items, but `{command}` needs {kind} items; "
            f"use one of: {', '.join(fitting)}"
        )


def generation_spec(spec: DataSpec, limit: int | None) -> DataSpec:
    """The spec a loader gets: a generated (ShapesWorld) set is drawn at min(size, limit) items,
    and its items depend on that size, so the limit is part of what it produces."""
    if spec.name in SHAPES_SETS and limit is not None:
        return replace(spec, size=min(spec.size, limit))
    return spec


def unique_ids(ds: Dataset) -> Dataset:
    """The data set with every item id once: a later item with an id an earlier one holds is
    skipped with its reason (under `<id>@<position>`), never scored.

    A run's store keys its rows by item id, so two items with one id cannot both be kept; a
    loader that knows its format resolves repeats itself first (winoground, sugarcrepe); this
    is the guard for every other loader, so a repeated id costs one item, not the run.
    """
    first: dict[str, int] = {}
    items, skipped = [], list(ds.skipped)
    for pos, item in enumerate(ds.items):
        iid = str(item.item_id)
        if iid in first:
            skipped.append(
                Skipped(
                    f"{iid}@{pos}",
                    f"item {pos} of {ds.name} repeats the id {iid!r} of item {first[iid]}; "
                    "skipped (the first is scored)",
                )
            )
            continue
        first[iid] = pos
        items.append(item)
    if len(items) == len(ds.items):
        return ds
    return replace(ds, items=items, skipped=skipped)


def load_dataset(spec: DataSpec, limit: int | None = None) -> Dataset:
    """Loads `spec.name`; `limit` keeps the first N items (after the loader's stable order);
    `spec.control` then alters the set on purpose (data.controls)."""
    entry = _entry(spec.name)
    if spec.swaps != "distinct" and spec.name != "coco100-it":
        raise ValueError(
            f"data.swaps={spec.swaps} chooses COCO100-IT's word swaps; data={spec.name} has "
            "none: leave data.swaps unset"
        )
    if spec.wl_mask != "none" and not spec.name.startswith("coco"):
        raise DataError(
            f"data.wl_mask={spec.wl_mask} applies to the COCO manifests (coco-wl's words) only; "
            f"leave it at none for data={spec.name}"
        )
    if spec.classes != "single" and spec.name != "voc-seg":
        raise ValueError(
            f"data.classes={spec.classes} chooses PascalVOC's split; data={spec.name} has none: "
            "leave data.classes unset"
        )
    spec = generation_spec(spec, limit)
    ds = unique_ids(entry.load(spec))
    if limit is not None:
        ds.items = ds.items[:limit]
    return apply_control(ds, spec.control, spec.seed)

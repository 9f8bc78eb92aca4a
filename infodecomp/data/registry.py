"""Data set names -> loaders, one plain dict (`data=<name>` on the command line)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import replace

from infodecomp.data.errors import DataError
from infodecomp.data.records import Dataset
from infodecomp.data.shapes import SHAPES_SETS
from infodecomp.data.spec import DataSpec


def _aro(fn_name: str) -> Callable[[DataSpec], Dataset]:
    def load(spec: DataSpec) -> Dataset:
        from infodecomp.data import aro

        return getattr(aro, fn_name)(spec)

    return load


def _coco(kind: str) -> Callable[[DataSpec], Dataset]:
    def load(spec: DataSpec) -> Dataset:
        from infodecomp.data.coco import load_coco_manifest

        return load_coco_manifest(spec, kind)

    return load


DATASETS: dict[str, Callable[[DataSpec], Dataset]] = {
    **SHAPES_SETS,
    "aro-vg-relation": _aro("load_vg_relation"),
    "aro-vg-attribution": _aro("load_vg_attribution"),
    "aro-coco-order": _aro("load_coco_order"),
    "aro-flickr-order": _aro("load_flickr_order"),
    "coco-it": _coco("coco-it"),
    "coco-wl": _coco("coco-wl"),
    "coco100-it": _coco("coco100-it"),
}

RANKING = {
    "shapes-relation",
    "shapes-attribute",
    "shapes-order",
    "aro-vg-relation",
    "aro-vg-attribution",
    "aro-coco-order",
    "aro-flickr-order",
}
WORDS = {"shapes-localize", "shapes-intervene", "coco-it", "coco-wl", "coco100-it"}


def generation_spec(spec: DataSpec, limit: int | None) -> DataSpec:
    """The spec a loader gets: a generated (ShapesWorld) set is drawn at min(size, limit) items,
    and its items depend on that size, so the limit is part of what it produces."""
    if spec.name in SHAPES_SETS and limit is not None:
        return replace(spec, size=min(spec.size, limit))
    return spec


def load_dataset(spec: DataSpec, limit: int | None = None) -> Dataset:
    """Loads `spec.name`; `limit` keeps the first N items (after the loader's stable order)."""
    if spec.name not in DATASETS:
        close = difflib.get_close_matches(spec.name, DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(f"data={spec.name} is not a known data set ({', '.join(DATASETS)}).{hint}")
    spec = generation_spec(spec, limit)
    ds = DATASETS[spec.name](spec)
    if limit is not None:
        ds.items = ds.items[:limit]
    return ds

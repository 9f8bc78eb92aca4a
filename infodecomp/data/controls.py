"""Controls: data sets altered on purpose so that a score's preference can be attributed.

`shuffled-images` scores every item's captions on another item's image, by a fixed derangement
(no item keeps its own image). A score that still prefers the true caption there is not reading
the image: it follows a caption prior (the true captions of ARO are more probable sentences than
their perturbations). Reported beside Table 1 as `accuracy_control/<score>`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from infodecomp.data.records import Dataset, RankingItem

SHUFFLED_IMAGES = "shuffled-images"
CONTROLS = (SHUFFLED_IMAGES,)


def derangement(n: int, seed: int) -> list[int]:
    """partner[i] != i for every i: a seeded random cycle through all n items."""
    if n < 2:
        raise ValueError(f"data.control={SHUFFLED_IMAGES} needs at least 2 items, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    partner = [0] * n
    for k, i in enumerate(order):
        partner[i] = order[(k + 1) % n]
    return partner


def shuffled_images(ds: Dataset, seed: int) -> Dataset:
    """Every ranking item gets the image (and crop) of its partner under a fixed derangement;
    captions, labels and ids stay, so the run's answers are scored against the item's own
    true caption."""
    bad = [type(it).__name__ for it in ds.items if not isinstance(it, RankingItem)]
    if bad:
        raise ValueError(
            f"data.control={SHUFFLED_IMAGES} applies to ranking items (the `aro` command), "
            f"not to {bad[0]}"
        )
    partner = derangement(len(ds.items), seed)
    items = [replace(it, image=ds.items[j].image) for it, j in zip(ds.items, partner, strict=True)]
    info = {**ds.info, "control": SHUFFLED_IMAGES}
    return replace(ds, items=items, info=info)


def apply_control(ds: Dataset, control: str | None, seed: int) -> Dataset:
    """The data set under `control` (None: unchanged); an unknown control is a one-line error."""
    if control in (None, ""):
        return ds
    if control != SHUFFLED_IMAGES:
        raise ValueError(f"data.control={control} is not one of: {', '.join(CONTROLS)}")
    return shuffled_images(ds, seed)

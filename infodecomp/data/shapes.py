"""ShapesWorld benchmark sets drawn deterministically from (seed, size), mirroring the paper's.

- relation (VG-R-like): "a red circle above a blue square" vs the objects swapped; [false, true].
- attribute (VG-A-like): "a red circle and a blue square" vs the colours swapped; [false, true].
- order (COCO-Order-like): the true caption first, then the colours swapped, the shapes swapped
  and the objects swapped around the relation (the three slot permutations that change meaning).
- localize (COCO-IT / COCO-WL-like): one word of a caption (shape: noun, colour: adj, relation:
  perp) with the exact mask of the pixels it describes.
- intervene (COCO100-IT-like): localisation items with a swap partner for the word.
- winoground (Winoground-like): two scenes that differ by swapping the objects' cells, two
  captions that differ by swapping the objects' descriptions; each caption holds in one scene.
"""

from __future__ import annotations

import torch

from infodecomp.data.records import Dataset, RankingItem, WordItem
from infodecomp.data.spec import DataSpec
from infodecomp.worlds import shapes as world


def _image(scene_index: int, gen: torch.Generator, noise: float) -> torch.Tensor:
    """x = render(scene) + noise * N(0, I). Returns [3, H, W] float32."""
    mean = world.scene_means()[scene_index]
    return (
        (mean + noise * torch.randn(mean.shape, generator=gen, dtype=torch.float64))
        .float()
        .view(3, world.CANVAS, world.CANVAS)
    )


def _noise(spec: DataSpec) -> float:
    return world.SIGMA0 if spec.noise is None else spec.noise


def _dataset(spec: DataSpec, items: list) -> Dataset:
    """The set, tagged with its world and pixel noise (the exact oracle checks they match)."""
    return Dataset(spec.name, items, info={"world": "shapes", "noise": _noise(spec)})


def _draw(spec: DataSpec, salt: int, keep) -> list[tuple[int, torch.Tensor]]:
    """`spec.size` (scene index, image) pairs with keep(scene) true, from (seed, salt)."""
    gen = torch.Generator().manual_seed(spec.seed * 1000 + salt)
    pool = [i for i, s in enumerate(world.scenes()) if keep(s)]
    picks = torch.randint(len(pool), (spec.size,), generator=gen)
    return [(pool[int(p)], _image(pool[int(p)], gen, _noise(spec))) for p in picks]


def _distinct(s: tuple[world.Obj, world.Obj]) -> bool:
    return s[0].colour != s[1].colour and s[0].shape != s[1].shape


def _related(s: tuple[world.Obj, world.Obj]) -> bool:
    return _distinct(s) and world.relation_between(*s) is not None


def _caption(a: world.Obj, b: world.Obj, join: str) -> str:
    return f"a {a.colour} {a.shape} {join} a {b.colour} {b.shape}"


def relation_set(spec: DataSpec) -> Dataset:
    items = []
    for i, (k, x) in enumerate(_draw(spec, 1, _related)):
        a, b = world.scenes()[k]
        rel = world.relation_between(a, b)
        options = (_caption(b, a, rel), _caption(a, b, rel))
        items.append(
            RankingItem(f"shapes-relation-{spec.seed}-{i}", x, options, 1, rel, "shapes-relation")
        )
    return _dataset(spec, items)


def attribute_set(spec: DataSpec) -> Dataset:
    items = []
    for i, (k, x) in enumerate(_draw(spec, 2, _distinct)):
        a, b = world.scenes()[k]
        true = _caption(a, b, "and")
        false = _caption(
            world.Obj(b.colour, a.shape, a.cell), world.Obj(a.colour, b.shape, b.cell), "and"
        )
        group = "_".join(sorted((a.colour, b.colour)))
        items.append(
            RankingItem(
                f"shapes-attribute-{spec.seed}-{i}", x, (false, true), 1, group, "shapes-attribute"
            )
        )
    return _dataset(spec, items)


def order_set(spec: DataSpec) -> Dataset:
    items = []
    for i, (k, x) in enumerate(_draw(spec, 3, _related)):
        a, b = world.scenes()[k]
        rel = world.relation_between(a, b)
        options = (
            _caption(a, b, rel),
            f"a {b.colour} {a.shape} {rel} a {a.colour} {b.shape}",  # colours swapped
            f"a {a.colour} {b.shape} {rel} a {b.colour} {a.shape}",  # shapes swapped
            _caption(b, a, rel),  # objects swapped
        )
        items.append(
            RankingItem(f"shapes-order-{spec.seed}-{i}", x, options, 0, rel, "shapes-order")
        )
    return _dataset(spec, items)


def winoground_set(spec: DataSpec) -> Dataset:
    """Winoground-style examples: scene 0 has object a `rel` object b; scene 1 the same objects
    with their cells swapped. Caption 0 ("a <a> rel a <b>") holds in scene 0 only, caption 1
    ("a <b> rel a <a>") in scene 1 only. Two RankingItems per example (see tasks.winoground)."""
    gen = torch.Generator().manual_seed(spec.seed * 1000 + 6)
    index = {s: i for i, s in enumerate(world.scenes())}
    pool = [i for i, s in enumerate(world.scenes()) if _related(s)]
    items = []
    for n, p in enumerate(torch.randint(len(pool), (spec.size,), generator=gen)):
        a, b = world.scenes()[pool[int(p)]]
        rel = world.relation_between(a, b)
        swapped = (world.Obj(b.colour, b.shape, a.cell), world.Obj(a.colour, a.shape, b.cell))
        scenes = (pool[int(p)], index[swapped])
        captions = (_caption(a, b, rel), _caption(b, a, rel))
        example = f"shapes-winoground-{spec.seed}-{n}"
        for k in (0, 1):
            items.append(
                RankingItem(
                    f"{example}-img{k}",
                    _image(scenes[k], gen, _noise(spec)),
                    captions,
                    k,
                    rel,
                    "shapes-winoground",
                    draw_key=example,
                )
            )
    return _dataset(spec, items)


def _delete(caption: str, word: str, blank: bool) -> str:
    words = world.tokenize(caption)
    idx = words.index(word)
    words[idx] = "_" if blank else ""
    return " ".join(w for w in words if w)


def _word_items(spec: DataSpec, salt: int, prefix: str, with_swaps: bool) -> list[WordItem]:
    items = []
    kinds = ("noun", "adj", "perp")
    gen = torch.Generator().manual_seed(spec.seed * 1000 + salt + 7)
    for i, (k, x) in enumerate(_draw(spec, salt, _related)):
        a, b = world.scenes()[k]
        rel = world.relation_between(a, b)
        caption = _caption(a, b, rel)
        kind = kinds[i % len(kinds)] if not with_swaps else kinds[i % 2]
        target = (a, b)[int(torch.randint(2, (1,), generator=gen))]
        word = {"noun": target.shape, "adj": target.colour, "perp": rel}[kind]
        swap_word = swap_caption = None
        if with_swaps:
            pool = (
                [s for s in world.SHAPES if s not in (a.shape, b.shape)]
                if kind == "noun"
                else [c for c in world.COLOURS if c not in (a.colour, b.colour)]
            )
            swap_word = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            words = world.tokenize(caption)
            words[words.index(word)] = swap_word
            swap_caption = " ".join(words)
        items.append(
            WordItem(
                item_id=f"{prefix}-{spec.seed}-{i}",
                image=x,
                caption=caption,
                word=word,
                context=_delete(caption, word, blank=False),
                context_blank=_delete(caption, word, blank=True),
                word_type=kind,
                mask=world.word_mask((a, b), caption, word),
                swap_word=swap_word,
                swap_caption=swap_caption,
            )
        )
    return items


def localize_set(spec: DataSpec) -> Dataset:
    return _dataset(spec, _word_items(spec, 4, "shapes-localize", with_swaps=False))


def intervene_set(spec: DataSpec) -> Dataset:
    return _dataset(spec, _word_items(spec, 5, "shapes-intervene", with_swaps=True))


# name -> (loader, kind of items: see data.registry)
SHAPES_SETS = {
    "shapes-relation": (relation_set, "ranking"),
    "shapes-attribute": (attribute_set, "ranking"),
    "shapes-order": (order_set, "ranking"),
    "shapes-winoground": (winoground_set, "ranking"),
    "shapes-localize": (localize_set, "words"),
    "shapes-intervene": (intervene_set, "words"),
}

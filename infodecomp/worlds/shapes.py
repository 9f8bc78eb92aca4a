"""ShapesWorld: rendered two-object scenes and a caption grammar that maps captions to scene sets.

Scenes put two objects (colour x shape) in two distinct cells of a 2 x 2 grid on a 16 x 16 RGB
canvas. Objects are drawn inside a 1-pixel margin of their cell, so the margin pixels are
background in every scene. A caption is parsed into at most two object specs (colour and/or
shape, either may be free) joined by a relation ("above", "below", "left of", "right of") or
"and"; a deleted word or "_" leaves its slot free. A caption denotes the set of scenes in which
some assignment of the scene's objects to the specs satisfies it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import torch

from infodecomp.worlds import noise

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, -1.0, -1.0),
    "green": (-1.0, 1.0, -1.0),
    "blue": (-1.0, -1.0, 1.0),
    "yellow": (1.0, 1.0, -1.0),
}
SHAPES = ("circle", "square", "triangle")
SIGMA0 = noise.SIGMA0  # pixel noise of the data distribution around each rendered scene
RELATIONS = ("above", "below", "left of", "right of")
ARTICLES = ("a", "the", "an")
GRID = 2  # cells per side
CELL = 8  # pixels per cell side
CANVAS = GRID * CELL


@dataclass(frozen=True)
class Obj:
    colour: str
    shape: str
    cell: int  # row-major index into the GRID x GRID cells


@dataclass(frozen=True)
class Spec:
    """One object slot of a caption; None means free."""

    colour: str | None = None
    shape: str | None = None

    def matches(self, o: Obj) -> bool:
        return (self.colour in (None, o.colour)) and (self.shape in (None, o.shape))


@dataclass(frozen=True)
class Parsed:
    """A parsed caption: object specs (0-2) and the joining relation ("and", a relation or None)."""

    specs: tuple[Spec, ...]
    relation: str | None


def _shape_mask(shape: str) -> torch.Tensor:
    """Pixels of a shape inside a (CELL - 2)-pixel box. Returns bool [6, 6]."""
    n = CELL - 2
    yy, xx = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    c = n / 2
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (n / 2) ** 2 - 0.5
    if shape == "square":
        return (yy >= 1) & (yy <= n - 1) & (xx >= 1) & (xx <= n - 1)
    if shape == "triangle":  # apex up
        return (yy >= 0.5) & ((xx - c).abs() <= yy / 2 + 0.25)
    raise ValueError(f"unknown shape '{shape}'; known: {', '.join(SHAPES)}")


def object_mask(o: Obj) -> torch.Tensor:
    """The pixels object o covers on the canvas. Returns bool [CANVAS, CANVAS]."""
    m = torch.zeros(CANVAS, CANVAS, dtype=torch.bool)
    r, c = divmod(o.cell, GRID)
    m[r * CELL + 1 : (r + 1) * CELL - 1, c * CELL + 1 : (c + 1) * CELL - 1] = _shape_mask(o.shape)
    return m


def render(objs: tuple[Obj, ...]) -> torch.Tensor:
    """The noise-free image of a scene, background 0, colours in {-1, 1}. Returns [3, H, W]."""
    img = torch.zeros(3, CANVAS, CANVAS)
    for o in objs:
        m = object_mask(o)
        img[:, m] = torch.tensor(COLOURS[o.colour]).view(3, 1)
    return img


@lru_cache(maxsize=1)
def scenes() -> tuple[tuple[Obj, Obj], ...]:
    """All scenes: unordered pairs of objects in distinct cells (first object in the lower cell)."""
    kinds = list(itertools.product(COLOURS, SHAPES))
    out = []
    for c1, c2 in itertools.combinations(range(GRID * GRID), 2):
        for (col1, sh1), (col2, sh2) in itertools.product(kinds, kinds):
            out.append((Obj(col1, sh1, c1), Obj(col2, sh2, c2)))
    return tuple(out)


@lru_cache(maxsize=1)
def scene_means() -> torch.Tensor:
    """Rendered scenes, flattened. Returns [K, 3 * H * W] float64."""
    return torch.stack([render(s).flatten() for s in scenes()]).double()


def holds(relation: str, a: Obj, b: Obj) -> bool:
    """Whether `a <relation> b` holds for the cells of a and b."""
    (ra, ca), (rb, cb) = divmod(a.cell, GRID), divmod(b.cell, GRID)
    if relation == "above":
        return ca == cb and ra < rb
    if relation == "below":
        return ca == cb and ra > rb
    if relation == "left of":
        return ra == rb and ca < cb
    if relation == "right of":
        return ra == rb and ca > cb
    raise ValueError(f"unknown relation '{relation}'")


def tokenize(caption: str) -> list[str]:
    """Lower-cased words, with two-word relations kept as one token."""
    words = caption.lower().replace(",", " ").replace(".", " ").split()
    out: list[str] = []
    i = 0
    while i < len(words):
        if i + 1 < len(words) and f"{words[i]} {words[i + 1]}" in RELATIONS:
            out.append(f"{words[i]} {words[i + 1]}")
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


def parse(caption: str) -> Parsed:
    """Parses a ShapesWorld caption; unknown words are an error naming the word and the caption.

    Objects are split at the joining word (a relation or "and"); within an object segment,
    word order does not matter. A segment without colour and shape (e.g. only "a") is free.
    """
    tokens = tokenize(caption)
    joins = [t for t in tokens if t in RELATIONS or t == "and"]
    if len(joins) > 1:
        raise ValueError(
            f"caption '{caption}' joins more than two objects ({joins}); ShapesWorld scenes hold two"
        )
    segments: list[list[str]] = [[]]
    for t in tokens:
        if t in RELATIONS or t == "and":
            segments.append([])
        elif not joins and t in ARTICLES and any(w not in ARTICLES for w in segments[-1]):
            segments.append([t])  # no joining word left: a second article starts the second object
        else:
            segments[-1].append(t)
    specs = []
    for seg in segments:
        colour = shape = None
        for w in seg:
            if w in COLOURS:
                if colour is not None:
                    raise ValueError(f"caption '{caption}' gives one object two colours")
                colour = w
            elif w in SHAPES:
                if shape is not None:
                    raise ValueError(f"caption '{caption}' gives one object two shapes")
                shape = w
            elif w not in ARTICLES and w != "_":
                raise ValueError(
                    f"word '{w}' in caption '{caption}' is not in the ShapesWorld vocabulary "
                    f"(colours {list(COLOURS)}, shapes {list(SHAPES)}, relations {list(RELATIONS)}, 'and')"
                )
        specs.append(Spec(colour, shape))
    if not joins:  # without a join, empty segments (e.g. the empty prompt) constrain nothing
        specs = [s for s in specs if s != Spec()]
    if len(specs) > 2:
        raise ValueError(
            f"caption '{caption}' describes {len(specs)} objects; ShapesWorld scenes hold two"
        )
    return Parsed(tuple(specs), joins[0] if joins else None)


def satisfies(p: Parsed, scene: tuple[Obj, Obj]) -> bool:
    """Whether the scene is in the caption's scene set."""
    a, b = scene
    if len(p.specs) == 0:
        return True
    if len(p.specs) == 1:
        return p.specs[0].matches(a) or p.specs[0].matches(b)
    s1, s2 = p.specs
    for x, y in ((a, b), (b, a)):
        if (
            s1.matches(x)
            and s2.matches(y)
            and (p.relation in (None, "and") or holds(p.relation, x, y))
        ):
            return True
    return False


@lru_cache(maxsize=4096)
def scene_set(caption: str) -> torch.Tensor:
    """Bool [K]: which scenes the caption denotes. An empty set is an error."""
    p = parse(caption)
    m = torch.tensor([satisfies(p, s) for s in scenes()], dtype=torch.bool)
    if not m.any():
        raise ValueError(f"caption '{caption}' describes no ShapesWorld scene")
    return m


def describe(obj: Obj) -> str:
    return f"{obj.colour} {obj.shape}"


def relation_between(a: Obj, b: Obj) -> str | None:
    """The relation that holds for `a <rel> b`, or None for diagonal cells."""
    for r in RELATIONS:
        if holds(r, a, b):
            return r
    return None


def word_mask(scene: tuple[Obj, Obj], caption: str, word: str) -> torch.Tensor:
    """Pixels the word describes in this scene: its object's pixels (both objects for a relation).

    Returns bool [H, W]. The word's object is the one its caption segment is bound to under the
    assignment that satisfies the caption (first object first when both do).
    """
    p = parse(caption)
    tokens = tokenize(caption)
    if word not in tokens:
        raise ValueError(f"word '{word}' is not in caption '{caption}'")
    if word in RELATIONS or word == "and":
        return object_mask(scene[0]) | object_mask(scene[1])
    seg_index = 0
    for t in tokens:
        if t == word:
            break
        if t in RELATIONS or t == "and":
            seg_index += 1
    a, b = scene
    for x, y in ((a, b), (b, a)):
        if len(p.specs) == 1:
            if p.specs[0].matches(x):
                return object_mask(x)
            continue
        s1, s2 = p.specs
        if (
            s1.matches(x)
            and s2.matches(y)
            and (p.relation in (None, "and") or holds(p.relation, x, y))
        ):
            return object_mask((x, y)[seg_index])
    raise ValueError(f"caption '{caption}' does not describe the scene {scene}")


# --- the caption distribution a learned ShapesWorld model is trained on -------------------------

JOINS = (*RELATIONS, "and")


def full_captions() -> list[str]:
    """Every two-object caption "a <colour> <shape> <join> a <colour> <shape>" (720)."""
    kinds = list(itertools.product(COLOURS, SHAPES))
    return [
        f"a {c1} {s1} {join} a {c2} {s2}"
        for (c1, s1), join, (c2, s2) in itertools.product(kinds, JOINS, kinds)
    ]


def partial_captions(caption: str) -> list[str]:
    """The caption with one content word (colour, shape or join) deleted or replaced by "_",
    the two forms the experiments use for a word's context."""
    tokens = tokenize(caption)
    out = []
    for i, t in enumerate(tokens):
        if t in ARTICLES:
            continue
        for blank in ("", "_"):
            words = [*tokens[:i], blank, *tokens[i + 1 :]]
            out.append(" ".join(w for w in words if w))
    return out


def single_captions() -> list[str]:
    """One-object captions: "a <colour> <shape>", "a <colour>", "a <shape>" (19)."""
    return [
        *(f"a {c} {s}" for c, s in itertools.product(COLOURS, SHAPES)),
        *(f"a {c}" for c in COLOURS),
        *(f"a {s}" for s in SHAPES),
    ]


def training_captions() -> dict[str, list[str]]:
    """The caption kinds a learned model sees: the empty caption, full, partial and single.

    Every caption any ShapesWorld benchmark set builds (true, contradicting and swapped captions,
    contexts with a deleted or "_" word, the empty prompt) is in this pool.
    """
    full = full_captions()
    partial = list(dict.fromkeys(p for c in full for p in partial_captions(c)))
    return {"empty": [""], "full": full, "partial": partial, "single": single_captions()}

"""ShapesWorld: caption grammar, scene sets, rendering, word masks and the benchmark sets."""

from __future__ import annotations

import pytest
import torch

from infodecomp.data.records import RankingItem, WordItem
from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.worlds import shapes as world
from infodecomp.worlds.shapes import Obj, Spec

N_SCENES = 6 * 12 * 12  # 6 cell pairs x (4 colours x 3 shapes)^2


@pytest.fixture(scope="module")
def oracle() -> ShapesOracle:
    return ShapesOracle()


@pytest.mark.parametrize(
    "caption,specs,relation",
    [
        (
            "a red circle above a blue square",
            (Spec("red", "circle"), Spec("blue", "square")),
            "above",
        ),
        (
            "the green triangle right of a yellow circle",
            (Spec("green", "triangle"), Spec("yellow", "circle")),
            "right of",
        ),
        ("a red circle and a blue square", (Spec("red", "circle"), Spec("blue", "square")), "and"),
        ("a circle left of a square", (Spec(None, "circle"), Spec(None, "square")), "left of"),
        # word deleted, word blanked, join deleted
        ("a red above a blue square", (Spec("red", None), Spec("blue", "square")), "above"),
        ("a _ circle below a blue _", (Spec(None, "circle"), Spec("blue", None)), "below"),
        ("a red circle a blue square", (Spec("red", "circle"), Spec("blue", "square")), None),
        ("circle red", (Spec("red", "circle"),), None),  # order within an object is free
        ("red", (Spec("red", None),), None),
        ("A Red Circle.", (Spec("red", "circle"),), None),
        ("", (), None),
        ("a", (), None),
    ],
)
def test_parse(caption: str, specs: tuple, relation: str | None) -> None:
    p = world.parse(caption)
    assert p.specs == specs and p.relation == relation


@pytest.mark.parametrize(
    "caption,count",
    [
        ("", N_SCENES),
        ("red", 6 * (144 - 81)),  # at least one of the two objects red
        ("a red circle", 6 * (144 - 121)),
        ("a red circle above a blue square", 2),  # two vertical cell pairs, one placement each
        ("a blue square below a red circle", 2),
        ("a red circle left of a blue square", 2),
        ("a red circle and a blue square", 12),  # 6 cell pairs x 2 placements
        ("a red circle a blue square", 12),
        ("a circle above a square", 2 * 16),
        ("a red above a blue square", 2 * 3),
        ("a _ circle above a blue square", 2 * 4),
        ("a red circle above a red circle", 2),
        ("a red circle and a _", 6 * (144 - 121)),  # the second object is free
    ],
)
def test_scene_set_sizes(caption: str, count: int) -> None:
    m = world.scene_set(caption)
    assert m.dtype == torch.bool and m.shape == (N_SCENES,)
    assert int(m.sum()) == count


def test_scene_set_members_are_right() -> None:
    m = world.scene_set("a red circle above a blue square")
    for k in torch.nonzero(m).flatten().tolist():
        a, b = world.scenes()[k]  # first object in the lower (upper on the canvas) cell
        assert (a.colour, a.shape, b.colour, b.shape) == ("red", "circle", "blue", "square")
        assert world.holds("above", a, b)
    assert torch.equal(m, world.scene_set("a blue square below a red circle"))
    assert not torch.equal(m, world.scene_set("a blue square above a red circle"))
    assert not (m & world.scene_set("a blue square above a red circle")).any()


def test_bad_captions_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"word 'purple' in caption 'a purple circle'"):
        world.scene_set("a purple circle")
    with pytest.raises(ValueError, match="two colours"):
        world.parse("a red blue circle")
    with pytest.raises(ValueError, match="joins more than two objects"):
        world.parse("a red circle above a blue square and a green circle")
    with pytest.raises(ValueError, match="describes 3 objects"):
        world.scene_set("a red a blue a green")
    # every well-formed caption has some scene in this world, so force an empty set
    monkeypatch.setattr(world, "satisfies", lambda p, scene: False)
    with pytest.raises(ValueError, match="'a green square' describes no ShapesWorld scene"):
        world.scene_set.__wrapped__("a green square")  # past the cache


def test_render_margins_are_background() -> None:
    imgs = world.scene_means().view(-1, 3, world.CANVAS, world.CANVAS)
    idx = torch.arange(world.CANVAS) % world.CELL
    margin = (
        (idx[:, None] == 0)
        | (idx[:, None] == world.CELL - 1)
        | (idx[None, :] == 0)
        | (idx[None, :] == world.CELL - 1)
    )
    assert int(margin.sum()) == 4 * (4 * world.CELL - 4)
    assert bool((imgs[:, :, margin] == 0).all())
    assert bool((imgs[:, :, ~margin] != 0).any(0).any(0).any())


def test_render_and_object_masks() -> None:
    scene = (Obj("red", "circle", 0), Obj("blue", "triangle", 3))
    img = world.render(scene)
    ma, mb = world.object_mask(scene[0]), world.object_mask(scene[1])
    assert not (ma & mb).any() and ma.any() and mb.any()
    assert ma[:8, :8].sum() == ma.sum() and mb[8:, 8:].sum() == mb.sum()  # inside their cells
    torch.testing.assert_close(
        img[:, ma], torch.tensor([1.0, -1.0, -1.0]).view(3, 1).expand(3, int(ma.sum()))
    )
    torch.testing.assert_close(
        img[:, mb], torch.tensor([-1.0, -1.0, 1.0]).view(3, 1).expand(3, int(mb.sum()))
    )
    assert bool((img[:, ~(ma | mb)] == 0).all())
    sizes = {s: int(world.object_mask(Obj("red", s, 1)).sum()) for s in world.SHAPES}
    assert len(set(sizes.values())) == 3  # the three shapes differ
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        world.object_mask(Obj("red", "hexagon", 0))


def test_word_masks() -> None:
    a, b = Obj("red", "circle", 0), Obj("blue", "square", 2)  # a above b
    caption = "a red circle above a blue square"
    ma, mb = world.object_mask(a), world.object_mask(b)
    for scene in ((a, b), (b, a)):  # independent of the order objects are stored in
        assert torch.equal(world.word_mask(scene, caption, "red"), ma)
        assert torch.equal(world.word_mask(scene, caption, "circle"), ma)
        assert torch.equal(world.word_mask(scene, caption, "blue"), mb)
        assert torch.equal(world.word_mask(scene, caption, "square"), mb)
        assert torch.equal(world.word_mask(scene, caption, "above"), ma | mb)
    assert torch.equal(world.word_mask((a, b), "a blue square below a red circle", "circle"), ma)
    with pytest.raises(ValueError, match="word 'green' is not in caption"):
        world.word_mask((a, b), caption, "green")
    with pytest.raises(ValueError, match="does not describe the scene"):
        world.word_mask((a, b), "a blue square above a red circle", "blue")


# ----------------------------------------------------------------------------- benchmark sets

SETS = [
    "shapes-relation",
    "shapes-attribute",
    "shapes-order",
    "shapes-localize",
    "shapes-intervene",
]


def _captions(it) -> list[str]:
    if isinstance(it, RankingItem):
        return list(it.options)
    caps = [it.caption, it.context, it.context_blank]
    return caps + ([it.swap_caption] if it.swap_caption else [])


@pytest.mark.parametrize("name", SETS)
def test_sets_are_deterministic(name: str) -> None:
    a = load_dataset(DataSpec(name=name, size=6, seed=1))
    b = load_dataset(DataSpec(name=name, size=6, seed=1))
    c = load_dataset(DataSpec(name=name, size=6, seed=2))
    assert len(a.items) == 6 and len({it.item_id for it in a.items}) == 6
    for x, y in zip(a.items, b.items, strict=True):
        assert x.item_id == y.item_id and _captions(x) == _captions(y)
        assert torch.equal(x.image, y.image)
    assert not all(torch.equal(x.image, z.image) for x, z in zip(a.items, c.items, strict=True))
    assert (
        load_dataset(DataSpec(name=name, size=6, seed=1), limit=2).items[1].item_id
        == a.items[1].item_id
    )
    for it in a.items:
        assert it.image.shape == (3, world.CANVAS, world.CANVAS)
        for cap in _captions(it):
            assert world.scene_set(cap).any()  # parses, non-empty


def test_relation_and_attribute_option_order() -> None:
    for it in load_dataset(DataSpec(name="shapes-relation", size=8)).items:
        false, true = (world.parse(o) for o in it.options)
        assert (
            it.label == 1
            and it.group == true.relation == false.relation
            and true.relation in world.RELATIONS
        )
        assert false.specs == true.specs[::-1]  # objects swapped around the relation
        assert it.subset == "shapes-relation"
    for it in load_dataset(DataSpec(name="shapes-attribute", size=8)).items:
        false, true = (world.parse(o) for o in it.options)
        assert it.label == 1 and true.relation == false.relation == "and"
        (c1, s1), (c2, s2) = ((s.colour, s.shape) for s in true.specs)
        assert false.specs == (Spec(c2, s1), Spec(c1, s2))  # colours swapped
        assert it.group == "_".join(sorted((c1, c2)))


def test_order_option_order() -> None:
    for it in load_dataset(DataSpec(name="shapes-order", size=8)).items:
        assert it.label == 0 and len(it.options) == 4
        t, col, sh, obj = (world.parse(o) for o in it.options)
        (c1, s1), (c2, s2) = ((s.colour, s.shape) for s in t.specs)
        assert col.specs == (Spec(c2, s1), Spec(c1, s2))
        assert sh.specs == (Spec(c1, s2), Spec(c2, s1))
        assert obj.specs == (Spec(c2, s2), Spec(c1, s1))
        assert {p.relation for p in (t, col, sh, obj)} == {it.group}
        assert len(set(it.options)) == 4


@pytest.mark.parametrize("name", ["shapes-localize", "shapes-intervene"])
def test_word_items(name: str) -> None:
    items = load_dataset(DataSpec(name=name, size=9)).items
    kinds = [it.word_type for it in items]
    assert kinds == (
        ["noun", "adj", "perp"] * 3 if name == "shapes-localize" else ["noun", "adj"] * 4 + ["noun"]
    )
    for it in items:
        assert isinstance(it, WordItem)
        words = world.tokenize(it.caption)
        assert it.word in words
        assert world.tokenize(it.context) == [w for w in words if w != it.word]
        assert world.tokenize(it.context_blank) == ["_" if w == it.word else w for w in words]
        assert it.mask.dtype == torch.bool and it.mask.shape == (16, 16) and it.mask.any()
        cells = {(r // 8) * 2 + c // 8 for r, c in torch.nonzero(it.mask).tolist()}
        assert len(cells) == (2 if it.word_type == "perp" else 1)
        want = {"noun": world.SHAPES, "adj": tuple(world.COLOURS), "perp": world.RELATIONS}[
            it.word_type
        ]
        assert it.word in want
        if name == "shapes-intervene":
            assert it.swap_word in want and it.swap_word not in words
            assert world.tokenize(it.swap_caption) == [
                it.swap_word if w == it.word else w for w in words
            ]
        else:
            assert it.swap_word is None and it.swap_caption is None


@pytest.mark.parametrize("name", ["shapes-relation", "shapes-attribute", "shapes-order"])
def test_true_option_has_the_highest_exact_likelihood(name: str, oracle: ShapesOracle) -> None:
    for it in load_dataset(DataSpec(name=name, size=8)).items:
        lp = [float(oracle.log_prob(it.image[None], o)) for o in it.options]
        assert max(range(len(lp)), key=lp.__getitem__) == it.label, (it.options, lp)


@pytest.mark.parametrize("name", ["shapes-localize", "shapes-intervene"])
def test_word_item_masks_cover_the_true_scene(name: str, oracle: ShapesOracle) -> None:
    for it in load_dataset(DataSpec(name=name, size=6)).items:
        assert float(oracle.log_prob(it.image[None], it.caption)) > float(
            oracle.log_prob(it.image[None], "")
        )
        if it.swap_caption:
            assert float(oracle.log_prob(it.image[None], it.caption)) > float(
                oracle.log_prob(it.image[None], it.swap_caption)
            )
        # the masked pixels are where the image differs from the background
        signal = it.image.abs().sum(0) > 1.5
        assert float(signal[it.mask].float().mean()) > 0.9

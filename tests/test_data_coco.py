"""COCO-IT / COCO100-IT / COCO-WL: manifest loading, instance masks, swaps, manifest builder.

Fixtures (COCO instances with a polygon and an RLE mask, captions, manifests in the published
columns, JPEG images) are written into tmp_path by the helpers below. The conformance tests read
the published manifests when the reference folder exists and skip cleanly otherwise.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from infodecomp.data.coco import CocoMasks, load_coco_manifest
from infodecomp.data.errors import MaskLoadError
from infodecomp.data.manifest import (
    build_manifest,
    category_forms,
    delete_word,
    find_form,
    main_build,
    plural,
)
from infodecomp.data.spec import DataSpec
from infodecomp.data.swaps import SWAP_TABLE, swap_caption, swap_partner

IT_HEADER = ["Image ID", "Label", "correct_obj+context", "context", "correct_obj"]
CAPTIONS = {
    1: ["A cat sitting next to a hotdog.", "A dog and a dog near a doghouse"],
    2: ["A man skiing on a ski slope with skis", "Two people standing behind a fence"],
    3: ["An empty room."],
}
SIZES = {1: (20, 10), 2: (8, 6), 3: (4, 4)}  # (width, height)


def rle_rect(height: int, width: int, x0: int, x1: int, y0: int, y1: int) -> dict:
    """Compressed RLE of the rectangle x in [x0, x1), y in [y0, y1), as COCO JSON stores it."""
    m = np.zeros((height, width), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def write_coco(root: Path) -> tuple[Path, Path, Path]:
    """val2017/ images + annotations/instances_val2017.json + annotations/captions_val2017.json."""
    images = root / "val2017"
    images.mkdir(parents=True)
    for image_id, size in SIZES.items():
        Image.new("RGB", size, (120, 30, 200)).save(images / f"{image_id:012d}.jpg")
    anns = [
        # dog in image 1: a polygon (x 2..8, y 1..5: 24 px) and an RLE (x 6..12, y 3..7: 24 px),
        # overlapping on x 6..8, y 3..5 (4 px): union 44 px
        {
            "id": 1,
            "image_id": 1,
            "category_id": 18,
            "iscrowd": 0,
            "segmentation": [[2, 1, 8, 1, 8, 5, 2, 5]],
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 18,
            "iscrowd": 1,
            "segmentation": rle_rect(10, 20, 6, 12, 3, 7),
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 17,
            "iscrowd": 0,
            "segmentation": [[10, 6, 14, 6, 14, 9, 10, 9]],
        },  # cat: 4 x 3 = 12 px
        {
            "id": 4,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "segmentation": [[0, 0, 1, 0, 1, 1, 0, 1]],
        },  # person, never in a caption
        {
            "id": 5,
            "image_id": 2,
            "category_id": 35,
            "iscrowd": 0,
            "segmentation": [[0, 0, 4, 0, 4, 2, 0, 2]],
        },
    ]
    instances = {
        "images": [
            {"id": i, "width": w, "height": h, "file_name": f"{i:012d}.jpg"}
            for i, (w, h) in SIZES.items()
        ],
        "annotations": anns,
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 17, "name": "cat"},
            {"id": 18, "name": "dog"},
            {"id": 35, "name": "skis"},
        ],
    }
    captions = {
        "images": instances["images"],
        "annotations": [
            {"id": 10 * i + k, "image_id": i, "caption": c}
            for i, caps in CAPTIONS.items()
            for k, c in enumerate(caps)
        ],
    }
    (root / "annotations").mkdir()
    inst_path = root / "annotations" / "instances_val2017.json"
    cap_path = root / "annotations" / "captions_val2017.json"
    inst_path.write_text(json.dumps(instances))
    cap_path.write_text(json.dumps(captions))
    return images, inst_path, cap_path


def write_manifest(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


IT_ROWS = [
    [1, "dog", "A dog and a dog near a doghouse", "A  and a  near a house", "dog"],
    [1, "cat", "A  cat sitting next to a hotdog. ", "A   sitting next to a hotdog. ", "cat"],
    [2, "skis", "A man on a ski slope", "A man on a  slope", "skis"],  # word not in caption
    [9, "dog", "A dog", "A ", "dog"],  # image 9 does not exist
    [2, "cat", "A cat on skis", "A  on skis", "cat"],  # no cat instance in image 2
]


@pytest.fixture
def coco(tmp_path):
    images, inst, caps = write_coco(tmp_path)
    manifest = write_manifest(tmp_path / "COCO-IT.csv", IT_HEADER, IT_ROWS)
    return tmp_path, images, inst, caps, manifest


# ---------------------------------------------------------------- loader


def test_coco_it_items_skips_and_normalisation(coco):
    root, images, inst, _, manifest = coco
    ds = load_coco_manifest(DataSpec(name="coco-it", root=str(root)), "coco-it")
    assert [it.item_id for it in ds.items] == ["1-dog-0", "1-cat-1", "2-cat-4"]
    reasons = {s.item_id: s.reason for s in ds.skipped}
    assert set(reasons) == {"2-skis-2", "9-dog-3"}
    assert "not a whole word" in reasons["2-skis-2"]
    assert "000000000009.jpg" in reasons["9-dog-3"]
    dog, cat = ds.items[0], ds.items[1]
    assert dog.word == "dog" and dog.caption == "A dog and a dog near a doghouse"
    assert dog.context == "A and a near a house"  # published artefacts kept, spaces collapsed
    assert dog.context_blank == "A _ and a _ near a _house"
    assert dog.extra["context_blank_rule"] == "replace-all"
    assert dog.word_type == "noun" and dog.mask == (1, "dog") and dog.swap_word is None
    assert dog.image.path == str(images / "000000000001.jpg")
    assert cat.caption == "A cat sitting next to a hotdog." and cat.context_blank.startswith("A _")
    assert cat.extra["raw"]["caption"] == "A  cat sitting next to a hotdog. "
    assert ds.info["whitespace_normalized"] == 3 and ds.info["context_blank_rebuilt"] == 3
    assert ds.load_image(dog).size == (20, 10)


def test_masks_union_polygon_and_rle(coco):
    root, *_ = coco
    ds = load_coco_manifest(DataSpec(root=str(root)), "coco-it")
    dog = ds.load_mask(ds.items[0])
    assert dog.dtype == torch.bool and tuple(dog.shape) == (10, 20)  # [H, W] of the image
    assert int(dog.sum()) == 24 + 24 - 4
    assert bool(dog[1, 2]) and bool(dog[6, 11]) and not bool(dog[0, 0]) and not bool(dog[6, 5])
    cat = ds.load_mask(ds.items[1])
    assert int(cat.sum()) == 12 and bool(cat[6, 10]) and not bool(cat[9, 14])
    with pytest.raises(MaskLoadError, match="no instance of 'cat'"):
        ds.load_mask(ds.items[2])
    masks = CocoMasks(root / "annotations" / "instances_val2017.json")
    with pytest.raises(MaskLoadError, match="'giraffe' is not a COCO category"):
        masks.mask(1, "giraffe")
    with pytest.raises(MaskLoadError, match="image 77 is not in"):
        masks.mask(77, "dog")


def test_coco_wl_word_types_and_no_masks(coco):
    root, *_ = coco
    header = IT_HEADER + ["context_", ""]
    rows = [
        [
            2,
            "stand",
            "Two people standing behind a fence",
            "Two people  behind a fence",
            "standing",
            "Two people _ behind a fence",
            "verb",
        ],
        [
            2,
            "two",
            "Two people standing behind a fence",
            " people standing behind a fence",
            "Two",
            "_ people standing behind a fence",
            "num",
        ],
    ]
    manifest = write_manifest(root / "wl.csv", header, rows)
    ds = load_coco_manifest(DataSpec(root=str(root), manifest=str(manifest)), "coco-wl")
    assert [it.word_type for it in ds.items] == ["verb", "num"]
    assert (
        ds.items[1].word == "Two"
        and ds.items[1].context_blank == "_ people standing behind a fence"
    )
    assert all(it.mask is None for it in ds.items)
    assert ds.load_mask(ds.items[0]) is None
    assert ds.info["context_blank_rebuilt"] == 0


def test_coco100_swaps(coco):
    root, *_ = coco
    rows = [
        [
            1,
            "dog",
            "Two dogs play with a dog",
            "Two  play with a dog",
            "dogs",
            "Two _ play with a dog",
        ],
        [1, "cat", "An airplane and a Cat", "An airplane and a ", "Cat", "An airplane and a _"],
    ]
    manifest = write_manifest(root / "c100.csv", IT_HEADER + ["context_"], rows)
    ds = load_coco_manifest(DataSpec(root=str(root), manifest=str(manifest)), "coco100-it")
    assert [(it.swap_word, it.swap_caption) for it in ds.items] == [
        ("cats", "Two cats play with a dog"),
        ("dog", "An airplane and a Dog"),
    ]


def test_swap_caption_rules():
    assert swap_caption("An airplane flies over an airplane.", "airplane", "bird") == (
        "A bird flies over a bird."
    )
    assert swap_caption("A dog near a doghouse", "dog", "elephant") == (
        "An elephant near a doghouse"
    )
    assert swap_caption("Dogs and dogs", "dogs", "cats") == "Cats and cats"
    assert swap_caption("a teddy bear on a bed", "teddy bear", "doll") == "a doll on a bed"
    assert swap_partner("People ") == "monkeys" and swap_partner("giraffe") is None
    assert all(swap_partner(k) == v for k, v in SWAP_TABLE.items())


# ---------------------------------------------------------------- missing paths, bad input


def test_missing_paths_name_expected_files(coco):
    root, images, *_ = coco
    with pytest.raises(FileNotFoundError) as err:
        load_coco_manifest(DataSpec(root=str(root), manifest=str(root / "none.csv")), "coco-it")
    assert str(root / "none.csv") in str(err.value) and "COCO-IT.csv" in str(err.value)
    with pytest.raises(FileNotFoundError, match=r"COCO100-IT\.csv"):
        load_coco_manifest(DataSpec(root=str(root)), "coco100-it")
    with pytest.raises(FileNotFoundError) as err:
        load_coco_manifest(DataSpec(root=str(root), images=str(root / "img")), "coco-it")
    assert str(root / "img") in str(err.value) and "val2017.zip" in str(err.value)
    spec = DataSpec(root=str(root), annotations=str(root / "inst.json"))
    with pytest.raises(FileNotFoundError, match="annotations_trainval2017.zip"):
        load_coco_manifest(spec, "coco-it")
    # annotations defaulted and absent: loading works, the first mask request says what is missing
    (root / "annotations" / "instances_val2017.json").unlink()
    ds = load_coco_manifest(DataSpec(root=str(root)), "coco-it")
    with pytest.raises(FileNotFoundError, match=r"instances_val2017\.json.*data\.annotations"):
        ds.load_mask(ds.items[0])


def test_bad_header_and_kind(coco):
    root, *_ = coco
    bad = write_manifest(root / "bad.csv", ["id", "label", "caption"], [[1, "dog", "a dog"]])
    with pytest.raises(ValueError, match=r"expected columns \['Image ID', 'Label'"):
        load_coco_manifest(DataSpec(root=str(root), manifest=str(bad)), "coco-it")
    with pytest.raises(ValueError, match="unknown COCO manifest kind"):
        load_coco_manifest(DataSpec(root=str(root)), "coco-xx")


# ---------------------------------------------------------------- manifest builder


def test_forms_and_deletion_rules():
    assert category_forms("dog") == ("dogs", "dog")
    assert category_forms("person") == ("people", "person")
    assert category_forms("skis") == ("ski", "skis")
    assert category_forms("sheep") == ("sheep",)
    assert [plural(n) for n in ("bus", "wine glass", "bench", "giraffe", "hot dog")] == [
        "buses",
        "wine glasses",
        "benches",
        "giraffes",
        "hot dogs",
    ]
    cap = "A man skiing on a ski slope with skis"
    assert find_form(cap, category_forms("skis")) == "ski"
    assert delete_word(cap, "ski") == "A man ing on a  slope with s"
    assert delete_word(cap, "ski", fix_artifacts=True) == "A man skiing on a  slope with skis"
    assert delete_word(cap, "ski", True, "_") == "A man skiing on a _ slope with skis"
    assert find_form("Toilet and a toilet", ("toilets", "toilet")) == "toilet"  # case-sensitive


def read_csv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_build_coco_it_published_rule(coco):
    root, _, inst, caps, _ = coco
    out = root / "out" / "it.csv"
    assert build_manifest(inst, caps, out, kind="coco-it") == 3
    assert read_csv(out) == [
        IT_HEADER,
        ["1", "dog", "A dog and a dog near a doghouse", "A  and a  near a house", "dog"],
        ["1", "cat", "A cat sitting next to a hotdog.", "A  sitting next to a hotdog.", "cat"],
        ["2", "skis", CAPTIONS[2][0], "A man ing on a  slope with s", "ski"],
    ]
    # the built manifest loads back without skips
    ds = load_coco_manifest(DataSpec(root=str(root), manifest=str(out)), "coco-it")
    assert len(ds.items) == 3 and ds.skipped == []


def test_build_coco_it_fixed_rule_blank_column_and_limit(coco):
    root, _, inst, caps, _ = coco
    out = root / "fixed.csv"
    build_manifest(inst, caps, out, kind="coco-it", fix_artifacts=True, blank_column=True)
    rows = read_csv(out)
    assert rows[0] == IT_HEADER + ["context_"]
    assert rows[1][3:] == ["A  and a dog near a doghouse", "dog", "A _ and a dog near a doghouse"]
    assert rows[3][3:] == [
        "A man skiing on a  slope with skis",
        "ski",
        "A man skiing on a _ slope with skis",
    ]
    assert build_manifest(inst, caps, out, kind="coco-it", limit=1) == 2


def test_build_coco_wl_round_robin(coco):
    root, _, inst, caps, _ = coco
    out = root / "wl.csv"
    assert (
        main_build(
            [
                "--instances",
                str(inst),
                "--captions",
                str(caps),
                "--out",
                str(out),
                "--kind",
                "coco-wl",
            ]
        )
        == 0
    )
    rows = read_csv(out)
    assert rows[0] == IT_HEADER + ["context_", ""]
    assert [(r[0], r[1], r[4], r[6]) for r in rows[1:]] == [
        ("2", "standing", "standing", "verb"),
        ("1", "sitting", "sitting", "verb"),
        ("2", "two", "Two", "num"),
        ("2", "behind", "behind", "perp"),
        ("1", "next to", "next to", "perp"),
        ("1", "and", "and", "conj"),
    ]
    assert rows[3][3] == " people standing behind a fence"
    ds = load_coco_manifest(DataSpec(root=str(root), manifest=str(out)), "coco-wl")
    assert len(ds.items) == 6 and all(it.mask is None for it in ds.items)
    with pytest.raises(ValueError, match="coco-it' or 'coco-wl"):
        build_manifest(inst, caps, out, kind="coco100-it")
    with pytest.raises(FileNotFoundError, match="captions_val2017.json"):
        build_manifest(inst, root / "nope.json", out)


# ---------------------------------------------------------------- published manifests


def reference_dir() -> Path | None:
    env = os.environ.get("INFODECOMP_REFERENCE")
    candidates = [Path(env), Path(env) / "info-decomp"] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared/reference/info-decomp")
    for c in candidates:
        if (c / "COCO-IT.csv").is_file():
            return c
    return None


PUBLISHED = [
    ("coco-it", "COCO-IT.csv", 6927),
    ("coco100-it", "COCO100-IT.csv", 100),
    ("coco-wl", "COCO-WL.csv", 70),
]


@pytest.mark.parametrize("kind,filename,n_rows", PUBLISHED)
def test_published_manifest_parses(tmp_path, kind, filename, n_rows):
    ref = reference_dir()
    if ref is None:
        pytest.skip("published manifests not found (set INFODECOMP_REFERENCE)")
    rows = read_csv(ref / filename)[1:]
    assert len(rows) == n_rows  # 6,927 records; the file has more lines (quoted newlines)
    for image_id in {int(r[0]) for r in rows}:
        (tmp_path / f"{image_id:012d}.jpg").touch()
    ds = load_coco_manifest(DataSpec(manifest=str(ref / filename), images=str(tmp_path)), kind)
    assert ds.skipped == [] and len(ds.items) == n_rows
    assert len({it.item_id for it in ds.items}) == n_rows
    if kind == "coco-wl":
        assert Counter(it.word_type for it in ds.items) == {
            t: 10 for t in ("verb", "num", "adj", "adv", "perp", "pronoun", "conj")
        }
        assert all(it.mask is None for it in ds.items)
    if kind == "coco100-it":
        assert all(it.swap_word and it.swap_caption != it.caption for it in ds.items)
    if kind == "coco-it":
        assert all("_" in it.context_blank for it in ds.items)
        # the builder's selection and deletion rules reproduce every published row
        for r in rows:
            assert find_form(r[2], category_forms(r[1])) == r[4]
            assert delete_word(r[2], r[4]) == r[3]


def test_manifest_layouts_rows_and_quoting_are_checked_with_the_line_named(coco):
    root, *_ = coco
    spec = lambda m: DataSpec(root=str(root), manifest=str(m))  # noqa: E731
    # two extra named columns: an unknown layout, refused (no column is reinterpreted)
    extra = write_manifest(root / "x.csv", IT_HEADER + ["context_", "", "extra"], [])
    with pytest.raises(ValueError, match="found .*'extra'.*known layouts"):
        load_coco_manifest(spec(extra), "coco-wl")
    # a row with more fields than the header is skipped with its line, the others load
    rows = [IT_ROWS[0], IT_ROWS[1][:5] + ["x", "verb"], [1, "cat", "", "", "cat"]]
    mixed = write_manifest(root / "m.csv", IT_HEADER, rows)
    ds = load_coco_manifest(spec(mixed), "coco-it")
    assert [it.item_id for it in ds.items] == ["1-dog-0"]
    reasons = [s.reason for s in ds.skipped]
    assert "m.csv line 3: 7 fields, the header has 5" in reasons[0]
    assert "m.csv line 4: empty caption" in reasons[1]
    # COCO-WL as the builder writes it without context_: the word type is the unnamed column
    wl = write_manifest(
        root / "wl.csv",
        IT_HEADER + [""],
        [[2, "two", "Two people standing", " people standing", "Two", "num"]],
    )
    (item,) = load_coco_manifest(spec(wl), "coco-wl").items
    assert item.word_type == "num" and item.context_blank == "_ people standing"
    # an unbalanced quote would swallow the later rows: refused, naming the line it starts on
    text = (root / "COCO-IT.csv").read_text().splitlines()
    text[2] = text[2].replace("A  cat", '"A  cat', 1)
    (root / "q.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(
        ValueError, match="q.csv: CSV quoting error in the record starting at line 3"
    ):
        load_coco_manifest(spec(root / "q.csv"), "coco-it")


def test_bad_annotation_records_are_mask_errors_naming_the_annotation(coco):
    root, _, inst, *_ = coco
    data = json.loads(inst.read_text())
    data["annotations"][2]["segmentation"] = None  # the cat of image 1
    inst.write_text(json.dumps(data))
    masks = CocoMasks(inst)
    with pytest.raises(MaskLoadError, match=r"annotation 3 \('cat' in image 1\).*unreadable"):
        masks.mask(1, "cat")
    assert int(masks.mask(1, "dog").sum()) == 44  # the other records still load

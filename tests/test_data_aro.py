"""ARO loaders (files and frozen Hugging Face copies), image reading and bbox crops, path errors.

Fixtures are written in the benchmark's real formats into tmp_path by the helpers below.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infodecomp.data.aro import (
    load_coco_order,
    load_flickr_order,
    load_vg_attribution,
    load_vg_relation,
)
from infodecomp.data.errors import require_path
from infodecomp.data.images import crop_to_bbox, load_image
from infodecomp.data.records import ImageLoadError, ImageRef
from infodecomp.data.spec import DataSpec


def gradient(width: int, height: int) -> Image.Image:
    """RGB image whose pixel (x, y) is (x, y, 100): crops can be checked exactly."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[..., 0] = np.arange(width)[None, :]
    arr[..., 1] = np.arange(height)[:, None]
    arr[..., 2] = 100
    return Image.fromarray(arr)


def write_vg(root: Path, subset: str = "relation") -> list[dict]:
    """visual_genome_{subset}.json with three records (the third image missing) + images/."""
    (root / "images").mkdir(parents=True)
    gradient(40, 30).save(root / "images" / "1.png")
    gradient(64, 48).save(root / "images" / "2.jpg", quality=95)
    recs = [
        {
            "image_path": "1.png",
            "bbox_x": 10,
            "bbox_y": 5,
            "bbox_w": 20,
            "bbox_h": 15,
            "true_caption": "the dog is beside the man",
            "false_caption": "the man is beside the dog",
        },
        {
            "image_path": "2.jpg",
            "bbox_x": 30.4,
            "bbox_y": 20.6,
            "bbox_w": 100,
            "bbox_h": 100,
            "true_caption": "the cup is on the table",
            "false_caption": "the table is on the cup",
        },
        {
            "image_path": "3.jpg",
            "bbox_x": 0,
            "bbox_y": 0,
            "bbox_w": 5,
            "bbox_h": 5,
            "true_caption": "the hat is on the man",
            "false_caption": "the man is on the hat",
        },
    ]
    for rec, rel, attrs in zip(recs, ["beside", "on", "on"], [["red", "white"]] * 3, strict=True):
        if subset == "relation":
            rec["relation_name"] = rel
        else:
            rec["attributes"] = attrs
    (root / f"visual_genome_{subset}.json").write_text(json.dumps(recs))
    return recs


def write_karpathy(root: Path, filename: str, image_prefix: str) -> None:
    """A Karpathy-format test file: two images, 2 + 1 captions; the second image is missing."""
    (root / image_prefix).mkdir(parents=True)
    gradient(32, 24).save(root / image_prefix / "a.jpg")
    recs = [
        {
            "image": f"{image_prefix}/a.jpg",
            "caption": ["A black dog chases a small ball.", "The man rides a red horse."],
        },
        {"image": f"{image_prefix}/missing.jpg", "caption": ["A dog is in the park."]},
    ]
    (root / filename).write_text(json.dumps(recs))


TAGS = {"a": "DT", "the": "DT", "black": "JJ", "small": "JJ", "red": "JJ", "chases": "VBZ",
        "rides": "VBZ", ".": "."}  # fmt: skip


def tagger(words):
    return [TAGS.get(w.lower(), "NN") for w in words]


# ---------------------------------------------------------------- images


def test_bbox_crop_exact_pixels(tmp_path):
    gradient(40, 30).save(tmp_path / "g.png")
    img = load_image(ImageRef(str(tmp_path / "g.png"), (10, 5, 20, 15)))
    assert img.mode == "RGB" and img.size == (20, 15)
    arr = np.asarray(img)
    assert tuple(arr[0, 0]) == (10, 5, 100)
    assert tuple(arr[14, 19]) == (29, 19, 100)


def test_bbox_leaving_the_image_is_padded_black_like_aro(tmp_path):
    """Default crop = ARO's `image.crop((x, y, x + w, y + h))`: the box keeps its size."""
    gradient(40, 30).save(tmp_path / "g.png")
    box = (30.4, 20.6, 100, 100)
    img = load_image(ImageRef(str(tmp_path / "g.png"), box))
    assert img.size == (100, 100)  # corners rounded: x 30..130, y 21..121
    arr = np.asarray(img)
    assert tuple(arr[0, 0]) == (30, 21, 100) and tuple(arr[8, 9]) == (39, 29, 100)
    assert (arr[9:, :] == 0).all() and (arr[:, 10:] == 0).all()  # outside the image: black
    aro = gradient(40, 30).crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
    assert np.array_equal(arr, np.asarray(aro))  # the same pixels as ARO's own crop
    img = load_image(ImageRef(str(tmp_path / "g.png"), (-5, -5, 10, 10)))
    arr = np.asarray(img)
    assert img.size == (10, 10) and (arr[:5, :] == 0).all() and (arr[:, :5] == 0).all()
    assert tuple(arr[5, 5]) == (0, 0, 100)
    with pytest.raises(ImageLoadError, match="wholly outside image g of size 40x30"):
        crop_to_bbox(gradient(40, 30), (50, 50, 5, 5), "g")  # not a black image (issue 27)
    with pytest.raises(ImageLoadError, match="empty"):
        crop_to_bbox(gradient(40, 30), (5, 5, 0, 3), "g")


def test_bbox_is_rounded_and_clamped_on_request(tmp_path):
    gradient(40, 30).save(tmp_path / "g.png")
    img = load_image(ImageRef(str(tmp_path / "g.png"), (30.4, 20.6, 100, 100)), crop="clamp")
    assert img.size == (10, 9)  # x 30..40, y 21..30
    assert tuple(np.asarray(img)[0, 0]) == (30, 21, 100)
    img = load_image(ImageRef(str(tmp_path / "g.png"), (-5, -5, 10, 10)), crop="clamp")
    assert img.size == (5, 5) and tuple(np.asarray(img)[0, 0]) == (0, 0, 100)
    with pytest.raises(ImageLoadError, match="outside image"):
        crop_to_bbox(gradient(40, 30), (50, 50, 5, 5), "g", mode="clamp")
    with pytest.raises(ValueError, match="data.crop=trim is not one of pad, clamp"):
        crop_to_bbox(gradient(40, 30), (0, 0, 5, 5), "g", mode="trim")
    with pytest.raises(ValueError, match="data.crop=trim"):
        DataSpec(crop="trim")


def test_whole_image_is_rgb(tmp_path):
    Image.new("L", (7, 5), 3).save(tmp_path / "gray.png")
    img = load_image(ImageRef(str(tmp_path / "gray.png")))
    assert img.mode == "RGB" and img.size == (7, 5)


def test_corrupt_truncated_and_missing_images(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        load_image(ImageRef(str(bad)))
    gradient(64, 64).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match=r"(?i)cut\.jpg.*truncated"):
        load_image(ImageRef(str(tmp_path / "cut.jpg")))
    with pytest.raises(ImageLoadError, match="not found.*nope.jpg"):
        load_image(ImageRef(str(tmp_path / "nope.jpg")))


def test_require_path_message(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        require_path(missing, "ARO folder", ["a.json", "images/"], "the moon", setting="data.root")
    msg = str(err.value)
    assert str(missing) in msg and "a.json, images/" in msg and "the moon" in msg
    assert "data.root" in msg
    with pytest.raises(FileNotFoundError, match="no path given"):
        require_path(None, "ARO folder", ["a.json"], "the moon")
    assert require_path(tmp_path, "x", [], "y") == tmp_path


# ---------------------------------------------------------------- VG from files


def test_vg_relation_items_and_crops(tmp_path):
    write_vg(tmp_path, "relation")
    ds = load_vg_relation(DataSpec(name="aro-vg-relation", root=str(tmp_path)))
    assert [it.item_id for it in ds.items] == ["vgr-0", "vgr-1"]
    assert [s.item_id for s in ds.skipped] == ["vgr-2"]
    assert "3.jpg" in ds.skipped[0].reason
    first = ds.items[0]
    assert first.options == ("the man is beside the dog", "the dog is beside the man")
    assert first.label == 1 and first.group == "beside" and first.subset == "vg-relation"
    assert first.image.bbox == (10.0, 5.0, 20.0, 15.0)
    img = ds.load_image(first)
    assert img.size == (20, 15) and tuple(np.asarray(img)[0, 0]) == (10, 5, 100)
    assert ds.load_image(ds.items[1]).size == (100, 100)  # ARO's crop: padded with black
    assert ds.info["crop"] == "pad"
    clamped = load_vg_relation(DataSpec(root=str(tmp_path), crop="clamp"))
    assert clamped.load_image(clamped.items[1]).size == (34, 27)  # clamped to the 64x48 image
    # ids are positions in the file: loading twice gives the same ids
    again = load_vg_relation(DataSpec(root=str(tmp_path)))
    assert [it.item_id for it in again.items] == ["vgr-0", "vgr-1"]


def test_vg_attribution_groups(tmp_path):
    write_vg(tmp_path, "attribution")
    ds = load_vg_attribution(DataSpec(root=str(tmp_path)))
    assert [it.group for it in ds.items] == ["red_white", "red_white"]
    assert ds.items[0].item_id == "vga-0" and ds.items[0].label == 1


def test_vg_bad_attributes_and_missing_fields(tmp_path):
    recs = write_vg(tmp_path, "attribution")
    recs[0]["attributes"] = ["red"]
    (tmp_path / "visual_genome_attribution.json").write_text(json.dumps(recs))
    ds = load_vg_attribution(DataSpec(root=str(tmp_path)))  # that record is skipped, named
    assert [it.item_id for it in ds.items] == ["vga-1"]
    reasons = {s.item_id: s.reason for s in ds.skipped}
    assert "list of two strings" in reasons["vga-0"] and "record 0" in reasons["vga-0"]
    del recs[0]["true_caption"]
    (tmp_path / "visual_genome_attribution.json").write_text(json.dumps(recs))
    with pytest.raises(ValueError, match=r"missing fields \['true_caption'\]"):
        load_vg_attribution(DataSpec(root=str(tmp_path)))


def test_vg_missing_paths_name_the_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_vg_relation(DataSpec(root=str(tmp_path / "aro")))
    msg = str(err.value)
    assert str(tmp_path / "aro") in msg
    assert "visual_genome_relation.json" in msg and "images/" in msg and "git clone" in msg
    (tmp_path / "aro").mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotation file not found: .*visual_genome_rel"):
        load_vg_relation(DataSpec(root=str(tmp_path / "aro")))
    (tmp_path / "aro" / "visual_genome_relation.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match=r"image folder not found: .*images"):
        load_vg_relation(DataSpec(root=str(tmp_path / "aro")))
    with pytest.raises(FileNotFoundError, match="no path given.*data.root"):
        load_vg_relation(DataSpec(root=None))


# ---------------------------------------------------------------- Order tasks from files


def test_coco_order_items(tmp_path):
    write_karpathy(tmp_path, "coco_karpathy_test.json", "val2014")
    ds = load_coco_order(DataSpec(root=str(tmp_path), seed=1), tagger=tagger)
    assert [it.item_id for it in ds.items] == ["coco-order-0-0", "coco-order-0-1"]
    assert [s.item_id for s in ds.skipped] == ["coco-order-1-0"]
    item = ds.items[0]
    assert item.label == 0 and item.group == "coco-order" and len(item.options) == 5
    assert item.options[0] == "a black dog chases a small ball"
    assert sorted(item.options[4].split()) == sorted(item.options[0].split())
    assert ds.load_image(item).size == (32, 24)  # whole image, no crop
    again = load_coco_order(DataSpec(root=str(tmp_path), seed=1), tagger=tagger)
    assert [it.options for it in again.items] == [it.options for it in ds.items]


def test_coco_order_separate_image_root(tmp_path):
    write_karpathy(tmp_path / "coco", "coco_karpathy_test.json", "val2014")
    ann = tmp_path / "ann"
    ann.mkdir()
    (tmp_path / "coco" / "coco_karpathy_test.json").rename(ann / "coco_karpathy_test.json")
    ds = load_coco_order(DataSpec(root=str(ann), images=str(tmp_path / "coco")), tagger=tagger)
    assert len(ds.items) == 2


@pytest.mark.parametrize("filename", ["flickr30k_test.json", "flickr30k_test_karpathy.json"])
def test_flickr_order_file_names(tmp_path, filename):
    write_karpathy(tmp_path, filename, "flickr30k-images")
    ds = load_flickr_order(DataSpec(root=str(tmp_path)), tagger=tagger)
    assert [it.item_id for it in ds.items] == ["flickr-order-0-0", "flickr-order-0-1"]
    assert ds.items[1].options[0] == "the man rides a red horse"
    assert ds.items[1].group == "flickr-order"


def test_order_missing_file_and_missing_tagger(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        load_flickr_order(DataSpec(root=str(tmp_path)), tagger=tagger)
    msg = str(err.value)
    assert "flickr30k_test.json" in msg and "flickr30k_test_karpathy.json" in msg
    assert str(tmp_path) in msg
    write_karpathy(tmp_path, "coco_karpathy_test.json", "val2014")
    monkeypatch.setitem(sys.modules, "nltk", None)
    with pytest.raises(ImportError, match=r"pip install 'infodecomp\[pos\]'"):
        load_coco_order(DataSpec(root=str(tmp_path)))


# ---------------------------------------------------------------- frozen Hugging Face copies


def _save_hf(path: Path, columns: dict, split: str | None = None) -> str:
    import datasets

    image_col = "images" if "images" in columns else "image"
    table = datasets.Dataset.from_dict(columns).cast_column(image_col, datasets.Image())
    if split:
        table = datasets.DatasetDict({split: table})
    table.save_to_disk(str(path))
    return str(path)


def test_hf_vg_relation_from_disk(tmp_path):
    folder = _save_hf(
        tmp_path / "vgr",
        {
            "image": [gradient(40, 30), gradient(16, 8)],
            "true_caption": ["the dog is beside the man", "the cup is on the table"],
            "false_caption": ["the man is beside the dog", "the table is on the cup"],
            "relation_name": ["beside", "on"],
            # the hub copy stores bbox as a struct {x, y, w, h}
            "bbox": [
                {"x": 10.0, "y": 5.0, "w": 20.0, "h": 15.0},
                {"x": 0, "y": 0, "w": 16, "h": 8},
            ],
        },
    )
    ds = load_vg_relation(DataSpec(source="hf", hf_name=folder))
    assert [it.item_id for it in ds.items] == ["vgr-hf-0", "vgr-hf-1"]
    assert ds.items[0].options == ("the man is beside the dog", "the dog is beside the man")
    assert ds.items[0].label == 1 and ds.items[1].group == "on"
    img = ds.load_image(ds.items[0])
    assert isinstance(img, Image.Image) and img.size == (20, 15)
    assert tuple(np.asarray(img)[0, 0]) == (10, 5, 100)
    assert ds.info["source"] == "hf"


def test_hf_vg_attribution_split_and_bbox_columns(tmp_path):
    folder = _save_hf(
        tmp_path / "vga",
        {
            "image": [gradient(40, 30)],
            "true_caption": ["the red fence and the white mane"],
            "false_caption": ["the white fence and the red mane"],
            "attributes": [["red", "white"]],
            "bbox_x": [1],
            "bbox_y": [2],
            "bbox_w": [3],
            "bbox_h": [4],
        },
        split="test",
    )
    ds = load_vg_attribution(DataSpec(source="hf", hf_name=folder))
    assert ds.items[0].group == "red_white"
    img = ds.load_image(ds.items[0])
    assert img.size == (3, 4) and tuple(np.asarray(img)[0, 0]) == (1, 2, 100)


def test_hf_coco_order_and_column_check(tmp_path):
    cols = {
        "images": [gradient(12, 10)],  # the hub copies name this column "images"
        "correct_caption": ["A dog on a bench."],
        "hard_text_1": ["a bench on a dog"],
        "hard_text_2": ["dog a on a bench"],
        "hard_text_3": ["on a dog a bench"],
        "hard_text_4": ["a bench a dog on"],
    }
    ds = load_coco_order(DataSpec(source="hf", hf_name=_save_hf(tmp_path / "co", cols)))
    item = ds.items[0]
    assert item.item_id == "coco-order-hf-0" and item.label == 0
    assert item.options == (
        "a dog on a bench",
        "a bench on a dog",
        "dog a on a bench",
        "on a dog a bench",
        "a bench a dog on",
    )
    assert ds.load_image(item).size == (12, 10)
    del cols["hard_text_4"]
    folder = _save_hf(tmp_path / "bad", cols)
    with pytest.raises(ValueError) as err:
        load_flickr_order(DataSpec(source="hf", hf_name=folder))
    msg = str(err.value)
    assert "lacks columns ['hard_text_4']" in msg and "found ['images', 'correct_caption'" in msg


def test_hf_vg_without_image_column(tmp_path):
    import datasets

    folder = tmp_path / "noimg"
    datasets.Dataset.from_dict(
        {"true_caption": ["a"], "false_caption": ["b"], "relation_name": ["on"]}
    ).save_to_disk(str(folder))
    with pytest.raises(ValueError, match=r"lacks columns \['image or images'\]"):
        load_vg_relation(DataSpec(source="hf", hf_name=str(folder)))


# ---------------------------------------------------------------- bad input, named


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    from infodecomp.data.images import to_rgb

    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    img = load_image(ImageRef(str(tmp_path / "g16.png")))
    assert img.mode == "RGB"
    assert np.asarray(img)[0, :, 0].tolist() == [0, 1, 128, 255]  # v / 257, not min(v, 255)
    assert (np.asarray(img)[..., 0] == np.asarray(img)[..., 2]).all()
    flt = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(flt, "f"))[0, :, 1].tolist() == [0, 128, 255]
    with pytest.raises(ImageLoadError, match=r"mode F with values in \[0, 3\]"):
        to_rgb(Image.fromarray(np.array([[0.0, 3.0]], dtype=np.float32)), "f")
    with pytest.raises(ImageLoadError, match="mode La has no RGB conversion"):
        to_rgb(Image.new("La", (2, 2)), "x")


def test_decompression_bomb_is_an_image_error_and_a_missing_file_is_transient(
    tmp_path, monkeypatch
):
    gradient(40, 30).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses over 2x the limit
    with pytest.raises(
        ImageLoadError, match="big.png is larger than PIL's decompression-bomb"
    ) as err:
        load_image(ImageRef(str(tmp_path / "big.png")))
    assert err.value.transient is False  # the file will not change by itself
    with pytest.raises(ImageLoadError) as err:
        load_image(ImageRef(str(tmp_path / "gone.png")))
    assert err.value.transient is True


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("bbox_x", None, "bbox_x is None, not a number"),
        ("bbox_w", "wide", "bbox_w is 'wide', not a number"),
        ("bbox_y", float("nan"), "bbox_y is nan, not a finite number"),
        ("bbox_h", 0, "width and height must be > 0"),
        ("true_caption", None, "true_caption is None, not a caption"),
        ("false_caption", "  ", "false_caption is '  ', not a caption"),
        ("image_path", None, "image_path is None"),
    ],
)
def test_vg_bad_record_fields_are_skipped_with_the_record_named(tmp_path, field, value, reason):
    recs = write_vg(tmp_path, "relation")
    recs[1][field] = value
    (tmp_path / "visual_genome_relation.json").write_text(json.dumps(recs))
    ds = load_vg_relation(DataSpec(root=str(tmp_path)))
    assert [it.item_id for it in ds.items] == ["vgr-0"]
    reasons = {s.item_id: s.reason for s in ds.skipped}
    assert reason in reasons["vgr-1"] and "record 1" in reasons["vgr-1"]


def test_order_null_and_empty_captions_are_skipped(tmp_path):
    write_karpathy(tmp_path, "coco_karpathy_test.json", "val2014")
    path = tmp_path / "coco_karpathy_test.json"
    recs = json.loads(path.read_text())
    recs[0]["caption"] = ["A black dog chases a small ball.", None, ""]
    path.write_text(json.dumps(recs))
    ds = load_coco_order(DataSpec(root=str(tmp_path)), tagger=tagger)
    assert [it.item_id for it in ds.items] == ["coco-order-0-0"]
    reasons = {s.item_id: s.reason for s in ds.skipped}
    assert "caption 1 is None, not text" in reasons["coco-order-0-1"]
    assert "caption 2 is '', not text" in reasons["coco-order-0-2"]


def test_hf_null_bbox_is_skipped_with_the_row_named(tmp_path):
    folder = _save_hf(
        tmp_path / "vga",
        {
            "image": [gradient(40, 30), gradient(40, 30)],
            "true_caption": ["the red fence and the white mane"] * 2,
            "false_caption": ["the white fence and the red mane"] * 2,
            "attributes": [["red", "white"]] * 2,
            "bbox_x": [1, None],
            "bbox_y": [2, 2],
            "bbox_w": [3, 3],
            "bbox_h": [4, 4],
        },
    )
    ds = load_vg_attribution(DataSpec(source="hf", hf_name=folder))
    assert [it.item_id for it in ds.items] == ["vga-hf-0"]
    assert "row 1" in ds.skipped[0].reason and "bbox" in ds.skipped[0].reason


# ---------------------------------------------------------------- hub snapshots and revisions

VGR_COLUMNS = {
    "image": [gradient(40, 30), gradient(16, 8)],
    "true_caption": ["the dog is beside the man", "the cup is on the table"],
    "false_caption": ["the man is beside the dog", "the table is on the cup"],
    "relation_name": ["beside", "on"],
    "bbox": [{"x": 10.0, "y": 5.0, "w": 20.0, "h": 15.0}, {"x": 0, "y": 0, "w": 16, "h": 8}],
}


def _write_parquet(path: Path, columns: dict) -> None:
    import datasets

    image_col = "images" if "images" in columns else "image"
    table = datasets.Dataset.from_dict(columns).cast_column(image_col, datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(path))


@pytest.mark.parametrize(
    "shards",
    [
        ["data/test-00000-of-00002.parquet", "data/test-00001-of-00002.parquet"],  # hub layout
        ["default/test/0000.parquet"],  # the parquet-converter's layout
    ],
)
def test_hf_hub_snapshot_of_parquet_files_loads_like_save_to_disk(tmp_path, shards):
    snap = tmp_path / "snapshots" / ("ab" * 20)
    for k, shard in enumerate(shards):  # rows split across the shards, in order
        part = {c: v[k :: len(shards)] if len(shards) > 1 else v for c, v in VGR_COLUMNS.items()}
        _write_parquet(snap / shard, part)
    (snap / ".cache").mkdir()  # the hub client's own metadata folder is ignored
    _write_parquet(snap / ".cache" / "junk.parquet", {"image": [gradient(2, 2)]})
    ds = load_vg_relation(DataSpec(source="hf", hf_name=str(snap)))
    saved = load_vg_relation(
        DataSpec(source="hf", hf_name=_save_hf(tmp_path / "saved", VGR_COLUMNS))
    )
    assert [it.options for it in ds.items] == [it.options for it in saved.items]
    assert [it.group for it in ds.items] == ["beside", "on"]
    img = ds.load_image(ds.items[0])
    assert img.size == (20, 15) and tuple(np.asarray(img)[0, 0]) == (10, 5, 100)
    assert ds.info["layout"] == "parquet snapshot" and saved.info["layout"] == "save_to_disk"
    assert ds.info["revision"] == "ab" * 20  # read from the hub cache's snapshots/<commit>
    assert saved.info["revision"] is None and saved.info["hf_name"] == str(tmp_path / "saved")


def test_hf_folder_without_a_copy_says_what_it_expects(tmp_path):
    (tmp_path / "empty" / "data").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as err:
        load_vg_relation(DataSpec(source="hf", hf_name=str(tmp_path / "empty")))
    msg = str(err.value)
    assert "neither a save_to_disk copy" in msg and "test-00000-of-00001.parquet" in msg
    assert "huggingface-cli download" in msg and "\n" not in msg


class _FakeHub:
    """Stands in for datasets.load_dataset: records the call, returns a tiny DatasetDict."""

    def __init__(self, columns=None, error=None):
        self.calls, self.columns, self.error = [], columns, error

    def __call__(self, name, revision=None, **kw):
        import datasets

        self.calls.append((name, revision))
        if self.error:
            raise self.error
        table = datasets.Dataset.from_dict(self.columns).cast_column("image", datasets.Image())
        return datasets.DatasetDict({"test": table})


def test_hf_hub_ids_are_pinned_and_recorded(monkeypatch):
    import datasets

    from infodecomp.data.aro import HF_DEFAULTS, HF_REVISIONS

    hub = _FakeHub(VGR_COLUMNS)
    monkeypatch.setattr(datasets, "load_dataset", hub)
    ds = load_vg_relation(DataSpec(source="hf"))
    assert hub.calls[-1] == (HF_DEFAULTS["vg-relation"], HF_REVISIONS["vg-relation"])
    assert ds.info == {
        "subset": "vg-relation",
        "source": "hf",
        "hf_name": "gowitheflow/ARO-Visual-Relation",
        "revision": "3867ad4f46a1ac2e63be034d1fc77dd8c2ef7209",
        "layout": "hub",
        "crop": "pad",
    }
    load_vg_relation(DataSpec(source="hf", revision="main"))
    assert hub.calls[-1] == (HF_DEFAULTS["vg-relation"], "main")
    load_vg_relation(DataSpec(source="hf", hf_name="someone/vg-copy"))
    assert hub.calls[-1] == ("someone/vg-copy", None)  # other ids: latest unless data.revision
    assert all(len(r) == 40 for r in HF_REVISIONS.values()) and set(HF_REVISIONS) == set(
        HF_DEFAULTS
    )


def test_hf_hub_unreachable_is_one_line_with_the_fix(monkeypatch):
    import datasets

    monkeypatch.setattr(
        datasets, "load_dataset", _FakeHub(error=ConnectionError("Couldn't reach the Hub\nmore"))
    )
    with pytest.raises(FileNotFoundError) as err:
        load_coco_order(DataSpec(source="hf"))
    msg = str(err.value)
    assert "\n" not in msg and "Couldn't reach the Hub" in msg
    assert "gowitheflow/ARO-COCO-order at revision 853ec875" in msg
    assert "--revision 853ec8757226585a38a80886c51fe0f3f268787c --local-dir" in msg
    assert "data.hf_name=<folder>" in msg


def test_hf_vg_attribution_other_column_names_fail_listing_them(tmp_path):
    # The hub copy's VG-Attribution column names are not known for sure: a copy that names the
    # attribute pair differently fails with the columns it does have.
    folder = _save_hf(
        tmp_path / "vga",
        {
            "image": [gradient(4, 4)],
            "true_caption": ["the red fence"],
            "false_caption": ["the white fence"],
            "attribute_pair": [["red", "white"]],
        },
    )
    with pytest.raises(ValueError) as err:
        load_vg_attribution(DataSpec(source="hf", hf_name=folder))
    msg = str(err.value)
    assert "lacks columns ['attributes']" in msg
    assert "found ['image', 'true_caption', 'false_caption', 'attribute_pair']" in msg

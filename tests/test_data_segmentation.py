"""ImageNet-Segmentation (gtsegs_ijcv.mat) and PascalVOC 2012 segmentation loaders on fixtures
in the published formats (tests/segmentation_fixtures.py)."""

from __future__ import annotations

import numpy as np
import pytest
from segmentation_fixtures import voc_cases, write_class_map, write_gtsegs, write_voc

from infodecomp.data.errors import DataError, MissingDataError
from infodecomp.data.registry import load_dataset
from infodecomp.data.segmentation import load_labels, load_target, present_classes
from infodecomp.data.spec import DataSpec


@pytest.fixture
def gtsegs(tmp_path):
    pytest.importorskip("h5py", reason="data=imagenet-seg needs h5py (a dependency)")
    return write_gtsegs(tmp_path / "imnet")


def test_imagenet_seg_reads_the_matlab_layout(gtsegs, tmp_path) -> None:
    words = write_class_map(tmp_path / "map.json", {"n02084071": "dog", "n02121808": "cat"})
    ds = load_dataset(DataSpec("imagenet-seg", root=str(gtsegs["path"].parent),
                               annotations=str(words)))  # fmt: skip
    assert [(it.item_id, it.word, it.caption, it.context) for it in ds.items] == [
        ("0000", "dog", "dog", ""),
        ("0001", "cat", "cat", ""),
    ]
    assert ds.items[0].extra["prompt"] == "a dog" and not ds.items[0].extra["captioned"]
    for it, rgb, mask in zip(ds.items, gtsegs["images"], gtsegs["masks"], strict=True):
        # non-square images: a missing transpose of MATLAB's column-major arrays shows here
        assert np.array_equal(np.asarray(ds.load_image(it)), rgb)
        assert np.array_equal(ds.load_mask(it).numpy(), mask)
        obj, void = load_target(it)
        assert np.array_equal(obj, mask) and void is None
    assert ds.info["segmentation"] == "imagenet-seg" and ds.info["images"] == 2


def test_imagenet_seg_root_may_be_the_file_and_an_unmapped_synset_is_skipped(
    gtsegs, tmp_path
) -> None:
    words = write_class_map(tmp_path / "map.json", {"n02084071": "dog"})
    ds = load_dataset(DataSpec("imagenet-seg", root=str(gtsegs["path"]), annotations=str(words)))
    assert [it.word for it in ds.items] == ["dog"]
    assert ds.skipped[0].item_id == "0001" and "n02121808" in ds.skipped[0].reason


def test_imagenet_seg_published_lemma_map_needs_wordnet(gtsegs, tmp_path) -> None:
    words = write_class_map(tmp_path / "map.json", {"categories": {"dog": "dog"}})
    spec = DataSpec("imagenet-seg", root=str(gtsegs["path"]), annotations=str(words))
    try:
        from nltk.corpus import wordnet

        wordnet.synsets("dog")
    except (ImportError, LookupError):
        with pytest.raises(DataError, match="nltk"):
            load_dataset(spec)
    else:  # WordNet present: the lemma of n02084071 is "dog"
        assert [it.word for it in load_dataset(spec).items] == ["dog"]


def test_imagenet_seg_missing_file_names_it_and_its_source(tmp_path) -> None:
    with pytest.raises(MissingDataError, match="gtsegs_ijcv.mat.*Guillaumin"):
        load_dataset(DataSpec("imagenet-seg", root=str(tmp_path)))
    with pytest.raises(MissingDataError, match="no path given.*data.root"):
        load_dataset(DataSpec("imagenet-seg"))


def test_present_classes_are_found_after_the_published_resize() -> None:
    horse = voc_cases()["2007_000003"]
    assert set(np.unique(horse)) == {0, 5, 13}
    assert present_classes(horse) == [13]  # the bottle pixel is no 224-grid sample
    assert present_classes(voc_cases()["2007_000001"]) == [8]  # void is no class


def test_voc_single_class_split(tmp_path) -> None:
    write_voc(tmp_path)
    ds = load_dataset(DataSpec("voc-seg", root=str(tmp_path)))
    assert [(it.item_id, it.word) for it in ds.items] == [
        ("2007_000001", "cat"),
        ("2007_000003", "horse"),
    ]
    assert ds.info["not_in_subset"] == 2 and ds.info["segmentation"] == "voc-single"
    cat = ds.items[0]
    obj, void = load_target(cat)
    labels = voc_cases()["2007_000001"]
    assert np.array_equal(obj, labels == 8) and np.array_equal(void, labels == 255)
    assert np.array_equal(ds.load_mask(cat).numpy(), labels == 8)
    # the single-class target is every object pixel: the dropped bottle pixel counts too
    assert load_target(ds.items[1])[0][0, 0]
    assert ds.load_image(cat).size == (80, 60)


def test_voc_multi_class_items_one_per_image(tmp_path) -> None:
    """data.classes=multi: every val image one item, its classes found on the 64 x 64 labels of
    the published multi-class script (the horse image's 1-pixel bottle is not), its caption the
    published "a dog,a person"; an image without a class is an item too (all background)."""
    write_voc(tmp_path / "VOC")
    ds = load_dataset(DataSpec("voc-seg", root=str(tmp_path / "VOC"), classes="multi"))
    got = [(it.item_id, it.word, it.caption, it.extra["classes"]) for it in ds.items]
    assert got == [
        ("2007_000001", "cat", "a cat", [8]),
        ("2007_000002", "dog,person", "a dog,a person", [12, 15]),
        ("2007_000003", "horse", "a horse", [13]),
        ("2007_000004", "", "", []),
    ]
    assert {it.extra["segmentation"] for it in ds.items} == {"voc-multi"}
    assert np.array_equal(load_labels(ds.items[1]), voc_cases()["2007_000002"])
    # fault: classes found at full resolution would add the bottle (5) to the horse image
    assert 5 in np.unique(voc_cases()["2007_000003"])


def test_voc_per_class_items_per_present_class(tmp_path) -> None:
    write_voc(tmp_path / "VOC")
    ds = load_dataset(DataSpec("voc-seg", root=str(tmp_path / "VOC" / "VOCdevkit"),
                               classes="per-class"))  # fmt: skip
    assert [it.item_id for it in ds.items] == [
        "2007_000001/cat",
        "2007_000002/dog",
        "2007_000002/person",
        "2007_000003/horse",
    ]
    person = ds.items[2]
    obj, _ = load_target(person)
    assert np.array_equal(obj, voc_cases()["2007_000002"] == 15)
    assert person.extra["segmentation"] == "voc-per-class"


def test_voc_bad_label_image_is_skipped_and_missing_tree_names_the_files(tmp_path) -> None:
    voc = write_voc(tmp_path)
    (voc / "SegmentationClass" / "2007_000002.png").write_bytes(b"not a png")
    ds = load_dataset(DataSpec("voc-seg", root=str(voc), classes="per-class"))
    assert [s.item_id for s in ds.skipped] == ["2007_000002"]
    with pytest.raises(MissingDataError, match="val.txt.*VOCtrainval_11-May-2012"):
        load_dataset(DataSpec("voc-seg", root=str(tmp_path / "nothing")))


def test_classes_option_is_refused_elsewhere_and_checked() -> None:
    with pytest.raises(ValueError, match="data.classes=multi chooses PascalVOC"):
        load_dataset(DataSpec("shapes-localize", classes="multi", size=2))
    with pytest.raises(ValueError, match="data.classes=both is not one of single, multi, per-c"):
        DataSpec("voc-seg", classes="both")


def test_path_settings_the_sets_do_not_read_are_refused(tmp_path) -> None:
    write_voc(tmp_path)
    with pytest.raises(DataError, match="data.annotations is not read by data=voc-seg"):
        load_dataset(DataSpec("voc-seg", root=str(tmp_path), annotations="x.json"))
    pytest.importorskip("h5py", reason="data=imagenet-seg needs h5py (a dependency)")
    with pytest.raises(DataError, match="data.images is not read by data=imagenet-seg"):
        load_dataset(DataSpec("imagenet-seg", root=str(tmp_path), images=str(tmp_path)))


def test_voc_multi_class_finds_classes_on_the_64_pixel_labels(tmp_path) -> None:
    """A 1-pixel bird at (0, 0) of a 128 x 128 label image: the 224 x 224 labels hold it (every
    row is read when enlarging), the 64 x 64 ones of the multi-class script do not (PIL's
    nearest reads odd rows there), so only the binary splits list it."""
    labels = np.zeros((128, 128), np.uint8)
    labels[40:90, 30:100] = 12
    labels[0, 0] = 3
    write_voc(tmp_path, {"2007_000009": labels})
    multi = load_dataset(DataSpec("voc-seg", root=str(tmp_path), classes="multi"))
    per_class = load_dataset(DataSpec("voc-seg", root=str(tmp_path), classes="per-class"))
    assert [it.extra["classes"] for it in multi.items] == [[12]]
    assert [it.word for it in per_class.items] == ["bird", "dog"]

"""`localize` end to end on the segmentation benchmarks' fixtures (ImageNet-Segmentation's .mat,
a PascalVOC tree) with tiny-sd, tiny-flux and tiny-sd3, up to `aggregate`'s segmentation table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from segmentation_fixtures import write_class_map, write_gtsegs, write_voc

from infodecomp.data.records import WordItem
from infodecomp.experiments.commands import localize
from infodecomp.experiments.config import LocalizeConfig, ModelConfig
from infodecomp.reporting.aggregate import aggregate
from infodecomp.reporting.segmentation import SEG_COLUMNS, benchmark_metrics
from infodecomp.tasks.segmentation import EVAL_SIZE

try:
    import h5py  # noqa: F401  (data=imagenet-seg reads its .mat with it; a dependency)
except ImportError:
    h5py = None


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("segdata")
    write_voc(root / "voc")
    mat = write_gtsegs(root / "imnet")["path"] if h5py is not None else None
    words = write_class_map(root / "map.json", {"n02084071": "dog", "n02121808": "cat"})
    return {"voc": root / "voc", "mat": mat, "map": words, "out": root / "runs"}


def _run(data: dict, model: str, name: str, limit: int, methods: list[str], **extra) -> Path:
    cfg = LocalizeConfig()
    cfg.model = ModelConfig.of(model)
    cfg.data.name = name
    if name == "voc-seg":
        cfg.data.root = str(data["voc"])
    else:
        cfg.data.root, cfg.data.annotations = str(data["mat"]), str(data["map"])
    cfg.run.limit, cfg.run.device, cfg.run.progress = limit, "cpu", False
    cfg.run.out_dir = str(data["out"] / f"{model}-{name}-{extra.get('classes', 'single')}")
    cfg.steps, cfg.daam_steps, cfg.methods, cfg.gallery = [2], 2, methods, 1
    for key, value in extra.items():
        setattr(cfg.data if key == "classes" else cfg, key, value)
    return localize.run(cfg)


def _check_run(out: Path, methods: set[str], protocol: str) -> pd.DataFrame:
    results = pd.read_csv(out / "results.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert set(results["method"]) == methods  # no CMI row: the data have no captions
    assert (results["seg_protocol"] == protocol).all()
    counts = results[["seg_tp", "seg_fp", "seg_fn", "seg_tn", "seg_void"]].sum(axis=1)
    assert (counts == EVAL_SIZE**2).all()  # every pixel of the 224 x 224 grid, once
    assert results["value"][results["method"] == "mi"].notna().all()
    for method in methods:
        m = benchmark_metrics(results[results["method"] == method])
        assert summary[f"pixel_acc/{method}"] == pytest.approx(m["pixel_acc"])
        assert summary[f"miou_seg/{method}"] == pytest.approx(m["miou"])
        assert 0 <= summary[f"map/{method}"] <= 1
    assert results[[c for c in results.columns if c.startswith("iou_")]].isna().all().all()
    return results


def test_localize_tiny_sd_on_voc_single_class(data) -> None:
    out = _run(data, "tiny-sd", "voc-seg", 2, ["cmi", "mi", "attention", "attn_info", "whole"])
    res = _check_run(out, {"mi", "attention", "attn_info"}, "voc-single")
    assert list(res["item_id"].unique()) == ["2007_000001", "2007_000003"]
    assert [p.name for p in (out / "figures").glob("*.png")] == ["2007_000001-maps.png"]
    assert res.loc[res["item_id"] == "2007_000001", "seg_void"].gt(0).all()  # void boundary


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_localize_joint_attention_families_on_imagenet_seg(data, model: str) -> None:
    if data["mat"] is None:
        pytest.skip("data=imagenet-seg needs h5py (a dependency): pip install 'h5py>=3.8,<4'")
    out = _run(data, model, "imagenet-seg", 2, ["mi", "attention", "concept"],
               attention="concept")  # fmt: skip
    res = _check_run(out, {"mi", "attention", "concept"}, "imagenet-seg")
    assert (res["seg_void"] == 0).all()


def test_concept_attention_on_voc_per_class_items(data) -> None:
    """tiny-flux under attention=concept on the per-class split: ConceptAttention rows beside
    the MI and raw cross-attention rows; the image's other classes are among its concepts."""
    out = _run(data, "tiny-flux", "voc-seg", 3, ["mi", "attention", "concept"],
               attention="concept", classes="per-class")  # fmt: skip
    res = _check_run(out, {"mi", "attention", "concept"}, "voc-per-class")
    assert list(res["item_id"].unique()) == ["2007_000001/cat", "2007_000002/dog",
                                             "2007_000002/person"]  # fmt: skip
    from infodecomp.data.registry import load_dataset
    from infodecomp.data.spec import DataSpec
    from infodecomp.experiments.maps import concept_list

    ds = load_dataset(DataSpec("voc-seg", root=str(data["voc"]), classes="per-class"))
    dog = localize.baseline_item(ds.items[1])
    assert concept_list(dog, ds.items)[:3] == ["dog", "person", "background"]


def test_voc_multi_class_published_argmax_end_to_end(data, monkeypatch) -> None:
    """data.classes=multi on tiny-flux under attention=concept: one row per image and method,
    every pixel of the 64 x 64 grid counted once; the MI and ConceptAttention concept maps that
    localize takes the argmax of equal the ones restated outside it (the engine's MI of each
    concept against "", the model's ConceptAttention maps, in the published concept order; a
    swapped order is caught), and the ConceptAttention row equals the restated label map's
    counts (a label map upside down is caught)."""
    from infodecomp.api import load
    from infodecomp.data.registry import load_dataset
    from infodecomp.data.segmentation import load_labels
    from infodecomp.estimators.engine import Query
    from infodecomp.estimators.protocol import encode_keyed
    from infodecomp.experiments.commands.localize import multi as localize_multi
    from infodecomp.experiments.common import engine_config
    from infodecomp.experiments.maps import info_maps
    from infodecomp.models.attention.concept import BACKGROUND_CONCEPTS as BG
    from infodecomp.reporting.segmentation import argmax_labels, eval_labels, score_labels

    seen, label_map = [], localize_multi.label_map

    def recorded(cfg, item, maps):
        seen.append((item.item_id, np.array(maps)))
        return label_map(cfg, item, maps)

    monkeypatch.setattr(localize_multi, "label_map", recorded)
    out = _run(data, "tiny-flux", "voc-seg", 4, ["cmi", "mi", "attention", "concept"],
               attention="concept", classes="multi")  # fmt: skip
    res = pd.read_csv(out / "results.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert (res["seg_protocol"] == "voc-multi").all() and set(res["method"]) == {
        "mi", "attention", "concept"}  # fmt: skip
    assert list(res["item_id"].unique()) == ["2007_000001", "2007_000002", "2007_000003",
                                             "2007_000004"]  # fmt: skip
    assert (res["seg_pixels"] == 64 * 64).all()
    for method in ("mi", "attention", "concept"):
        m = benchmark_metrics(res[res["method"] == method])
        assert summary[f"pixel_acc/{method}"] == pytest.approx(m["pixel_acc"])
        assert summary[f"miou_seg/{method}"] == pytest.approx(m["miou"])
        assert summary.get(f"map/{method}") is None  # the published script has no mAP
    assert (out / "figures" / "2007_000001-maps.png").exists()

    cfg = LocalizeConfig()
    cfg.data.name, cfg.data.root, cfg.data.classes = "voc-seg", str(data["voc"]), "multi"
    item = load_dataset(cfg.data).items[1]  # a dog and a person
    assert (item.caption, item.extra["classes"]) == ("a dog,a person", [12, 15])
    model = load("tiny-flux", device="cpu").denoiser
    ds = load_dataset(cfg.data)
    x = encode_keyed(model, [ds.load_image(item)], [item.item_id], cfg.run.seed)[0]
    concepts, labels = [*BG, "dog", "person"], [0, 0, 0, 0, 0, 12, 15]
    query = Query(x, (*concepts, ""), tuple((j, 7) for j in range(7)), key=item.item_id)
    est = info_maps(model, [query], engine_config(cfg.estimator, cfg.run, n_samples=2))[0]
    concept = model.concept_maps(x, "a dog,a person", concepts, key=item.item_id, seed=0)
    mine = [m for i, m in seen if i == item.item_id]
    assert len(mine) == 3  # mi, attention, concept at the one step count
    mi_maps, concept_maps = est.io_map.float().numpy(), concept.numpy()
    assert np.allclose(mine[0], mi_maps, atol=1e-5, rtol=1e-4)
    assert np.allclose(mine[2], concept_maps, atol=1e-6)
    swapped = [0, 1, 2, 3, 4, 6, 5]  # fault: the classes in another order
    assert not np.allclose(mine[0], mi_maps[swapped], atol=1e-5, rtol=1e-4)
    assert not np.allclose(mine[2], concept_maps[swapped], atol=1e-6)
    target = eval_labels(load_labels(item))
    want = score_labels(argmax_labels(concept_maps, labels), target)
    row = res.query("item_id == @item.item_id and method == 'concept'").iloc[0]
    assert {k: row[k] for k in list(want)[1:]} == dict(list(want.items())[1:])
    assert len(set(want["seg_inter"].split())) > 2  # some pixels won by a class
    flipped = score_labels(argmax_labels(concept_maps, labels)[::-1], target)  # fault: upside down
    assert flipped != want


def test_multi_class_network_rows_and_refusals(data, tmp_path, monkeypatch) -> None:
    """README's cost per image on the multi-class protocol (the cat: K = 6 concepts, five
    background concepts and the class): max(steps) x (K + 1) rows for the MI maps of the
    concepts and "", once per draw; DAAM 2 x daam_steps and Attention+Information sum(steps)
    per concept. multi_labels is refused off the multi-class data."""
    cases = ((["mi"], 4 * 7), (["mi", "attention"], 4 * 7 + 6 * 2 * 3),
             (["mi", "attn_info"], 4 * 7 + 6 * (2 + 4)))  # fmt: skip
    cfg = _rows_at_the_network(data, tmp_path, monkeypatch, cases, classes="multi")
    cfg.data.classes, cfg.multi_labels = "single", "chained-published-bug"
    with pytest.raises(ValueError, match="multi_labels=chained-published-bug .* leave"):
        localize.run(cfg)


def _rows_at_the_network(data, tmp_path, monkeypatch, cases, classes: str = "single"):
    """Runs localize on tiny-sd's first PascalVOC item for each (methods, rows) of `cases` and
    checks the denoising-network rows counted at the network; returns the last config."""
    from infodecomp.models.families.sd import StableDiffusionDenoiser

    rows = [0]
    denoise = StableDiffusionDenoiser._denoise

    def counted(self, network, z, t, cond):
        rows[0] += z.shape[0]
        return denoise(self, network, z, t, cond)

    monkeypatch.setattr(StableDiffusionDenoiser, "_denoise", counted)
    for methods, want in cases:
        cfg = LocalizeConfig()
        cfg.model = ModelConfig.of("tiny-sd")
        cfg.data.name, cfg.data.root, cfg.data.classes = "voc-seg", str(data["voc"]), classes
        cfg.run.limit, cfg.run.device, cfg.run.progress = 1, "cpu", False
        cfg.run.out_dir = str(tmp_path / f"{classes}-{'-'.join(methods)}")
        cfg.steps, cfg.daam_steps, cfg.methods, cfg.gallery = [2, 4], 3, methods, 0
        rows[0] = 0
        localize.run(cfg)
        assert rows[0] == want, methods
    return cfg


def test_segmentation_table_shows_every_method_side_by_side(data, tmp_path) -> None:
    runs = sorted(data["out"].glob("*"))
    if len(runs) < 5:
        pytest.skip("needs the localize runs of this module (run the whole file)")
    tables = aggregate(runs, tmp_path)
    assert "table3" not in tables  # segmentation runs have their own table
    t = tables["segmentation"]
    got = set(zip(t["benchmark"], t["model"], t["method"], strict=True))
    voc, imnet = "PascalVOC (single class)", "ImageNet-Segmentation"
    multi, argmax = "PascalVOC (per class, all images)", "PascalVOC (multi-class)"
    assert {(voc, "tiny-sd", "MI"), (voc, "tiny-sd", "Attention (DAAM)"),
            (voc, "tiny-sd", "Attention+Information (DAAM)"), (imnet, "tiny-flux", "MI"),
            (imnet, "tiny-flux", "Attention (DAAM)"), (imnet, "tiny-sd3", "MI"),
            (imnet, "tiny-sd3", "Attention (DAAM)"), (imnet, "tiny-flux", "ConceptAttention"),
            (imnet, "tiny-sd3", "ConceptAttention"), (multi, "tiny-flux", "MI"),
            (multi, "tiny-flux", "Attention (DAAM)"),
            (multi, "tiny-flux", "ConceptAttention"), (argmax, "tiny-flux", "MI"),
            (argmax, "tiny-flux", "Attention (DAAM)"),
            (argmax, "tiny-flux", "ConceptAttention")} == got  # fmt: skip
    assert t.loc[t["benchmark"] == argmax, "mAP"].isna().all()  # none published
    im = t[t["benchmark"] == imnet]
    acc = im["pixel acc"] / 100
    assert np.allclose(im["mIoU"] / 100, acc / (2 - acc))  # the published stacked arithmetic
    assert "Zero-shot segmentation" in (tmp_path / "segmentation.md").read_text()


def test_attention_methods_see_the_published_prompt_on_caption_less_items() -> None:
    bare = WordItem("1", None, "dog", "dog", "", "_", extra={"prompt": "a dog", "captioned": False})
    assert localize.baseline_item(bare).caption == "a dog"
    assert not localize.captioned(bare)
    coco = WordItem("2", None, "a dog runs", "dog", "a runs", "a _ runs")
    assert localize.baseline_item(coco) is coco and localize.captioned(coco)


def test_blank_context_is_refused_on_caption_less_data(data) -> None:
    cfg = LocalizeConfig()
    cfg.data.name, cfg.data.root, cfg.blank_context = "voc-seg", str(data["voc"]), True
    with pytest.raises(ValueError, match="blank_context=true .* no captions"):
        localize.run(cfg)


def test_segmentation_columns_are_part_of_the_localize_schema() -> None:
    assert localize.COLUMNS[-len(SEG_COLUMNS) :] == SEG_COLUMNS


def test_the_scored_map_is_the_items_mi_map(data) -> None:
    """A restatement outside localize: the item's MI map from experiments.maps.word_maps at the
    same draws (keyed by the item), scored by reporting.segmentation, gives localize's row."""
    from infodecomp.api import load
    from infodecomp.data.registry import load_dataset
    from infodecomp.data.segmentation import load_target
    from infodecomp.estimators.protocol import encode_keyed
    from infodecomp.estimators.queries import CMI, MI
    from infodecomp.experiments.common import engine_config
    from infodecomp.experiments.maps import word_maps
    from infodecomp.reporting.segmentation import eval_target, score_map

    out = data["out"] / "tiny-sd-voc-seg-single"
    if not (out / "results.csv").exists():
        pytest.skip("needs the tiny-sd voc-seg run of this module (run the whole file)")
    cfg = LocalizeConfig()
    cfg.data.name, cfg.data.root = "voc-seg", str(data["voc"])
    ds = load_dataset(cfg.data)
    item = ds.items[0]
    model = load("tiny-sd", device="cpu").denoiser
    x = encode_keyed(model, [ds.load_image(item)], [str(item.item_id)], cfg.run.seed)
    est = word_maps(model, [item], x, engine_config(cfg.estimator, cfg.run, n_samples=2),
                    daam=False)[0].estimate  # fmt: skip
    target = eval_target(*load_target(item))
    row = pd.read_csv(out / "results.csv").query("item_id == @item.item_id and method == 'mi'")
    want = score_map(est.io_map[MI].float().numpy(), target, "voc-single")
    assert row[list(want)[1:]].iloc[0].to_dict() == pytest.approx(dict(list(want.items())[1:]))
    # fault: the map transposed (a grid mix-up) scores differently
    flipped = score_map(est.io_map[MI].float().numpy().T, target, "voc-single")
    assert flipped["seg_tp"] != want["seg_tp"]
    assert bool((est.io_map[CMI] == est.io_map[MI]).all())  # no caption: the CMI is the MI


def test_network_rows_per_image_are_the_readmes_count(data, tmp_path, monkeypatch) -> None:
    """README's cost per image: max(steps) x 2 conditions (the word, "") for the MI map, 2 x
    daam_steps for DAAM, sum(steps) for Attention+Information; counted at the network."""
    cases = ((["cmi", "mi"], 4 * 2), (["mi", "attention"], 4 * 2 + 2 * 3),
             (["mi", "attn_info"], 4 * 2 + 2 + 4))  # fmt: skip
    _rows_at_the_network(data, tmp_path, monkeypatch, cases)

"""PascalVOC's published multi-class figures (protocol voc-multi; reporting.segmentation's
argmax_labels, score_labels, multiclass_metrics): a hand case, and random images against a plain
restatement of the published multi-class script's loop (argmax over background then present
concepts, background concepts to 0, torch nearest to 64, per-label running intersection and
union, accuracy over every pixel). Each injected fault is computed beside it and shown to miss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from infodecomp.reporting import segmentation as seg
from infodecomp.tasks.segmentation import MULTI_EVAL_SIZE, PROTOCOLS

N_BG = 5  # the published background concepts


def published(cases, chained: bool = False) -> tuple[float, float]:
    """(pixel accuracy, mIoU) as the published multi-class loop computes them, restated with
    torch; `cases`: (concept maps [K, h, w], present class labels, labels [64, 64]).
    chained=True relabels as the published script does (in place, one class after another: a
    label written earlier that equals a later concept index is relabelled again); False maps
    every concept index to its label at once."""
    correct = labelled = 0.0
    inter, union = np.zeros(21), np.zeros(21)
    for maps, classes, labels in cases:
        index = torch.from_numpy(maps).argmax(0)
        pred = index.clone()
        pred[index < N_BG] = 0
        for j, c in enumerate(classes):
            pred[(pred if chained else index) == N_BG + j] = c
        pred = torch.nn.functional.interpolate(pred[None, None].float(), size=(64, 64),
                                               mode="nearest")[0, 0]  # fmt: skip
        lab = torch.from_numpy(labels.astype(np.float32))[None]  # [1, 64, 64] as ToTensor * 255
        p1, t1 = pred.numpy() + 1, lab.numpy() + 1
        labelled += np.sum(t1 > 0)
        correct += np.sum((p1 == t1) * (t1 > 0))
        for c in range(21):
            inter[c] += ((pred == c) & (lab == c)).sum().item()
            union[c] += ((pred == c) | (lab == c)).sum().item()
    seen = union > 0
    return correct / labelled, float(np.mean(inter[seen] / union[seen]))


def library(cases, score=seg.score_labels, argmax=seg.argmax_labels) -> tuple[float, float]:
    rows = []
    for maps, classes, labels in cases:
        pred = argmax(maps, [0] * N_BG + list(classes))
        rows.append(score(pred, labels))
    m = seg.multiclass_metrics(pd.DataFrame(rows))
    assert np.isnan(m["map"]) and np.isnan(m["miou_fg_bg"]) and m["images"] == len(rows)
    return m["pixel_acc"], m["miou"]


def random_cases(seed: int, n: int = 6) -> list:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(n):
        classes = sorted(rng.choice(np.arange(1, 21), size=int(rng.integers(0, 4)), replace=False))
        grid = int(rng.choice([16, 32, 64, 48]))
        maps = rng.normal(size=(N_BG + len(classes), grid, grid)).astype(np.float32)
        maps[N_BG:] += 0.8  # the classes win often enough to be scored
        maps[:, :2, :2] = 0.0  # equal values: the first concept wins
        labels = np.zeros((64, 64), np.uint8)
        for c in classes:
            r, q = rng.integers(0, 48, size=2)
            labels[r : r + 16, q : q + 16] = c
        labels[rng.random((64, 64)) < 0.05] = 255  # void
        cases.append((maps, list(classes), labels))
    return cases


def test_hand_case() -> None:
    # 2 x 2 concept maps (background concepts, then class 8), enlarged to 4 x 4 by nearest
    maps = np.zeros((N_BG + 1, 2, 2))
    maps[N_BG] = [[1, -1], [-1, 0]]  # class 8 wins top-left; 0 ties: background wins
    maps[2, 1, 0] = 0.5  # a background concept wins bottom-left
    pred = seg.argmax_labels(maps, [0] * N_BG + [8])
    assert pred.tolist() == [[8, 0], [0, 0]]
    labels = np.zeros((4, 4), np.uint8)
    labels[:2, :3] = 8  # 6 cat pixels, 2 of them (column 2) predicted background
    labels[3, 3] = 255  # one void pixel, predicted background
    row = seg.score_labels(pred, labels)
    inter = list(map(int, row["seg_inter"].split()))
    union = list(map(int, row["seg_union"].split()))
    # background: predicted on 12 pixels (9 background, 2 cat, 1 void), labelled on 9, both on
    # 9 -> 9 / 12; cat: predicted on the 4 top-left pixels, labelled on 6 -> 4 / 6
    assert (inter[0], union[0]) == (9, 12) and (inter[8], union[8]) == (4, 6)
    assert sum(inter) == 13 and sum(union[1:8] + union[9:]) == 0
    assert (row["seg_correct"], row["seg_pixels"], row["seg_void"]) == (13, 16, 1)
    m = seg.multiclass_metrics(pd.DataFrame([row]))
    assert m["pixel_acc"] == pytest.approx(13 / 16)  # the void pixel counts, never correct
    assert m["miou"] == pytest.approx((9 / 12 + 4 / 6) / 2)  # labels with a union only
    # faults: void left out of background's union (9/11), of the pixel count (13/15), the mean
    # over all 21 labels
    assert (9 / 11 + 4 / 6) / 2 != pytest.approx(m["miou"])
    assert 13 / 15 != pytest.approx(m["pixel_acc"])
    assert (9 / 12 + 4 / 6) / 21 != pytest.approx(m["miou"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_library_equals_the_published_loop(seed: int) -> None:
    cases = random_cases(seed)
    want = published(cases)
    assert library(cases) == pytest.approx(want, abs=1e-12)


def _chained(maps, labels):
    return seg.chained_labels(np.argmax(maps, axis=0), N_BG, [c for c in labels if c])


def test_the_published_relabelling_bug_by_name() -> None:
    """multi_labels=chained-published-bug equals the published loop as it ran; it differs from
    the direct labels where a class label equals a later concept index (classes [6, 10, 12]:
    the bus pixels, label 6 = the cow's concept index, end as cow, 10)."""
    cases = random_cases(0)
    assert [6, 10, 12] in [list(c) for _, c, _ in cases]
    assert library(cases, argmax=_chained) == pytest.approx(published(cases, True), abs=1e-12)
    assert published(cases, True) != pytest.approx(published(cases), abs=1e-6)
    index = np.array([[5, 6], [7, 0]])
    # concept 5 (bus, 6) and concept 6 (cow, 10) both end as cow; concept 7 is dog (12)
    assert seg.chained_labels(index, 5, [6, 10, 12]).tolist() == [[10, 10], [12, 0]]


def _void_out_of_union(pred, target):
    row = seg.score_labels(pred, target)
    p = seg.nearest_resize(np.asarray(pred, np.int64), target.shape[0])
    valid = target != 255
    row["seg_union"] = " ".join(
        str(int(np.sum(((p == c) | (target == c)) & valid))) for c in range(21)
    )
    return row


def _void_out_of_pixels(pred, target):
    return seg.score_labels(pred, target) | {"seg_pixels": int(np.sum(target != 255))}


def _background_not_merged(maps, labels):
    return np.argmax(maps, axis=0)  # the concept index as the label


def _last_of_equal(maps, labels):
    flipped = np.asarray(maps)[::-1]
    return np.asarray(labels)[::-1][np.argmax(flipped, axis=0)]


def _pil_resize(pred, target):
    from PIL import Image

    big = Image.fromarray(np.asarray(pred, np.uint8)).resize(target.shape[::-1], Image.NEAREST)
    return seg.score_labels(np.asarray(big), target)


@pytest.mark.parametrize(
    "fault",
    [
        {"score": _void_out_of_union},
        {"score": _void_out_of_pixels},
        {"argmax": _background_not_merged},
        {"argmax": _last_of_equal},
        {"score": _pil_resize},
    ],
    ids=[
        "void-out-of-union",
        "void-out-of-pixels",
        "background-unmerged",
        "last-of-equal",
        "pil-resize",
    ],  # fmt: skip
)
def test_each_fault_misses_the_published_loop(fault: dict) -> None:
    cases = random_cases(0)
    want = published(cases)
    assert library(cases, **fault) != pytest.approx(want, abs=1e-6)


def test_per_image_miou_and_all_label_mean_miss_the_pooled_value() -> None:
    cases = random_cases(1)
    rows = [seg.score_labels(seg.argmax_labels(m, [0] * N_BG + c), lab) for m, c, lab in cases]
    pooled = seg.multiclass_metrics(pd.DataFrame(rows))["miou"]
    per_image = np.mean([seg.multiclass_metrics(pd.DataFrame([r]))["miou"] for r in rows])
    inter = sum(np.array(r["seg_inter"].split(), float) for r in rows)
    union = sum(np.array(r["seg_union"].split(), float) for r in rows)
    all_labels = np.mean(np.divide(inter, union, out=np.zeros(21), where=union > 0))
    assert (union == 0).any()  # some labels never appear: the mean skips them
    assert per_image != pytest.approx(pooled, abs=1e-6)
    assert all_labels != pytest.approx(pooled, abs=1e-6)


def test_protocol_and_grid() -> None:
    assert PROTOCOLS["voc-multi"] == "argmax" and MULTI_EVAL_SIZE == 64
    labels = np.full((300, 500), 3, np.uint8)
    assert seg.eval_labels(labels).shape == (64, 64)
    with pytest.raises(ValueError, match="3 concept maps for 2 labels"):
        seg.argmax_labels(np.zeros((3, 2, 2)), [0, 1])
    with pytest.raises(ValueError, match="has 2 labels, not 21"):
        seg.multiclass_metrics(pd.DataFrame([{"seg_inter": "1 2", "seg_union": "1 2",
                                              "seg_correct": 1, "seg_pixels": 1}]))  # fmt: skip

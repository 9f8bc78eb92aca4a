"""The zero-shot segmentation metrics (reporting.segmentation) against hand-computed cases, each
with the injected fault it guards against computed beside it and shown to miss the hand value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from infodecomp.reporting import segmentation as seg


@pytest.mark.parametrize("n_in", [7, 8, 28, 64, 96, 300])
def test_nearest_resize_is_torchs_nearest(n_in: int) -> None:
    a = np.random.default_rng(n_in).random((n_in, n_in + 3))
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(a)[None, None].float(), size=(224, 224), mode="nearest"
    )[0, 0].numpy()
    got = seg.nearest_resize(a.astype(np.float32), 224)
    assert np.array_equal(got, ref)
    # fault: PIL's / half-pixel-centre nearest (floor((i + 0.5) * in / out)) differs somewhere
    centre = np.minimum(np.floor((np.arange(224) + 0.5) * n_in / 224).astype(int), n_in - 1)
    if n_in not in (7, 28):  # 224 / n_in integral: both rules agree there
        assert not np.array_equal(a[centre][:, seg._nearest_index(n_in + 3, 224)], ref)


def test_eval_target_marks_void_and_resizes_with_pil_nearest() -> None:
    positive = np.zeros((4, 4), bool)
    positive[2:, :] = True
    void = np.zeros((4, 4), bool)
    void[0, 0] = True
    t = seg.eval_target(positive, void, size=8)
    assert t.dtype == np.int8 and t.shape == (8, 8)
    assert (t[:2, :2] == -1).all() and (t[4:, :] == 1).all() and t[0, 4] == 0
    assert set(np.unique(t)) == {-1, 0, 1}


def test_average_precision_hand_cases() -> None:
    # ranks: hit (P 1, R .5), miss, hit (P 2/3, R 1), miss -> .5 * 1 + .5 * 2/3
    y, s = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6])
    assert seg.average_precision(y, s) == pytest.approx(5 / 6)
    # fault: ranked low to high (wrong ordering) -> P at hits 1/2 (R .5), 2/4 (R 1) = .5
    assert seg.average_precision(y, -s) == pytest.approx(0.5)
    # ties form one threshold: both pixels at once, P = 1/2, R = 1
    assert seg.average_precision(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    # fault: ties broken by position (hit first) would give 1
    assert seg.average_precision(np.array([1, 0]), np.array([0.5, 0.49])) == pytest.approx(1.0)
    assert seg.average_precision(np.zeros(3), np.arange(3)) == 0.0


def test_average_precision_is_scikit_learns() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(300) < 0.3
        s = np.round(rng.random(300), 2)  # ties included
        assert seg.average_precision(y, s) == pytest.approx(
            metrics.average_precision_score(y, s), abs=1e-12
        )


def _case():
    """A 2 x 2 map on a 4 x 4 target: mean 1.5 -> bottom row predicted."""
    heat = np.array([[0.0, 1.0], [2.0, 3.0]])
    target = np.zeros((4, 4), np.int8)
    target[2:, :] = 1
    target[0, 0] = -1  # void
    target[0, 3] = 1  # an object pixel the mask misses
    target[3, 0] = 0  # a background pixel the mask covers
    return heat, target


def test_score_map_hand_counts() -> None:
    heat, target = _case()
    got = seg.score_map(heat, target, "voc-single")
    # mask: rows 2-3 (8 px); object: rows 2-3 except (3,0) (7 px) + (0,3); void: (0,0)
    assert {k: got[k] for k in seg.COUNTS} == {
        "seg_tp": 7,
        "seg_fp": 1,
        "seg_fn": 1,
        "seg_tn": 6,
        "seg_void": 1,
    }
    # AP over 30 scores: c = 0, 1/3 (rows 0-1), 2/3, 1 (rows 2-3), and 1 - c
    c = seg.nearest_resize(heat / 3, 4)
    valid, obj = target >= 0, target == 1
    scores = np.r_[1 - c[valid], c[valid]]
    labels = np.r_[~obj[valid], obj[valid]]
    assert got["seg_ap"] == pytest.approx(seg.average_precision(labels, scores))
    # fault: threshold off (at 0 instead of the mean) -> every pixel but one predicted
    off = seg.score_map(heat - heat.mean() + 1.0, target, "voc-single")
    assert {k: off[k] for k in seg.COUNTS} == {k: got[k] for k in seg.COUNTS}  # shift-invariant
    at_zero = (seg.nearest_resize(heat > 0, 4) & obj & valid).sum() + (
        seg.nearest_resize(heat > 0, 4) & ~obj & valid
    ).sum()
    assert at_zero != got["seg_tp"] + got["seg_fp"]
    # fault: void pixels scored as background -> tn + 1
    assert seg.score_map(heat, np.maximum(target, 0), "voc-single")["seg_tn"] == got["seg_tn"] + 1


def _rows(protocol: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "seg_protocol": protocol,
                "seg_tp": 7,
                "seg_fp": 1,
                "seg_fn": 1,
                "seg_tn": 6,
                "seg_void": 1,
                "seg_ap": 0.8,
            },
            {
                "seg_protocol": protocol,
                "seg_tp": 2,
                "seg_fp": 3,
                "seg_fn": 0,
                "seg_tn": 11,
                "seg_void": 0,
                "seg_ap": 0.5,
            },
        ]  # fmt: skip
    )


def test_benchmark_metrics_voc_hand_values() -> None:
    m = seg.benchmark_metrics(_rows("voc-single"))
    # pooled: TP 9, FP 4, FN 1, TN 17, void 1, scored 31
    assert m["pixel_acc"] == pytest.approx(2 * 26 / (2 * 31 + 1))
    fg, bg = 9 / 14, 17 / 22
    assert m["miou"] == pytest.approx((fg + bg) / 2)
    assert m["miou_fg_bg"] == m["miou"]
    assert m["map"] == pytest.approx(0.65) and m["images"] == 2
    # faults: mIoU over the object class only; per-image mean instead of pooled; plain accuracy
    assert not np.isclose(m["miou"], fg)
    per_image = np.mean([(7 / 9 + 6 / 8) / 2, (2 / 5 + 11 / 14) / 2])
    assert not np.isclose(m["miou"], per_image)
    assert not np.isclose(m["pixel_acc"], 26 / 31)


def test_benchmark_metrics_imagenet_stacked_miou_is_acc_over_two_minus_acc() -> None:
    rows = _rows("imagenet-seg").assign(seg_void=0)
    m = seg.benchmark_metrics(rows)
    acc = 26 / 31
    assert m["pixel_acc"] == pytest.approx(acc)
    assert m["miou"] == pytest.approx(26 / (62 - 26)) == pytest.approx(acc / (2 - acc))
    # fault: the per-class mIoU in place of the published stacked histogram
    assert not np.isclose(m["miou"], m["miou_fg_bg"])


def test_stacked_miou_matches_a_histogram_of_the_stacked_planes() -> None:
    """The 'stacked' rule against a direct restatement: both planes (1 - m, m) and (1 - t, t)
    shifted by one, histogrammed into two bins, intersection over union per bin, pooled."""
    rng = np.random.default_rng(3)
    inter, union, rows = np.zeros(2), np.zeros(2), []
    for _ in range(5):
        m = (rng.random((6, 6)) > 0.5).astype(int)
        t = (rng.random((6, 6)) > 0.4).astype(int)
        p, g = np.stack([1 - m, m]) + 1, np.stack([1 - t, t]) + 1
        hit = p * (p == g)
        a_i = np.histogram(hit, bins=2, range=(1, 2))[0]
        a_p, a_g = (np.histogram(x, bins=2, range=(1, 2))[0] for x in (p, g))
        inter, union = inter + a_i, union + a_p + a_g - a_i
        tp, fp = int((m & t).sum()), int((m & (1 - t)).sum())
        fn, tn = int(((1 - m) & t).sum()), int(((1 - m) & (1 - t)).sum())
        rows.append({"seg_protocol": "imagenet-seg", "seg_tp": tp, "seg_fp": fp, "seg_fn": fn,
                     "seg_tn": tn, "seg_void": 0, "seg_ap": 0.0})  # fmt: skip
    got = seg.benchmark_metrics(pd.DataFrame(rows))["miou"]
    assert got == pytest.approx(float(np.mean(inter / union)))


def test_benchmark_metrics_refuses_mixed_protocols() -> None:
    rows = pd.concat([_rows("voc-single"), _rows("imagenet-seg")])
    with pytest.raises(ValueError, match="mix protocols"):
        seg.benchmark_metrics(rows)

"""ARO accuracy, localisation mIoU and intervention correlations on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from infodecomp.reporting.metrics import (
    IOU_COLUMNS,
    THRESHOLDS,
    accuracy_interval,
    bootstrap_se,
    image_level_r,
    intervention_table,
    iou,
    iou_curve,
    min_max_normalise,
    miou_curve,
    miou_heldout,
    miou_paper,
    pearson_r,
    pixel_level_r,
    ranking_accuracy,
    wilson_interval,
)
from infodecomp.tasks import canonical_subset, predict
from infodecomp.tasks.aro_relations import EXCLUDED_RELATIONS

# ---------------------------------------------------------------------------------------- ARO


def scores_frame(items: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"item_id": i, "option": k, "score": s}
            for i, ss in items.items()
            for k, s in enumerate(ss)
        ]
    )


def test_predict_ties_go_to_the_first_option():
    df = scores_frame(
        {
            "tie2": [0.5, 0.5],
            "tie3": [1.0, 3.0, 3.0],
            "clear": [0.1, 0.9],
            "neg": [-2.0, -1.0, -1.5],
        }
    )
    pred = predict(df.iloc[::-1])  # row order must not matter, the option index does
    got = dict(zip(pred["item_id"], pred["pred"], strict=True))
    assert got == {"tie2": 0, "tie3": 1, "clear": 1, "neg": 1}


def test_predict_refuses_nan_and_double_scores():
    with pytest.raises(ValueError, match="NaN scores"):
        predict(scores_frame({"a": [0.1, float("nan")]}))
    df = scores_frame({"a": [0.1, 0.2]})
    with pytest.raises(ValueError, match="scored twice"):
        predict(pd.concat([df, df]))


def vg_items(subset: str, groups: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """groups: name -> (n items, n correct); VG options are [false, true], label 1."""
    rows = []
    for g, (n, correct) in groups.items():
        for k in range(n):
            rows.append(
                {
                    "item_id": f"{g}-{k}",
                    "subset": subset,
                    "group": g,
                    "label": 1,
                    "pred": 1 if k < correct else 0,
                }
            )
    return pd.DataFrame(rows)


def test_vg_relation_macro_leaves_out_excluded_relations():
    assert "next to" in EXCLUDED_RELATIONS
    assert "on" not in EXCLUDED_RELATIONS and "above" not in EXCLUDED_RELATIONS
    pred = vg_items("vg-relation", {"on": (3, 2), "above": (1, 1), "next to": (2, 0)})
    score, per_group = ranking_accuracy(pred)
    assert score == pytest.approx((2 / 3 + 1) / 2)
    table = per_group.set_index("group")
    assert table.loc["on", "n"] == 3 and table.loc["on", "accuracy"] == pytest.approx(2 / 3)
    assert table["included"].to_dict() == {"above": True, "next to": False, "on": True}
    assert per_group.attrs["micro"] == pytest.approx(0.5)


def test_vg_relation_tie_counts_as_wrong_through_predict():
    scores = pd.DataFrame(
        [
            {"item_id": "t", "option": 0, "score": 0.3},
            {"item_id": "t", "option": 1, "score": 0.3},
            {"item_id": "r", "option": 0, "score": 0.1},
            {"item_id": "r", "option": 1, "score": 0.3},
        ]
    ).assign(subset="aro-vg-relation", group="on", label=1)
    score, _ = ranking_accuracy(predict(scores))
    assert score == pytest.approx(0.5)


def test_vg_attribution_needs_25_items_per_pair():
    pred = vg_items(
        "vg-attribution", {"red_blue": (25, 20), "big_small": (24, 0), "old_new": (30, 15)}
    )
    score, per_group = ranking_accuracy(pred)
    assert score == pytest.approx((0.8 + 0.5) / 2)
    assert per_group.set_index("group")["included"].to_dict() == {
        "big_small": False,
        "old_new": True,
        "red_blue": True,
    }


def test_order_subsets_use_plain_accuracy():
    pred = vg_items("coco-order", {"g1": (3, 3), "g2": (1, 0)}).assign(
        label=0, pred=lambda d: 1 - d["pred"]
    )
    score, per_group = ranking_accuracy(pred)
    assert score == pytest.approx(0.75)  # the macro over groups would be 0.5
    assert per_group["included"].all()


def test_shapes_subsets_plain_accuracy_with_macro_attr():
    pred = vg_items("shapes-relation", {"left of": (3, 3), "above": (1, 0)})
    score, per_group = ranking_accuracy(pred)
    assert score == pytest.approx(0.75)
    assert per_group.attrs["macro"] == pytest.approx(0.5)


def test_accuracy_interval_wilson_and_macro():
    """95% intervals that stay honest for small and perfect groups (issue 27): the plug-in
    p +- 1.96 sqrt(p (1 - p) / n) reads 1 +- 0 for 3 of 3 right; Wilson does not."""
    # plain accuracy: Wilson score interval; the published values for 3/3 and 1/3 (95%)
    assert wilson_interval(3, 3) == pytest.approx((0.4385, 1.0), abs=1e-4)
    assert wilson_interval(1, 3) == pytest.approx((0.0615, 0.7923), abs=1e-4)
    assert wilson_interval(0, 6) == pytest.approx((0.0, 0.3903), abs=1e-4)
    _, per_group = ranking_accuracy(vg_items("coco-order", {"g1": (3, 3), "g2": (1, 0)}))
    assert accuracy_interval(per_group) == wilson_interval(3, 4)
    # the interval narrows like 1 / sqrt(n): the same accuracy on 100x the items
    _, big = ranking_accuracy(vg_items("coco-order", {"g1": (300, 300), "g2": (100, 0)}))
    lo, hi = accuracy_interval(big)
    assert (
        0.70 < lo < 0.75 < hi < 0.80 and (hi - lo) < (np.subtract(*wilson_interval(3, 4)[::-1])) / 5
    )
    # VG-Relation macro over on (2 of 3) and above (1 of 1, all right); "next to" is left out:
    # mean 5/6 +- 1.96 sqrt(v_on + v_above) / 2 with Agresti-Coull variances
    pred = vg_items("vg-relation", {"on": (3, 2), "above": (1, 1), "next to": (2, 0)})
    _, per_group = ranking_accuracy(pred)
    z = 1.959963984540054
    v = [(k + z * z / 2) / (n + z * z) for k, n in ((2, 3), (1, 1))]
    var = sum(p * (1 - p) / (n + z * z) for p, n in zip(v, (3, 1), strict=True))
    half = z * np.sqrt(var) / 2
    assert accuracy_interval(per_group) == pytest.approx((5 / 6 - half, 1.0))
    # an all-right macro (both groups perfect) still has a width: the plug-in gave 0
    pred = vg_items("vg-relation", {"on": (2, 2), "above": (1, 1)})
    _, per_group = ranking_accuracy(pred)
    lo, hi = accuracy_interval(per_group)
    assert hi == 1.0 and lo < 0.8
    plug_in = np.sqrt(sum(p * (1 - p) / n for p, n in ((1.0, 2), (1.0, 1)))) / 2
    assert plug_in == 0.0  # the fault this replaces: "100.0 ± 0.0"


def test_aro_accuracy_input_errors():
    a = vg_items("vg-relation", {"on": (1, 1)})
    b = vg_items("coco-order", {"x": (1, 1)})
    with pytest.raises(ValueError, match="one subset at a time"):
        ranking_accuracy(pd.concat([a, b]))
    with pytest.raises(ValueError, match="more than once"):
        ranking_accuracy(pd.concat([a, a]))
    assert canonical_subset("VG_Relation") == "vg-relation"  # a declared alias
    assert canonical_subset("flickr30k-order") == "flickr-order"
    assert canonical_subset("ARO_VG_Relation") == "ARO_VG_Relation"  # no guessing
    assert canonical_subset("VG-Relation") == "VG-Relation"


# ------------------------------------------------------------------------------- localisation


def iou_frame(rows: list[tuple[str, dict[int, float]]]) -> pd.DataFrame:
    out = []
    for split, cols in rows:
        row = {"split": split} | {c: 0.0 for c in IOU_COLUMNS}
        row |= {IOU_COLUMNS[j]: v for j, v in cols.items()}
        out.append(row)
    return pd.DataFrame(out)


def test_miou_paper_and_heldout_hand_computed():
    df = iou_frame(
        [
            ("A", {5: 0.8, 10: 0.2}),
            ("A", {5: 0.6, 10: 0.4}),
            ("B", {5: 0.1, 10: 0.9}),
            ("B", {5: 0.3, 10: 0.7}),
        ]
    )
    curve = miou_curve(df)
    assert curve[5] == pytest.approx(0.45) and curve[10] == pytest.approx(0.55)
    assert miou_paper(df) == pytest.approx(0.55)
    # A picks column 5 (0.7), scored on B: 0.2; B picks column 10 (0.8), scored on A: 0.3.
    assert miou_heldout(df) == pytest.approx(0.25)


def test_miou_heldout_ties_pick_the_lowest_threshold_and_needs_both_splits():
    df = iou_frame([("A", {3: 0.5, 7: 0.5}), ("B", {3: 0.2, 7: 0.6})])
    # A ties between 3 and 7 -> 3 -> B scores 0.2; B picks 7 -> A scores 0.5.
    assert miou_heldout(df) == pytest.approx((0.2 + 0.5) / 2)
    with pytest.raises(ValueError, match="both splits"):
        miou_heldout(df[df["split"] == "A"])


def test_iou_and_normalisation():
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2, :2] = True
    pred = np.zeros((4, 4), dtype=bool)
    pred[:2, :3] = True
    assert iou(pred, gt) == pytest.approx(4 / 6)
    assert np.isnan(iou(np.zeros_like(gt), np.zeros_like(gt)))
    with pytest.raises(ValueError, match="shapes differ"):
        iou(pred, gt[:3])
    heat = np.array([[2.0, 4.0], [6.0, 10.0]])
    np.testing.assert_allclose(min_max_normalise(heat), [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(min_max_normalise(np.full((2, 2), 3.0)), np.zeros((2, 2)))
    # map = 3 * mask + 1: normalised it equals the mask, so every threshold gives IoU 1
    np.testing.assert_allclose(iou_curve(3.0 * gt + 1.0, gt), np.ones(50))
    assert len(THRESHOLDS) == 50 and THRESHOLDS[0] == 0.1 and THRESHOLDS[-1] == 0.5
    # a ramp against its values above 0.3: at t = 0.1 the prediction is a superset of the truth
    ramp = np.linspace(0, 1, 100).reshape(10, 10)
    top = ramp > 0.3
    curve = iou_curve(ramp, top)
    assert curve[0] == pytest.approx(top.sum() / (ramp > 0.1).sum())


# ------------------------------------------------------------------------------ interventions


def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40)
    y = 0.5 * x + rng.normal(size=40)
    assert pearson_r(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-12)
    assert np.isnan(pearson_r(np.ones(5), y[:5]))


def test_bootstrap_matches_a_direct_resampling_and_theory():
    rng = np.random.default_rng(2)
    n = 400
    x = rng.normal(size=n)
    y = 0.6 * x + 0.8 * rng.normal(size=n)
    df = pd.DataFrame({"change_total": x, "cmi_total": y})
    r, se = image_level_r(df, "cmi_total", n_boot=300, seed=7)
    ref_rng = np.random.default_rng(7)
    ref = [np.corrcoef(x[i], y[i])[0, 1] for i in (ref_rng.integers(0, n, n) for _ in range(300))]
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert se == pytest.approx(np.std(ref, ddof=1), rel=1e-10)
    # large-sample standard error of r is about (1 - r^2) / sqrt(n)
    assert se == pytest.approx((1 - r**2) / np.sqrt(n), rel=0.25)
    # se of a mean: the classical sigma / sqrt(n)
    v = rng.normal(size=n)
    se_mean = bootstrap_se(lambda i: float(v[i].mean()), n, n_boot=500, seed=0)
    assert se_mean == pytest.approx(v.std(ddof=1) / np.sqrt(n), rel=0.15)


def test_pixel_level_mean_and_intervention_table():
    df = pd.DataFrame(
        {
            "change_total": [1.0, 2.0, 3.0, 4.0, 5.0],
            "cmi_total": [1.1, 1.9, 3.2, 3.9, 5.3],
            "attn_total": [2.0, 1.0, 4.0, 3.0, 5.0],
            "pixel_r_cmi": [0.1, 0.2, 0.3, 0.4, float("nan")],
            "pixel_r_attn": [0.0, 0.1, 0.2, 0.3, 0.4],
        }
    )
    mean, se, used = pixel_level_r(df, "pixel_r_cmi", n_boot=200, seed=0)
    assert mean == pytest.approx(0.25) and used == 4 and se > 0
    table = intervention_table(df, n_boot=200, seed=0)
    assert list(table.index) == ["cmi", "attention"]
    assert table.loc["cmi", "image_r"] == pytest.approx(
        np.corrcoef(df.change_total, df.cmi_total)[0, 1]
    )
    assert table.loc["attention", "image_r"] == pytest.approx(0.8)
    assert table.loc["attention", "pixel_r"] == pytest.approx(0.2)
    assert table.loc["cmi", "n_pixel"] == 4 and table.loc["attention", "n_pixel"] == 5
    with pytest.raises(ValueError, match="missing change_total"):
        image_level_r(df.assign(cmi_total=[1.0, None, 2.0, 3.0, 4.0]))

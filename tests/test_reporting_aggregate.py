"""Aggregation of synthetic run directories into Tables 1-4, checked against hand-computed values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infodecomp.reporting import (
    ARO_COLUMNS,
    INTERVENE_COLUMNS,
    IOU_COLUMNS,
    LOCALIZE_COLUMNS,
    aggregate,
    tables_markdown,
    write_meta,
    write_summary,
)
from infodecomp.reporting.aggregate import load_runs
from infodecomp.reporting.segmentation import SEG_COLUMNS
from infodecomp.reporting.store import RunStore, export, store_path
from infodecomp.reporting.tables import latex_escape, to_markdown
from infodecomp.reporting.writer import ARO_KEY, INTERVENE_KEY, LOCALIZE_KEY

NAN = float("nan")
KEYS = {
    tuple(ARO_COLUMNS): ARO_KEY,
    tuple(LOCALIZE_COLUMNS): LOCALIZE_KEY,
    tuple(INTERVENE_COLUMNS): INTERVENE_KEY,
}


def make_run(
    path,
    command,
    model,
    data,
    rows,
    columns,
    *,
    n_samples=100,
    adaptive=False,
    unfinished=(),
    **config_extra,
):
    config = {
        "model": {"name": model},
        "data": {"name": data},
        "estimator": {"n_samples": n_samples, "adaptive": adaptive},
        **config_extra,
    }
    path.mkdir(parents=True, exist_ok=True)
    key = KEYS.get(tuple(columns), ["item_id"])
    with RunStore.open(
        store_path(path), command=command, columns=columns, key=key, fingerprint=config
    ) as store:
        for pos, item in enumerate(dict.fromkeys(r["item_id"] for r in rows)):
            store.commit([r for r in rows if r["item_id"] == item], [(item, pos)])
        if unfinished:  # a run killed inside a batch: its transaction never committed
            store.conn.execute("BEGIN")
            store.conn.executemany(
                f"INSERT INTO results VALUES ({', '.join('?' * len(columns))})",
                [[r[c] for c in columns] for r in unfinished],
            )
            store.conn.execute("ROLLBACK")
    export(path)
    write_meta(
        path,
        config,
        device="cpu",
        dtype="float32",
        seed=0,
        wall_time_s=2.5,
        items_done=len({r["item_id"] for r in rows}),
        items_skipped=0,
        command=command,
    )
    write_summary(path, {"accuracy": {"io": 0.0}})
    return path


def aro_rows(items, estimators, n_samples):
    """items: id -> (relation, {estimator: [value per option]}); VG options [false, true]."""
    rows = []
    for item, (group, values) in items.items():
        for est in estimators:
            for k, v in enumerate(values[est]):
                rows.append(
                    {
                        "item_id": item,
                        "subset": "vg-relation",
                        "group": group,
                        "label": 1,
                        "option": k,
                        "text": f"caption {k}",
                        "estimator": est,
                        "value": v,
                        "stderr": 0.01,
                        "score": -v if est == "mmse" else v,
                        "n_samples": n_samples,
                        "n_report": n_samples,
                        "values_from": "same draws",
                    }
                )
    return rows


# io: r1 right, r2 tie -> option 0 -> wrong, r3 right, r4 (excluded relation) wrong.
# mmse (lower value wins): r1 wrong, r2 right, r3 wrong, r4 right.
ITEMS = {
    "r1": ("on", {"io": [0.1, 0.9], "mmse": [1.0, 2.0]}),
    "r2": ("on", {"io": [0.5, 0.5], "mmse": [2.0, 1.0]}),
    "r3": ("above", {"io": [0.2, 0.3], "mmse": [1.0, 3.0]}),
    "r4": ("next to", {"io": [0.9, 0.1], "mmse": [3.0, 1.0]}),
}


@pytest.fixture
def aro_runs(tmp_path):
    ghost = aro_rows({"r9": ("on", {"io": [0.0, 1.0]})}, ["io"], 100)  # no done marker
    main = make_run(
        tmp_path / "aro-100",
        "aro",
        "sd-2.1-base",
        "aro-vg-relation",
        aro_rows(ITEMS, ["io", "mmse"], 100),
        ARO_COLUMNS,
        unfinished=ghost,
    )
    small = {k: (g, {"io": [0.0, 1.0]}) for k, (g, _) in ITEMS.items()}
    sweep = make_run(
        tmp_path / "sweep" / "0",
        "aro",
        "sd-2.1-base",
        "aro-vg-relation",
        aro_rows(small, ["io"], 10),
        ARO_COLUMNS,
        n_samples=10,
    )
    return main, sweep


def test_aro_tables_hand_computed(aro_runs, tmp_path):
    main, sweep = aro_runs
    out = tmp_path / "tables"
    tables = aggregate([main, sweep.parent], out, n_boot=50)  # a folder of runs is searched
    t1 = tables["table1"]
    measured = t1[t1["source"] == "measured"]
    assert measured[["method", "n_samples"]].values.tolist() == [
        ["Info. i^o", 10],
        ["Info. i^o", 100],
        ["Denoising loss", 100],
    ]
    # io: macro over {on: 1/2, above: 1}; "next to" is excluded; r9 (unfinished) is ignored
    assert measured["VG-R"].tolist() == pytest.approx([100.0, 75.0, 25.0])
    assert "VG-A" not in t1.columns
    published = t1[t1["source"] == "published"].set_index("method")
    assert published.loc["Info. (logistic)", "VG-R"] == 69.1
    assert published.loc["OpenCLIP", "VG-R"] == 51.4

    sweep_t = tables["accuracy_vs_samples"]
    assert sweep_t["n_samples"].tolist() == [10, 100]
    assert sweep_t["VG-R Info. i^o"].tolist() == pytest.approx([100.0, 75.0])
    assert np.isnan(sweep_t["VG-R Denoising loss"].iloc[0])

    t2 = tables["table2"]
    at100 = t2[t2["n_samples"] == 100].set_index("group")
    assert at100.loc["on", "Info. i^o"] == pytest.approx(50.0)
    assert at100.loc["on", "Denoising loss"] == pytest.approx(50.0)
    assert at100.loc["above", "Denoising loss"] == pytest.approx(0.0)
    assert at100.loc["next to", "Info. i^o"] == pytest.approx(0.0)
    assert at100["in_metric"].to_dict() == {"above": True, "next to": False, "on": True}
    assert at100.loc["on", "n"] == 2
    # each group's 95% Wilson interval: "above" is 1 of 1 right (i^o), not 100 ± 0
    assert at100.loc["above", "Info. i^o lo"] == pytest.approx(100 * 0.2065, abs=0.01)
    assert at100.loc["above", "Info. i^o hi"] == 100.0
    assert at100.loc["on", "Denoising loss lo"] == pytest.approx(100 * 0.0945, abs=0.01)

    for name in ("table1", "table2", "accuracy_vs_samples", "runs"):
        for ext in ("md", "tex", "csv"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    assert measured["samples/item"].tolist() == [10.0, 100.0, 100.0]
    md1 = (out / "table1.md").read_text()
    # 95% interval of the macro mean over {on: 1 of 2, above: 1 of 1}: 75 +- 1.96 sqrt(v_on +
    # v_above) / 2, Agresti-Coull variances v = p~ (1 - p~) / (n + z^2) (metrics.accuracy_interval)
    z = 1.959963984540054
    pt = [(k + z * z / 2) / (n + z * z) for k, n in ((1, 2), (1, 1))]
    var = sum(p * (1 - p) / (n + z * z) for p, n in zip(pt, (2, 1), strict=True))
    half = 100 * z * np.sqrt(var) / 2  # the same for Denoising loss (on 1 of 2, above 0 of 1)
    assert measured["VG-R lo"].tolist()[1:] == pytest.approx([75 - half, max(0.0, 25 - half)])
    assert measured["VG-R hi"].tolist()[1:] == pytest.approx([min(100.0, 75 + half), 25 + half])
    assert measured["VG-R lo"].iloc[0] < 100 == measured["VG-R hi"].iloc[0]  # all right: not ± 0
    cell = f"75.0 [{75 - half:.1f}, {min(100.0, 75 + half):.1f}]"
    assert f"| sd-2.1-base | Info. i^o | 100 | 100.0 | measured | {cell} |" in md1
    assert "VG-R lo" not in md1 and "± 0.0" not in md1
    assert "| paper | Info. (logistic) | 100 | 100.0 | published | 69.1 |" in md1
    assert tables["table1"].attrs["markdown"] == md1
    tex = (out / "table1.tex").read_text()
    assert r"\toprule" in tex and "$i^{o}$" in tex
    combined = (out / "tables.md").read_text()
    assert "Table 1" in combined and "Table 2" in combined and "logsnr samples" in combined
    assert tables_markdown(tables).count("### ") == len(tables)
    reread = pd.read_csv(out / "table1.csv")
    assert reread["VG-R"].tolist() == pytest.approx(t1["VG-R"].tolist())


@pytest.mark.parametrize(
    ("model", "data", "shown"),
    [
        ("sd-2.1-base", "aro-vg-relation", True),
        ("tiny-sd", "aro-vg-relation", False),
        ("sd-2.1-base", "shapes-relation", False),
        ("shapes-oracle", "shapes-relation", False),
    ],
)
def test_published_numbers_only_in_the_paper_setting(tmp_path, model, data, shown):
    run = make_run(tmp_path / "run", "aro", model, data, aro_rows(ITEMS, ["io"], 100), ARO_COLUMNS)
    t1 = aggregate([run], tmp_path / "out")["table1"]
    assert ("published" in set(t1["source"])) is shown
    assert "accuracy_vs_samples" not in aggregate([run], tmp_path / "out2")


def test_adaptive_runs_group_by_configured_samples(tmp_path):
    rows = aro_rows(ITEMS, ["io"], 0)
    for r in rows:  # adaptive allocation: samples actually used vary per item
        r["n_samples"] = 10 if r["item_id"] in ("r1", "r2") else 30
    plain = make_run(
        tmp_path / "plain",
        "aro",
        "tiny-sd",
        "aro-vg-relation",
        aro_rows(ITEMS, ["io"], 100),
        ARO_COLUMNS,
    )
    adaptive = make_run(
        tmp_path / "adaptive",
        "aro",
        "tiny-sd",
        "aro-vg-relation",
        rows,
        ARO_COLUMNS,
        adaptive=True,
    )
    tables = aggregate([plain, adaptive], tmp_path / "out")
    t1 = tables["table1"]
    assert t1["method"].tolist() == ["Info. i^o", "Info. i^o (adaptive)"]
    assert t1["n_samples"].tolist() == [100, 100]
    assert t1["samples/item"].tolist() == pytest.approx([100.0, 20.0])
    assert t1["VG-R"].tolist() == pytest.approx([75.0, 75.0])
    assert "accuracy_vs_samples" not in tables
    methods = [c for c in tables["table2"].columns if c.startswith("Info.")]
    assert methods[:2] == ["Info. i^o", "Info. i^o (adaptive)"]


def test_conflicting_runs_are_an_error(aro_runs, tmp_path):
    main, _ = aro_runs
    copy = make_run(
        tmp_path / "again",
        "aro",
        "sd-2.1-base",
        "aro-vg-relation",
        aro_rows(ITEMS, ["io"], 100),
        ARO_COLUMNS,
    )
    with pytest.raises(ValueError, match="both report"):
        aggregate([main, copy], tmp_path / "out")


def loc_row(item, method, n_steps, split, cols):
    row = {
        "item_id": item,
        "word": "dog",
        "word_type": "noun",
        "method": method,
        "reference": "object mask",
        "n_steps": n_steps,
        "split": split,
        "value": 1.0 if method == "cmi" else None,
    }
    return (
        row | {c: cols.get(j, 0.0) for j, c in enumerate(IOU_COLUMNS)} | dict.fromkeys(SEG_COLUMNS)
    )


def localize_rows():
    rows = []
    for item, split, c5, c10 in [
        ("p1", "A", 0.8, 0.2),
        ("p2", "A", 0.6, 0.4),
        ("p3", "B", 0.1, 0.9),
        ("p4", "B", 0.3, 0.7),
    ]:
        rows.append(loc_row(item, "cmi", 50, split, {5: c5, 10: c10}))
        rows.append(loc_row(item, "attention", 50, split, dict.fromkeys(range(50), 0.4)))
        rows.append(loc_row(item, "whole", None, split, dict.fromkeys(range(50), 0.1)))
    # a pair without a ground-truth mask: no IoU at all, counted as unscored
    rows.append(loc_row("p5", "cmi", 50, "A", dict.fromkeys(range(50), NAN)))
    return rows


@pytest.mark.parametrize("paper", [True, False])
def test_table3_hand_computed(tmp_path, paper):
    model, data = ("sd-2.1-base", "coco-it") if paper else ("shapes-oracle", "shapes-localize")
    run = make_run(
        tmp_path / "loc",
        "localize",
        model,
        data,
        localize_rows(),
        LOCALIZE_COLUMNS,
        attention="daam",
    )
    t3 = aggregate([run], tmp_path / "out")["table3"].set_index("method")
    assert list(t3.index) == ["Whole image", "Attention (DAAM)", "CMI"]
    assert t3.loc["CMI", "50 steps paper"] == pytest.approx(55.0)
    assert t3.loc["CMI", "50 steps held-out"] == pytest.approx(25.0)
    assert t3.loc["Attention (DAAM)", "50 steps paper"] == pytest.approx(40.0)
    assert t3.loc["Whole image", "50 steps held-out"] == pytest.approx(10.0)
    assert t3["pairs"].tolist() == [4, 4, 4] and t3["unscored"].tolist() == [0, 0, 1]
    assert ("50 steps published" in t3.columns) is paper
    if paper:
        assert t3["50 steps published"].tolist() == [14.94, 34.52, 32.31]
        md = (tmp_path / "out" / "table3.md").read_text()
        se, pm = t3.loc["CMI", "50 steps se"], t3.loc["CMI", "50 steps ± (published rule)"]
        assert (
            f"| sd-2.1-base / coco-it | CMI | object mask | all | 55.00 | {se:.2f} | {pm:.2f} "
            "| 25.00 | 32.31 | 4 | 1 |" in md
        )
        assert "± (published rule): the published scripts' error bar" in md


def _table3_errors_restated(iou: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """The two error columns restated: the bootstrap se (n_boot resamples of all N pairs, std
    ddof 1) and the published scripts' rule (indices = randint(N, size=(100, int(0.9 N))),
    np.std of the statistic over them, / 10), the statistic being the best-threshold mIoU."""
    rng = np.random.default_rng(seed)
    boot = [iou[rng.integers(0, len(iou), size=len(iou))].mean(0).max() for _ in range(n_boot)]
    idx = np.random.default_rng(seed).integers(0, len(iou), size=(100, int(0.9 * len(iou))))
    published = np.std([iou[i].mean(0).max() for i in idx]) / 10
    return float(np.std(boot, ddof=1)), float(published)


def test_table3_se_and_published_error_bar_restated(tmp_path):
    """Table 3's `se` is the bootstrap se and its `± (published rule)` the published scripts'
    std-over-0.9N-resamples / 10, each matching a restatement; injected faults (no / 10, N
    instead of 0.9 N per resample) are caught."""
    rng = np.random.default_rng(5)
    rows = []
    for k in range(40):
        cols = dict(enumerate(rng.uniform(0, 1, size=50)))
        rows.append(loc_row(f"p{k}", "cmi", 50, "AB"[k % 2], cols))
    run = make_run(tmp_path / "loc", "localize", "sd-2.1-base", "coco-it", rows, LOCALIZE_COLUMNS)
    t3 = aggregate([run], tmp_path / "out", n_boot=200, seed=3)["table3"].set_index("method")
    iou = pd.DataFrame(rows)[IOU_COLUMNS].to_numpy()
    se, pm = _table3_errors_restated(iou, 200, 3)
    assert t3.loc["CMI", "50 steps se"] == pytest.approx(100 * se, rel=1e-9)
    assert t3.loc["CMI", "50 steps ± (published rule)"] == pytest.approx(100 * pm, rel=1e-9)
    # injected faults: without the / 10, or resampling N instead of 0.9 N, is another number
    assert t3.loc["CMI", "50 steps ± (published rule)"] != pytest.approx(1000 * pm, rel=1e-3)
    full = np.random.default_rng(3).integers(0, 40, size=(100, 40))
    wrong = np.std([iou[i].mean(0).max() for i in full]) / 10
    assert t3.loc["CMI", "50 steps ± (published rule)"] != pytest.approx(100 * wrong, rel=1e-3)


def test_table3_attention_variants_side_by_side(tmp_path):
    """Two runs that differ only in `attention`: both attention rows, the shared rows once."""
    rows = localize_rows()
    rows += [r | {"method": "attn_info"} for r in rows if r["method"] == "attention"]
    other = [
        r | {c: 0.6 for c in IOU_COLUMNS} if r["method"] in ("attention", "attn_info") else r
        for r in rows
    ]
    common = dict(run={"seed": 0, "out_dir": "x"}, steps=[50])
    paper = ("sd-2.1-base", "coco-it")
    daam = make_run(
        tmp_path / "d", "localize", *paper, rows, LOCALIZE_COLUMNS, attention="daam", **common
    )
    common["run"] = {"seed": 0, "out_dir": "y"}  # where a run went does not matter
    mean = make_run(
        tmp_path / "m",
        "localize",
        *paper,
        other,
        LOCALIZE_COLUMNS,
        attention="layer-mean",
        **common,
    )
    t3 = aggregate([mean, daam], tmp_path / "out")["table3"].set_index("method")
    assert list(t3.index) == [
        "Whole image",
        "Attention (DAAM)",
        "Attention (layer-mean)",
        "CMI",
        "Attention+Information (DAAM)",
        "Attention+Information (layer-mean)",
    ]
    assert t3.loc["Attention (DAAM)", "50 steps paper"] == pytest.approx(40.0)
    assert t3.loc["Attention (layer-mean)", "50 steps paper"] == pytest.approx(60.0)
    assert t3.loc["CMI", "50 steps paper"] == pytest.approx(55.0)
    published = t3["50 steps published"]  # the paper's attention rows are DAAM's
    assert (
        published["Attention (DAAM)"] == 34.52
        and published["Attention+Information (DAAM)"] == 42.46
    )
    assert np.isnan(published["Attention (layer-mean)"])
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "| Attention (layer-mean) | object mask | all | 60.00 |" in md
    # a run without the setting was written before it existed: it used the layer mean
    legacy = make_run(tmp_path / "l", "localize", *paper, rows, LOCALIZE_COLUMNS)
    assert "Attention (layer-mean)" in list(
        aggregate([legacy], tmp_path / "o2")["table3"]["method"]
    )
    # the same aggregation twice, or CMI rows from a different measurement: still an error
    twin = Path(shutil.copytree(daam, tmp_path / "daam-twin"))  # one path named twice is read once
    with pytest.raises(ValueError, match="both report"):
        aggregate([daam, twin], tmp_path / "o3")
    seed1 = make_run(
        tmp_path / "s", "localize", *paper, rows, LOCALIZE_COLUMNS, attention="layer-mean",
        run={"seed": 1}, steps=[50],
    )  # fmt: skip
    with pytest.raises(ValueError, match="both report"):
        aggregate([daam, seed1], tmp_path / "o4")


def intervene_rows():
    change = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    cmi = [1.2, 1.8, 3.5, 3.9, 5.1, 6.3]
    attn = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    prc = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    pra = [0.0, 0.1, 0.2, 0.1, 0.0, 0.2]
    return [
        {
            "item_id": f"i{k}",
            "word": "dog",
            "word_type": "noun",
            "edit": "omit" if k < 3 else "swap",
            "cmi_total": cmi[k],
            "cmi_stderr": 0.1,
            "attn_total": attn[k],
            "change_total": change[k],
            "pixel_r_cmi": prc[k],
            "pixel_r_attn": pra[k],
            "exact_total": None,
            "exact_stderr": None,
            "pixel_r_exact": None,
            "pixel_r_cmi_exact": None,
            "roundtrip_rmse": None,
        }
        for k in range(6)
    ]


def test_table4_hand_computed(tmp_path):
    rows = intervene_rows()
    run = make_run(
        tmp_path / "int",
        "intervene",
        "sd-2.1-base",
        "coco100-it",
        rows,
        INTERVENE_COLUMNS,
        attention="daam",
    )
    shapes = make_run(
        tmp_path / "int2", "intervene", "shapes-oracle", "shapes-intervene", rows, INTERVENE_COLUMNS
    )
    t4 = aggregate([run, shapes], tmp_path / "out", n_boot=100, seed=3)["table4"]
    df = pd.DataFrame(rows)
    paper = t4[t4["setting"] == "sd-2.1-base / coco100-it"].set_index(["edit", "method"])
    assert list(paper.index.get_level_values(0).unique()) == ["all", "omit", "swap"]
    assert paper.loc[("all", "CMI"), "image_r"] == pytest.approx(
        np.corrcoef(df.change_total, df.cmi_total)[0, 1]
    )
    assert paper.loc[("all", "Attention (DAAM)"), "image_r"] == pytest.approx(
        np.corrcoef(df.change_total, df.attn_total)[0, 1]
    )
    omit = df[df.edit == "omit"]
    assert paper.loc[("omit", "Attention (DAAM)"), "image_r"] == pytest.approx(
        np.corrcoef(omit.change_total, omit.attn_total)[0, 1]
    )
    assert paper.loc[("all", "CMI"), "pixel_r"] == pytest.approx(0.35)
    assert paper.loc[("swap", "Attention (DAAM)"), "pixel_r"] == pytest.approx(0.1)
    assert paper.loc[("all", "CMI"), "image_se"] > 0
    assert paper.loc[("all", "CMI"), "published_image_r"] == 0.34
    assert paper.loc[("all", "Attention (DAAM)"), "published_pixel_se"] == 0.002
    assert np.isnan(paper.loc[("omit", "CMI"), "published_image_r"])
    other = t4[t4["setting"] != "sd-2.1-base / coco100-it"]
    assert other["published_image_r"].isna().all()
    md = (tmp_path / "out" / "table4.md").read_text()
    assert "0.34 ± 0.010" in md


def test_visualize_and_bad_runs(tmp_path):
    viz = tmp_path / "viz"
    write_meta(
        viz,
        {"model": {"name": "shapes-oracle"}},
        device="cpu",
        dtype="float32",
        seed=0,
        wall_time_s=1.0,
        items_done=1,
        items_skipped=0,
        command="visualize",
    )
    check = tmp_path / "validate"
    write_meta(
        check,
        {},
        device="cpu",
        dtype="float32",
        seed=0,
        wall_time_s=1.0,
        items_done=1,
        items_skipped=0,
        command="validate",
    )
    tables = aggregate([tmp_path], tmp_path / "out")
    assert list(tables) == ["runs"]
    assert tables["runs"]["command"].tolist() == ["validate", "visualize"]
    bad = tmp_path / "bad"
    write_meta(
        bad,
        {},
        device="cpu",
        dtype="float32",
        seed=0,
        wall_time_s=1.0,
        items_done=0,
        items_skipped=0,
        command="train",
    )
    with pytest.raises(ValueError, match="not one of"):
        load_runs([bad])
    with pytest.raises(FileNotFoundError, match="runs: nothing found at .*nothing"):
        load_runs([tmp_path / "nothing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        load_runs([tmp_path / "empty"])
    loc = make_run(
        tmp_path / "loc",
        "localize",
        "tiny-sd",
        "coco-it",
        aro_rows(ITEMS, ["io"], 100),
        ARO_COLUMNS,
    )
    with pytest.raises(ValueError, match="columns .* missing for a 'localize' run"):
        aggregate([loc], tmp_path / "out3")


def test_rendering_helpers():
    shown = pd.DataFrame({"method": ["a|b", "c"], "acc": ["1.0", "–"]})
    md = to_markdown(shown, "T")
    assert "| a\\|b | 1.0 |" in md and "| --- | ---: |" in md
    assert latex_escape("50% of i^o & x_1 ± 2") == r"50\% of $i^{o}$ \& x\_1 $\pm$ 2"


def test_runs_without_finished_items_give_no_tables(tmp_path):
    ghost = aro_rows({"r9": ("on", {"io": [0.0, 1.0]})}, ["io"], 100)
    aro = make_run(
        tmp_path / "aro", "aro", "tiny-sd", "aro-vg-relation", [], ARO_COLUMNS, unfinished=ghost
    )
    loc = make_run(tmp_path / "loc", "localize", "tiny-sd", "coco-it", [], LOCALIZE_COLUMNS)
    itv = make_run(tmp_path / "itv", "intervene", "tiny-sd", "coco100-it", [], INTERVENE_COLUMNS)
    tables = aggregate([aro, loc, itv], tmp_path / "out")
    assert list(tables) == ["runs"]
    assert len(tables["runs"]) == 3


def test_data_source_and_revision_reach_table1_and_the_runs_table(tmp_path):
    hub = make_run(
        tmp_path / "hub", "aro", "tiny-sd", "aro-vg-relation", aro_rows(ITEMS, ["io"], 100),
        ARO_COLUMNS,
    )  # fmt: skip
    meta = (hub / "meta.json").read_text()
    # what the runner records from the loader (data.aro: source, hub id, revision)
    obj = json.loads(meta)
    obj["dataset"] = {
        "name": "aro-vg-relation",
        "source": "hf",
        "hf_name": "gowitheflow/ARO-Visual-Relation",
        "revision": "3867ad4f46a1ac2e63be034d1fc77dd8c2ef7209",
    }
    (hub / "meta.json").write_text(json.dumps(obj))
    old = make_run(  # written before the loader recorded its source: read from the config
        tmp_path / "old", "aro", "sd-2.1-base", "aro-vg-relation", aro_rows(ITEMS, ["io"], 100),
        ARO_COLUMNS,
    )  # fmt: skip
    tables = aggregate([hub, old], tmp_path / "out")
    sources = tables["runs"].set_index("model")["data_source"]
    assert sources["tiny-sd"] == (
        "Hugging Face gowitheflow/ARO-Visual-Relation @ 3867ad4f46a1ac2e63be034d1fc77dd8c2ef7209"
    )
    assert sources["sd-2.1-base"] == "files"
    md = (tmp_path / "out" / "table1.md").read_text()
    assert md.endswith(
        "\n- Data, VG-R: Hugging Face gowitheflow/ARO-Visual-Relation @ "
        "3867ad4f46a1ac2e63be034d1fc77dd8c2ef7209; files.\n"
    )
    tex = (tmp_path / "out" / "table1.tex").read_text()
    assert r"{\footnotesize Data, VG-R: Hugging Face" in tex and tex.endswith("\\end{table}\n")


def test_runs_accept_folders_globs_and_dots(tmp_path, monkeypatch):
    rows = aro_rows(ITEMS, ["io"], 100)
    for name, data in (("2025-01-01_10-00-00", "aro-vg-relation"), ("2025-01-02_09-00-00", None)):
        make_run(tmp_path / "outputs" / "aro" / name, "aro", "tiny-sd", data or "aro-vg-attribution",
                 [r | {"subset": "vg-attribution"} for r in rows] if data is None else rows,
                 ARO_COLUMNS)  # fmt: skip
    make_run(tmp_path / "outputs" / "localize" / "2025-01-03_08-00-00", "localize", "tiny-sd",
             "coco-it", localize_rows(), LOCALIZE_COLUMNS)  # fmt: skip
    monkeypatch.chdir(tmp_path)

    def runs(*given):
        return [str(r.path) for r in load_runs(given)]

    a1, a2 = "outputs/aro/2025-01-01_10-00-00", "outputs/aro/2025-01-02_09-00-00"
    loc = "outputs/localize/2025-01-03_08-00-00"
    assert runs("outputs/aro", "outputs/localize") == [a1, a2, loc]  # parent folders
    assert runs("outputs/aro/...", "outputs/localize/...") == [a1, a2, loc]  # the README's old form
    assert runs("outputs/aro/2025-01-01*") == [a1]  # a glob
    assert runs("outputs/*/2025-*") == [a1, a2, loc]
    assert runs("outputs/**/2025-01-0[23]*") == [a2, loc]
    assert runs("outputs", a1) == [a1, a2, loc]  # a run named twice is read once
    with pytest.raises(FileNotFoundError) as err:
        load_runs(["outputs/aro/2024-*", "outputs/missing"])
    msg = str(err.value)
    assert "nothing found at outputs/aro/2024-*, outputs/missing" in msg and "\n" not in msg
    tables = aggregate(["outputs/*"], tmp_path / "tables")
    assert {"table1", "table3", "runs"} <= set(tables) and len(tables["runs"]) == 3


def test_table3_per_word_type_and_exact_references(tmp_path):
    """ShapesWorld rows per word type (labelled colour / shape / relation), the exact-map
    reference beside the object masks, and a note saying what they mean."""
    rows = []
    for k, (word_type, split) in enumerate(
        [("adj", "A"), ("adj", "B"), ("noun", "A"), ("noun", "B"), ("perp", "A"), ("perp", "B")]
    ):
        score = {"adj": 0.9, "noun": 0.2, "perp": 0.5}[word_type]
        for method, reference, value in (
            ("cmi", "object mask", score),
            ("exact", "object mask", score + 0.05),
            ("cmi", "exact map", 0.95),
        ):
            row = loc_row(f"p{k}", method, 100, split, dict.fromkeys(range(50), value))
            rows.append(row | {"word_type": word_type, "reference": reference})
    run = make_run(
        tmp_path / "loc", "localize", "shapes-oracle", "shapes-localize", rows, LOCALIZE_COLUMNS
    )
    t3 = aggregate([run], tmp_path / "out")["table3"]
    t3 = t3.set_index(["method", "reference", "words"])["100 steps paper"]
    assert t3[("CMI", "object mask", "all")] == pytest.approx(100 * (0.9 + 0.2 + 0.5) / 3)
    assert t3[("CMI", "object mask", "colour (adj)")] == pytest.approx(90.0)
    assert t3[("CMI", "object mask", "shape (noun)")] == pytest.approx(20.0)
    assert t3[("CMI", "object mask", "relation (perp)")] == pytest.approx(50.0)
    assert t3[("Exact CMI (oracle)", "object mask", "shape (noun)")] == pytest.approx(25.0)
    assert t3[("CMI", "exact map", "all")] == pytest.approx(95.0)
    md = (tmp_path / "out" / "table3.md").read_text()
    assert "Reference 'exact map'" in md and "| CMI | exact map | all |" in md


def test_table4_exact_rows_and_decomposition(tmp_path):
    """With exact totals (ShapesWorld oracle): rows for the exact CMI and the estimate against it,
    per word type, and the note splitting the image-level r into word type and noise."""
    gen = np.random.default_rng(0)
    rows = []
    for k in range(40):
        word_type = "adj" if k % 2 else "noun"
        exact = (1.4 if word_type == "adj" else 1.1) + 0.05 * gen.standard_normal()
        est = exact + 0.4 * gen.standard_normal()
        change = 100 * exact + 10 * gen.standard_normal()
        rows.append(
            {
                "item_id": f"i{k}",
                "word": "w",
                "word_type": word_type,
                "edit": "omit",
                "cmi_total": est,
                "cmi_stderr": 0.4,
                "attn_total": None,
                "change_total": change,
                "pixel_r_cmi": 0.5,
                "pixel_r_attn": None,
                "exact_total": exact,
                "exact_stderr": 0.01,
                "pixel_r_exact": 0.6,
                "pixel_r_cmi_exact": 0.9,
                "roundtrip_rmse": None,
            }
        )
    run = make_run(
        tmp_path / "int", "intervene", "shapes-oracle", "shapes-intervene", rows, INTERVENE_COLUMNS
    )
    t4 = aggregate([run], tmp_path / "out", n_boot=50)["table4"]
    df = pd.DataFrame(rows)
    allw = t4[t4["words"] == "all"].set_index("method")
    assert list(allw.index) == ["CMI", "Exact CMI (oracle)", "CMI estimate vs exact CMI"]
    assert allw.loc["Exact CMI (oracle)", "image_r"] == pytest.approx(
        np.corrcoef(df.change_total, df.exact_total)[0, 1]
    )
    assert allw.loc["CMI estimate vs exact CMI", "image_r"] == pytest.approx(
        np.corrcoef(df.cmi_total, df.exact_total)[0, 1]
    )
    assert allw.loc["CMI estimate vs exact CMI", "pixel_r"] == pytest.approx(0.9)
    assert set(t4["words"]) == {"all", "colour (adj)", "shape (noun)"}
    note = allw.loc["CMI", "note"]
    # word type carries most of the exact CMI's variance here, noise most of the estimate's
    share = float(note.split("Word type holds ")[1].split("%")[0])
    noise = float(note.split("Monte Carlo noise is ")[1].split("%")[0])
    assert share > 80 and noise > 50
    md = (tmp_path / "out" / "table4.md").read_text()
    assert "Exact CMI (oracle): the correlation with the exact CMI" in md


def test_table3_names_the_published_bug_baselines_and_keeps_mi_prompts_apart(tmp_path):
    """A baseline_input=zero-one-published-bug run's attention rows are named apart (the paper's
    numbers beside them: the published baselines ran that way); its CMI rows are the normal
    run's. Runs that differ in mi_prompt or map_draws are different CMI / MI measurements."""
    rows = localize_rows()
    other = [r | {c: 0.6 for c in IOU_COLUMNS} if r["method"] == "attention" else r for r in rows]
    common = dict(run={"seed": 0}, steps=[50], attention="daam")
    paper = ("sd-2.1-base", "coco-it")
    good = make_run(tmp_path / "g", "localize", *paper, rows, LOCALIZE_COLUMNS, **common)
    bug = make_run(
        tmp_path / "b", "localize", *paper, other, LOCALIZE_COLUMNS,
        baseline_input="zero-one-published-bug", **common,
    )  # fmt: skip
    t3 = aggregate([good, bug], tmp_path / "out")["table3"].set_index("method")
    label = "Attention (DAAM, [0, 1] pixels: published bug)"
    assert list(t3.index) == ["Whole image", "Attention (DAAM)", label, "CMI"]
    assert t3.loc[label, "50 steps paper"] == pytest.approx(60.0)
    assert t3.loc[label, "50 steps published"] == 34.52
    label_prompt = make_run(
        tmp_path / "l", "localize", *paper, other, LOCALIZE_COLUMNS,
        baseline_input="zero-one-published-bug", mi_prompt="label", **common,
    )  # fmt: skip
    with pytest.raises(ValueError, match="both report"):  # another CMI measurement, same setting
        aggregate([good, label_prompt], tmp_path / "o2")

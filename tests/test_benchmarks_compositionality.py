"""SugarCrepe and Winoground: loaders on fixtures in the published formats, the authors' metric
rules on hand-computed examples (ties included), common random numbers across a Winoground
example's two images, the exact-oracle Winoground set, and both benchmarks end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.engine import EngineConfig, Query, draw, estimate
from infodecomp.estimators.samplers import LogsnrSampler
from infodecomp.models.oracles.exact import ShapesOracle
from infodecomp.reporting.metrics import ranking_scores
from infodecomp.tasks import get_task
from infodecomp.tasks.sugarcrepe import SUBSETS

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


@pytest.fixture(scope="module")
def sugarcrepe_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sugarcrepe")
    for n, stem in enumerate(SUBSETS):
        recs = {
            str(10 * n + 3): {  # ids need not be contiguous
                "filename": f"0000000000{n:02d}.jpg",
                "caption": f"a dog on a red sofa {n}",
                "negative_caption": f"a red dog on a sofa {n}",
            }
        }
        if stem == "swap_obj":
            recs["99"] = {"filename": "x.jpg", "caption": "", "negative_caption": "a cat"}  # bad
            recs["100"] = {"filename": "corrupt.jpg", "caption": "a b", "negative_caption": "b a"}
        (root / f"{stem}.json").write_text(json.dumps(recs))
        _png(root / "val2017" / f"0000000000{n:02d}.jpg", (20 * n, 100, 50))
    (root / "val2017" / "corrupt.jpg").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def winoground_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("winoground")
    lines = []
    for i in range(3):
        lines.append(
            json.dumps(
                {"id": i, "caption_0": f"a mug in some grass {i}", "caption_1": f"some grass in a mug {i}",
                 "image_0": f"ex_{i}_img_0", "image_1": f"ex_{i}_img_1", "tag": "Object" if i else "Relation",
                 "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"}
            )
        )  # fmt: skip
        for k in (0, 1):
            _png(root / "images" / f"ex_{i}_img_{k}.png", (200 * k, 40 * i, 90))
    lines.insert(1, "{not json")
    (root / "examples.jsonl").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------------ loaders


def test_sugarcrepe_loader(sugarcrepe_root: Path) -> None:
    ds = load_dataset(DataSpec(name="sugarcrepe", root=str(sugarcrepe_root)))
    assert len(ds.items) == 8 and [s.item_id for s in ds.skipped] == ["sugarcrepe-swap-obj-99"]
    it = ds.items[0]
    assert it.item_id == "sugarcrepe-add-att-3" and it.subset == "sugarcrepe-add-att"
    assert it.options == ("a red dog on a sofa 0", "a dog on a red sofa 0") and it.label == 1
    one = load_dataset(DataSpec(name="sugarcrepe-replace-rel", root=str(sugarcrepe_root)))
    assert [i.item_id for i in one.items] == ["sugarcrepe-replace-rel-43"]
    with pytest.raises(
        FileNotFoundError, match=r"SugarCrepe folder not found: .*nowhere.*sugar-crepe"
    ):
        load_dataset(DataSpec(name="sugarcrepe", root=str(sugarcrepe_root / "nowhere")))


def test_winoground_loader(winoground_root: Path) -> None:
    ds = load_dataset(DataSpec(name="winoground", root=str(winoground_root)))
    assert [s.item_id for s in ds.skipped] == [
        "winoground-line2"
    ] and "not valid JSON" in ds.skipped[0].reason
    assert [i.item_id for i in ds.items[:2]] == ["winoground-0-img0", "winoground-0-img1"]
    a, b = ds.items[:2]
    assert a.options == b.options and (a.label, b.label) == (0, 1) and a.group == "Relation"
    assert a.draw_key == b.draw_key == "winoground-0"
    assert a.image.path.endswith("images/ex_0_img_0.png")


# ----------------------------------------------------------------------------- metric rules


def _rows(subset: str, table: list[tuple[str, int, int, float]], group: str = "g") -> pd.DataFrame:
    return pd.DataFrame(
        [dict(item_id=i, subset=subset, group=group, label=lab, option=o, estimator="io", score=s)
         for i, lab, o, s in table]
    )  # fmt: skip


def test_sugarcrepe_rule_counts_a_tie_as_wrong() -> None:
    # options [negative, positive], label 1: item a right, b tie (wrong), c wrong
    df = _rows("sugarcrepe-swap-att", [("a", 1, 0, 0.1), ("a", 1, 1, 0.9), ("b", 1, 0, 0.5),
                                       ("b", 1, 1, 0.5), ("c", 1, 0, 0.7), ("c", 1, 1, 0.2)])  # fmt: skip
    (r,) = ranking_scores(df)
    assert r["metrics"] == {"accuracy": pytest.approx(1 / 3)}
    assert get_task("sugarcrepe-swap-att").mean_group == "Swap"


def test_winoground_text_image_group_by_hand() -> None:
    s = {  # example -> {(image, caption): score}
        "e1": {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 3},  # text, image, group right
        "e2": {
            (0, 0): 3,
            (0, 1): 1,
            (1, 0): 2,
            (1, 1): 4,
        },  # text right; image: c0 on i1 (2) < 3 ok,
        # c1 on i1 (4) > c1 on i0 (1) ok -> image right too
        "e3": {
            (0, 0): 2,
            (0, 1): 1,
            (1, 0): 3,
            (1, 1): 4,
        },  # text right; image: s(c0,i0)=2 < s(c0,i1)=3
        "e4": {
            (0, 0): 1,
            (0, 1): 1,
            (1, 0): 0,
            (1, 1): 2,
        },  # text tie on image 0 -> wrong; image right
    }
    table = [(f"{e}-img{i}", i, c, float(v)) for e, d in s.items() for (i, c), v in d.items()]
    (r,) = ranking_scores(_rows("winoground", table))
    assert r["metrics"] == {"text": 0.75, "image": 0.75, "group": 0.5}
    assert r["per_group"]["accuracy"].tolist() == [0.5] and r["per_group"].attrs["incomplete"] == 0
    # an example with one image missing is left out, and counted
    (r2,) = ranking_scores(_rows("winoground", [t for t in table if t[0] != "e4-img1"]))
    assert (
        r2["metrics"]["group"] == pytest.approx(2 / 3) and r2["per_group"].attrs["incomplete"] == 1
    )


# ------------------------------------------------------------- common random numbers, oracle


def test_both_images_share_draws_and_that_lowers_the_variance() -> None:
    """One (logsnr, eps) draw for both images. Measured over 40 seeds (tests/ note in README):
    the denoising-loss image difference gets 3-50x less spread; i^o and i^s differences about
    the same (ratio 0.5-1.3), since their per-sample terms change sign between the images."""
    ds = load_dataset(DataSpec(name="shapes-winoground", size=1))
    a, b = ds.items
    oracle = ShapesOracle()
    cfg = EngineConfig(n_samples=8, sampler=LogsnrSampler())
    qa = Query(a.image, (*a.options, ""), ((0, 2), (1, 2)), key=a.draw_key)
    qb = Query(b.image, (*b.options, ""), ((0, 2), (1, 2)), key=b.draw_key)
    la, _, ea = draw(qa, cfg)
    lb, _, eb = draw(qb, cfg)
    assert torch.equal(la, lb) and torch.equal(ea, eb)

    def spread(shared: bool) -> float:
        q2 = qb if shared else Query(b.image, qb.conditions, qb.contrasts, key="other")
        diffs = []
        for seed in range(24):
            c = EngineConfig(n_samples=8, sampler=LogsnrSampler(), seed=seed)
            ea_, eb_ = estimate(oracle, [qa, q2], c)
            diffs.append(ea_.score("mmse", 0)[0] - eb_.score("mmse", 0)[0])  # caption 0, i0 vs i1
        return float(torch.tensor(diffs).std())

    assert spread(True) < 0.5 * spread(False)


def test_exact_oracle_winoground_gives_the_exact_answers() -> None:
    """i^s decisions equal the decisions of the exact pointwise information log p(x|c) - log p(x)."""
    noise = 3.0  # the noisiest world of the README: small margins, still exact answers
    ds = load_dataset(DataSpec(name="shapes-winoground", size=12, noise=noise))
    oracle = ShapesOracle(sigma0=noise)
    wide = LogsnrSampler(kind="uniform", low=-12.0, high=20.0, mode="stratified")
    queries = [
        Query(it.image, (*it.options, ""), ((0, 2), (1, 2)), key=it.draw_key) for it in ds.items
    ]
    ests = estimate(oracle, queries, EngineConfig(n_samples=400, sampler=wide, max_batch=4096))
    rows_est, rows_exact = [], []
    for it, e in zip(ds.items, ests, strict=True):
        base = float(oracle.log_prob(it.image[None], ""))
        for j, cap in enumerate(it.options):
            common = dict(
                item_id=it.item_id, subset=it.subset, group=it.group, label=it.label, option=j
            )
            rows_est.append(common | {"estimator": "is", "score": e.info_s(j)[0]})
            exact = float(oracle.log_prob(it.image[None], cap)) - base
            rows_exact.append(common | {"estimator": "exact", "score": exact})
    (est,) = ranking_scores(pd.DataFrame(rows_est))
    (ex,) = ranking_scores(pd.DataFrame(rows_exact))
    assert est["metrics"] == ex["metrics"] == {"text": 1.0, "image": 1.0, "group": 1.0}


# -------------------------------------------------------------------------------- end to end


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", *args, "run.progress=false", "run.device=cpu"],
        capture_output=True, text=True, cwd=cwd, env=ENV, timeout=300, check=False,
    )  # fmt: skip


def test_both_benchmarks_end_to_end_into_table1(
    sugarcrepe_root: Path, winoground_root: Path, tmp_path: Path
) -> None:
    common = ("model=tiny-sd", "estimator.n_samples=4")
    sc, wg = tmp_path / "sc", tmp_path / "wg"
    res = _cli(
        "aro",
        "data=sugarcrepe",
        f"data.root={sugarcrepe_root}",
        f"run.out_dir={sc}",
        *common,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    skipped = pd.read_csv(sc / "skipped.csv")
    assert set(skipped["item_id"]) == {"sugarcrepe-swap-obj-99", "sugarcrepe-swap-obj-100"}
    summary = json.loads((sc / "summary.json").read_text())
    assert {
        "accuracy/io",
        "accuracy/is/sugarcrepe-add-att",
        "accuracy/mmse/sugarcrepe-swap-obj",
    } <= set(summary)
    res = _cli(
        "aro",
        "data=winoground",
        f"data.root={winoground_root}",
        f"run.out_dir={wg}",
        *common,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "text i^o" in res.stdout and "; group i^o" in res.stdout
    summary = json.loads((wg / "summary.json").read_text())
    assert {"text/io", "image/is", "group/mmse"} <= set(summary)
    res = _cli("aggregate", f"runs=[{sc},{wg}]", f"run.out_dir={tmp_path / 't'}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    t1 = pd.read_csv(tmp_path / "t" / "table1.csv")
    for col in ("SC add-att", "SC swap-obj", "SugarCrepe Add (mean)", "SugarCrepe Swap (mean)",
                "Winoground text", "Winoground image", "Winoground group"):  # fmt: skip
        assert col in t1.columns, col
    row = t1[t1["method"] == "Info. i^o"].iloc[0]
    adds = [row["SC add-att"], row["SC add-obj"]]
    assert row["SugarCrepe Add (mean)"] == pytest.approx(sum(adds) / 2)

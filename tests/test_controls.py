"""data.control=shuffled-images: every item's captions scored on another item's image (a fixed
derangement), reported beside Table 1 as accuracy_control/<score>."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from infodecomp.data.controls import derangement
from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.experiments.commands import aro
from infodecomp.experiments.config import AroConfig
from infodecomp.reporting.aggregate import aggregate


@pytest.mark.parametrize("n", [2, 3, 10, 57])
def test_derangement_moves_every_item(n: int) -> None:
    partner = derangement(n, seed=4)
    assert sorted(partner) == list(range(n))  # a permutation
    assert all(p != i for i, p in enumerate(partner))  # no fixed point
    assert partner == derangement(n, seed=4) and (n < 4 or partner != derangement(n, seed=5))


def test_shuffled_images_keep_captions_and_labels() -> None:
    spec = DataSpec(name="shapes-relation", size=12, seed=1)
    plain = load_dataset(spec)
    ctrl = load_dataset(
        DataSpec(name="shapes-relation", size=12, seed=1, control="shuffled-images")
    )
    assert ctrl.info["control"] == "shuffled-images" and "control" not in plain.info
    images = [it.image for it in plain.items]
    for a, b in zip(plain.items, ctrl.items, strict=True):
        assert (a.item_id, a.options, a.label, a.group) == (b.item_id, b.options, b.label, b.group)
        assert not torch.equal(a.image, b.image)  # another item's image ...
        assert any(torch.equal(b.image, im) for im in images)  # ... from the same set
    # a limit is applied first: the partners come from the items that are run
    limited = load_dataset(DataSpec(name="shapes-relation", size=12, control="shuffled-images"), 3)
    assert len(limited.items) == 3


def test_controls_refused_where_they_do_not_apply() -> None:
    with pytest.raises(ValueError, match="ranking items"):
        load_dataset(DataSpec(name="shapes-localize", size=4, control="shuffled-images"))
    with pytest.raises(ValueError, match="at least 2 items"):
        load_dataset(DataSpec(name="shapes-relation", size=1, control="shuffled-images"))
    with pytest.raises(ValueError, match="not one of: shuffled-images"):
        load_dataset(DataSpec(name="shapes-relation", size=4, control="bogus"))


def _run(out: Path, control: str | None) -> Path:
    cfg = AroConfig()
    cfg.data.name, cfg.data.size, cfg.data.control = "shapes-relation", 8, control
    cfg.estimator.n_samples, cfg.run.out_dir, cfg.run.progress = 20, str(out), False
    return aro.run(cfg)


def test_control_run_is_reported_beside_table1(tmp_path: Path) -> None:
    plain, ctrl = _run(tmp_path / "plain", None), _run(tmp_path / "ctrl", "shuffled-images")
    summary = json.loads((ctrl / "summary.json").read_text())
    assert {"accuracy_control/io", "accuracy_control/is", "accuracy_control/mmse"} <= set(summary)
    assert not any(k.startswith("accuracy/") for k in summary)
    tables = aggregate([plain, ctrl], tmp_path / "tables")
    t1 = tables["table1"]
    assert set(t1["source"]) == {"measured", "shuffled-images control"}
    ctrl_rows = t1[t1["source"] == "shuffled-images control"].set_index("method")
    measured = t1[t1["source"] == "measured"].set_index("method")
    # on the exact oracle i^s reads the image: perfect on the items, chance-level without them
    assert measured.loc["Info. i^s", "shapes-relation"] == 100.0
    assert ctrl_rows.loc["Info. i^s", "shapes-relation"] < 100.0
    assert "shuffled-images control" in (tmp_path / "tables" / "table1.md").read_text()

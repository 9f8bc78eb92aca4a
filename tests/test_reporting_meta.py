"""meta.json / summary.json contents, and the no-torch boundary of infodecomp.reporting."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

import pandas as pd
import pytest

from infodecomp.reporting.meta import git_revision, read_json, write_meta, write_summary
from infodecomp.reporting.published import TABLE1, TABLE3, TABLE4, published_miou


def test_write_meta_contents(tmp_path):
    config = {
        "model": {"name": "tiny-sd"},
        "data": {"name": "shapes-relation", "root": tmp_path},
        "estimator": {"n_samples": 10},
    }
    path = write_meta(
        tmp_path,
        config,
        device="cpu",
        dtype="float32",
        seed=3,
        wall_time_s=12.5,
        items_done=7,
        items_skipped=1,
        extra={"world_size": 2},
        command="aro",
    )
    meta = json.loads(path.read_text())
    assert meta["command"] == "aro"
    assert meta["config"]["data"]["root"] == str(tmp_path)
    assert (meta["seed"], meta["items_done"], meta["items_skipped"]) == (3, 7, 1)
    assert meta["wall_time_s"] == 12.5 and meta["world_size"] == 2
    assert meta["versions"]["pandas"] == pd.__version__
    assert meta["versions"]["hydra-core"] == metadata.version("hydra-core")
    assert set(meta["versions"]) >= {
        "infodecomp",
        "torch",
        "diffusers",
        "transformers",
        "hydra-core",
        "pandas",
        "pycocotools",
        "datasets",
    }
    assert meta["python"] == sys.version.split()[0]
    assert meta["started_at"] < meta["finished_at"]
    with pytest.raises(ValueError, match="overwrite standard fields"):
        write_meta(
            tmp_path,
            config,
            device="cpu",
            dtype="float32",
            seed=3,
            wall_time_s=1,
            items_done=0,
            items_skipped=0,
            extra={"seed": 1},
        )


def test_git_revision(tmp_path):
    assert git_revision(tmp_path) is None  # not a git checkout
    pkg = tmp_path / "repo" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(pkg.parent), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    assert git_revision(pkg) is None  # inside a repository but not tracked (like a venv copy)
    git("add", "pkg/__init__.py")
    git("commit", "-q", "-m", "init")
    rev = git_revision(pkg)
    assert rev["commit"] == git("rev-parse", "HEAD") and rev["dirty"] is False
    (pkg / "__init__.py").write_text("x = 2\n")
    assert git_revision(pkg)["dirty"] is True


def test_write_summary_flat(tmp_path):
    write_summary(
        tmp_path, {"accuracy": {"io": 0.75, "mmse": float("nan")}, "miou/cmi": 0.3, "n_items": 4}
    )
    summary = read_json(tmp_path / "summary.json")
    assert summary == {"accuracy/io": 0.75, "accuracy/mmse": None, "miou/cmi": 0.3, "n_items": 4}
    with pytest.raises(ValueError, match="must be scalars"):
        write_summary(tmp_path, {"curve": [1, 2]})
    with pytest.raises(FileNotFoundError, match="finished run directory"):
        read_json(tmp_path / "meta.json")


def test_published_numbers():
    assert TABLE1["Info. (logistic)"] == {
        "vg-attribution": 72.0,
        "vg-relation": 69.1,
        "coco-order": 40.1,
        "flickr-order": 49.3,
    }
    assert TABLE3["attn_info"] == {50: 42.46, 100: 42.71, 200: 42.84}
    assert published_miou("whole", 200) == 14.94 and published_miou("mi", 100) is None
    assert TABLE4["attention"]["pixel"] == (0.21, 0.002)


SCRIPT = """
import sys, pathlib, tempfile
import infodecomp.reporting as rep
from infodecomp.reporting import figures
d = pathlib.Path(tempfile.mkdtemp())
from infodecomp.reporting.store import store_path
from infodecomp.reporting.writer import ARO_KEY
with rep.RunStore.open(store_path(d), command='aro', columns=rep.ARO_COLUMNS, key=ARO_KEY,
                       fingerprint={}) as w:
    w.commit([dict(item_id='a', subset='vg-relation', group='on', label=1, option=k, text='t',
                   estimator='io', value=v, stderr=0.0, score=v, n_samples=1, n_report=1,
                   values_from='same draws')
              for k, v in enumerate([0.1, 0.2])], [('a', 0)])
rep.export(d)
rep.write_meta(d, {'model': {'name': 'x'}}, device='cpu', dtype='float32', seed=0,
               wall_time_s=0.0, items_done=1, items_skipped=0, command='aro')
rep.aggregate([d], d / 'out')
figures.save(figures.panel(__import__('numpy').zeros((4, 4, 3)), {}, []), d / 'p.png')
print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers')))
"""


def test_reporting_never_loads_torch():
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"

"""docs/extending.md followed literally: the code blocks of a recipe are written where the page
says, into a copy of the package; the files and lines they add are counted, and the addition
runs end to end through the command line (a fresh interpreter on the copy)."""

from __future__ import annotations

import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def blocks(section: str) -> list[str]:
    """The fenced code blocks of the extending.md section whose title starts with `section`."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else None]
    return [m.group(1) for m in re.finditer(r"```[a-z]*\n(.*?)```", body, flags=re.S)]


def copy_package(tmp: Path) -> Path:
    for name in ("infodecomp", "configs"):
        shutil.copytree(REPO / name, tmp / name, ignore=IGNORE)
    return tmp


def added(tmp: Path) -> dict[str, int]:
    """File (relative) -> lines it adds, for every file of the copy that differs from the repo."""
    out = {}
    for path in sorted([*(tmp / "infodecomp").rglob("*"), *(tmp / "configs").rglob("*")]):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(tmp)
        old_path = REPO / rel
        if old_path.exists() and old_path.read_bytes() == path.read_bytes():
            continue
        new = path.read_text(encoding="utf-8").splitlines()
        old = old_path.read_text(encoding="utf-8").splitlines() if old_path.exists() else []
        if new != old:
            diff = difflib.unified_diff(old, new, lineterm="", n=0)
            out[str(rel)] = sum(1 for d in diff if d.startswith("+") and not d.startswith("+++"))
    return out


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tmp), "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", *args, "run.progress=false"],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=env,
        timeout=600,
        check=False,
    )


def add_family(tmp: Path) -> str:
    """The model-family recipe: the declaration into the module its preset names, the preset
    into the PRESETS table. Returns the preset's name."""
    module_code, preset_line = blocks("A model family")
    family = re.search(r'"(infodecomp\.[\w.]+):(\w+)"', preset_line)
    assert family, preset_line
    path = tmp / Path(*family.group(1).split(".")).with_suffix(".py")
    path.write_text(module_code, encoding="utf-8")
    presets = tmp / "infodecomp" / "models" / "presets.py"
    text = presets.read_text(encoding="utf-8")
    anchor = "    for p in (\n"
    presets.write_text(text.replace(anchor, anchor + "        " + preset_line, 1))
    return re.search(r'Preset\(\s*"([^"]+)"', preset_line).group(1)  # type: ignore[union-attr]


def test_a_new_sd_shaped_family_is_two_files_and_at_most_30_lines(tmp_path: Path) -> None:
    from infodecomp.models.tiny.sd import tiny_sd_path

    tmp = copy_package(tmp_path / "pkg")
    name = add_family(tmp)
    touched = added(tmp)
    assert len(touched) <= 2 and sum(touched.values()) <= 30, touched
    assert any(f.startswith("infodecomp/models/families/") for f in touched), touched
    out = tmp_path / "run"
    res = cli(
        tmp,
        "aro",
        f"model={name}",
        f"model.path={tiny_sd_path()}",
        "data=shapes-relation",
        "run.limit=2",
        "estimator.n_samples=4",
        f"run.out_dir={out}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model_source"]["family"].endswith(":ClipSkipDenoiser")
    assert "accuracy/io" in json.loads((out / "summary.json").read_text())


def test_the_count_sees_every_file_a_recipe_touches(tmp_path: Path) -> None:
    """Control: a third file edited (a registry line, as the recipe once needed) is counted."""
    tmp = copy_package(tmp_path / "pkg")
    add_family(tmp)
    registry = tmp / "infodecomp" / "models" / "registry.py"
    registry.write_text(registry.read_text() + "\n# one more line\n")
    touched = added(tmp)
    assert len(touched) == 3 and touched["infodecomp/models/registry.py"] == 2


def _toy_data(root: Path) -> None:
    from PIL import Image

    root.mkdir(parents=True)
    records = []
    for i in range(3):
        Image.new("RGB", (32, 32), (40 * i, 200, 90)).save(root / f"img{i}.png")
        caption = ["a green square", "a red circle"]
        records.append({"image": f"img{i}.png", "options": caption, "label": i % 2})
    records.append({"image": "img0.png", "options": ["only one"], "label": 0})  # skipped
    (root / "toy-bench.json").write_text(json.dumps(records))


def test_a_new_json_benchmark_is_two_files(tmp_path: Path) -> None:
    task_code, config = blocks("A ranking benchmark")[:2]
    tmp = copy_package(tmp_path / "pkg")
    name = re.search(r"^name: (\S+)", config, flags=re.M).group(1)  # type: ignore[union-attr]
    (tmp / "infodecomp" / "tasks" / f"{name.replace('-', '_')}.py").write_text(task_code)
    (tmp / "configs" / "data" / f"{name}.yaml").write_text(config)
    touched = added(tmp)
    assert len(touched) <= 2, touched
    _toy_data(tmp_path / "data")
    out = tmp_path / "run"
    res = cli(
        tmp,
        "aro",
        "model=tiny-sd",
        f"data={name}",
        f"data.root={tmp_path / 'data'}",
        "estimator.n_samples=4",
        f"run.out_dir={out}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    skipped = (out / "skipped.csv").read_text()
    assert "toy-bench-3" in skipped and "label 0 is not the index" not in skipped
    assert "two or more captions" in skipped
    res = cli(tmp, "aggregate", f"runs=[{out}]", f"run.out_dir={tmp_path / 'tables'}")
    assert res.returncode == 0, res.stderr[-3000:]
    table = next((tmp_path / "tables").glob("table1*.md")).read_text()
    assert "Toy" in table, table


@pytest.mark.parametrize("section", ["A model family", "A ranking benchmark"])
def test_the_recipes_have_their_code_blocks(section: str) -> None:
    assert len(blocks(section)) >= 2

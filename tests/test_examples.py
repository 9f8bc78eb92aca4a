"""The documented examples run: examples/quickstart.py and the README's Python API example."""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- tested by tests/test_examples.py -->"


def _pngs_ok(paths: list[Path]) -> None:
    for p in paths:
        with Image.open(p) as im:
            im.verify()


def test_quickstart_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    out = tmp_path / "figures"
    argv = ["quickstart.py", "--out", str(out), "--n-samples", "6", "--daam-steps", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(REPO / "examples" / "quickstart.py"), run_name="__main__")
    text = capsys.readouterr().out
    assert "Model('shapes-oracle'" in text and "Model('tiny-sd'" in text
    assert re.search(r"ranking by is: \d of 4 images", text)
    assert re.search(r"CMI '\w+' \| context: -?[\d.]+ ± [\d.]+ nats", text)
    assert "Attention+Information (daam)" in text  # tiny-sd has cross-attention
    names = {"shapes-maps.png", "shapes-mmse.png", "tiny-sd-maps.png"}
    assert {p.name for p in out.glob("*.png")} == names
    _pngs_ok(sorted(out.glob("*.png")))


def test_readme_api_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert MARKER in readme, "the README's API example lost its marker"
    block = re.search(r"```python\n(.*?)```", readme[readme.index(MARKER) :], re.S)
    assert block is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {"__name__": "readme"})
    text = capsys.readouterr().out
    assert "io_se" in text and "'cmi'" in text
    _pngs_ok([tmp_path / "maps.png", tmp_path / "mmse.png"])

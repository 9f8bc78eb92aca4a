"""tiny-sd: an offline, deterministic, cached pipeline that loads through the adapter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from infodecomp.models.tiny import sd as tiny


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in (".safetensors", ".json", ".txt")
    }


def test_layout_and_configs(tiny_sd_dir: Path) -> None:
    index = json.loads((tiny_sd_dir / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    sched = json.loads((tiny_sd_dir / "scheduler" / "scheduler_config.json").read_text())
    assert (sched["beta_schedule"], sched["beta_start"], sched["beta_end"]) == (
        "scaled_linear",
        0.00085,
        0.012,
    )
    assert sched["prediction_type"] == "epsilon" and sched["num_train_timesteps"] == 1000
    assert (tiny_sd_dir / "tokenizer" / "merges.txt").read_text().startswith("#version: 0.2\ni n\n")


def test_build_is_deterministic_and_cached(
    tiny_sd_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tiny.CACHE_ENV, str(tmp_path / "cache"))
    path = tiny.tiny_sd_path()
    assert path == tmp_path / "cache" / tiny.TINY_NAME
    assert _digest(path) == _digest(tiny_sd_dir)  # same bytes as the session's independent build
    assert [p.name for p in path.parent.iterdir()] == [tiny.TINY_NAME]  # no temporary left over

    def fail(folder: Path) -> Path:
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(tiny, "build_tiny_sd", fail)
    assert tiny.tiny_sd_path() == path


def test_stale_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tiny.CACHE_ENV, str(tmp_path))
    old = tmp_path / tiny.TINY_NAME
    old.mkdir()
    (old / "model_index.json").write_text("{}")  # a build from other configs, no fingerprint
    built = []

    def fake_build(folder: Path) -> Path:
        built.append(folder)
        (folder / tiny.STAMP_FILE).write_text(tiny.fingerprint())
        return folder

    monkeypatch.setattr(tiny, "build_tiny_sd", fake_build)
    path = tiny.tiny_sd_path()
    assert len(built) == 1 and path == old and (path / tiny.STAMP_FILE).is_file()
    assert not (path / "model_index.json").exists() and [p.name for p in tmp_path.iterdir()] == [
        tiny.TINY_NAME
    ]


def test_vocab_matches_clip_construction(tmp_path: Path) -> None:
    vocab_path, merges_path = tiny.write_clip_tokenizer_files(tmp_path)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    assert len(vocab) == 49408 and vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["in"] == 512  # the first merge ("i n") follows the 512 byte tokens
    assert len(merges_path.read_text().strip().split("\n")) == 1 + tiny.N_MERGES


# sha256 of the shipped bpe_simple_vocab_16e6.txt.gz (CLIP's file, as open_clip_torch 3.3.0 ships it)
CLIP_VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


def test_clip_vocabulary_ships_with_its_license() -> None:
    path = tiny.clip_vocab_file()
    assert path.parent == Path(tiny.__file__).resolve().parents[1] / "resources"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CLIP_VOCAB_SHA256
    license_text = (path.parent / f"LICENSE-{tiny.VOCAB_FILE.removesuffix('.gz')}").read_text()
    assert "MIT License" in license_text and "Copyright (c) 2021 OpenAI" in license_text


def test_tokenizer_needs_no_open_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` now raises
    tok = tiny.build_clip_tokenizer(tmp_path)
    ids = tok("a red circle above a blue square").input_ids
    assert ids[0] == 49406 and ids[-1] == 49407 and len(ids) == 9


def test_missing_vocabulary_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tiny, "RESOURCES", tmp_path)
    with pytest.raises(FileNotFoundError, match="reinstall infodecomp"):
        tiny.clip_vocab_file()

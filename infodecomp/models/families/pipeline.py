"""Pipeline folders and hub ids: where a family's parts come from, which files they need, which
classes load them (model_index.json), and which adapter options a family acts on.

Read by the latent-diffusion base (models.families.latent) when it loads a family; no family
code here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.presets import PRESETS, AdapterOptions, resolve_hub_id

# Options every family acts on (the base implements them for any network).
UNIVERSAL_OPTIONS = frozenset(
    {"latent", "resize", "resample", "mask_resample", "image_size", "compile", "dtype", "offload"}
)
# Files of a tokenizer subfolder, one of which must exist (CLIP BPE, fast tokenizers, T5).
TOKENIZER_FILES = ("vocab.json", "tokenizer.json", "spiece.model")


class ModelFolderError(FileNotFoundError):
    """A local model folder is missing or lacks parts of a diffusers pipeline."""


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1


def resolve_model_path(
    path: str | Path,
    required: dict[str, tuple[str, ...]] | None = None,
    weights: tuple[str, ...] = (),
) -> str | Path:
    """A preset name or hub id (returned as the hub id to load) or a checked local folder (a Path).

    Args:
        path: preset name, hub id (removed ids map to their mirrors) or folder.
        required: part name -> files of which one must exist in a local folder.
        weights: subfolders that must hold *.safetensors or *.bin weights.

    Raises:
        ModelFolderError: a local folder is missing or lacks pipeline parts.
    """
    text = str(path)
    if text in PRESETS and PRESETS[text].source:
        return PRESETS[text].source
    local = Path(text).expanduser()
    if not (isinstance(path, Path) or local.exists() or _looks_local(text)):
        hub_id, note = resolve_hub_id(text)
        if note:
            import logging

            logging.getLogger("infodecomp").warning(note)
        return hub_id
    hubs = ", ".join(f"{p.name} ({p.source})" for p in PRESETS.values() if p.source)
    fix = (
        "save a complete pipeline there with <Pipeline>.save_pretrained(folder), or give a hub id "
        f"or a preset: {hubs}"
    )
    if not local.is_dir():
        raise ModelFolderError(f"model folder {local} does not exist; {fix}")
    lacking = [
        k for k, files in (required or {}).items() if not any((local / f).is_file() for f in files)
    ]
    for part in weights:
        found = [*(local / part).glob("*.safetensors"), *(local / part).glob("*.bin")]
        if part not in lacking and not found:
            lacking.append(f"{part} weights")
    if lacking:
        raise ModelFolderError(f"model folder {local} lacks {', '.join(lacking)}; {fix}")
    return local


def hub_error_hint(source: str | Path, revision: str | None) -> str:
    """One line on what to do when a hub id or revision cannot be reached."""
    pinned = f" at revision {revision}" if revision else ""
    gated = [p for p in PRESETS.values() if p.gated and p.source == str(source)]
    if gated:
        return (
            f"could not load {source}{pinned}: it is a gated checkpoint (model={gated[0].name}). "
            f"Accept its license at https://huggingface.co/{source} with your account, then run "
            "`huggingface-cli login` or set HF_TOKEN=<access token> (read access), and retry; "
            "offline, pass a folder written by save_pretrained with model.path=<folder>"
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    where = (
        "it is not in the local hub cache (HF_HUB_OFFLINE is set: download it once where the hub "
        "is reachable, or unset HF_HUB_OFFLINE)"
        if offline
        else "the Hugging Face Hub could not be reached or refused it (offline, gated, moved or "
        "removed?); without network set HF_HUB_OFFLINE=1 to load a cached download"
    )
    return (
        f"could not load {source}{pinned}: {where}. Pass another hub id with model=local "
        "model.path=<hub id>, a folder written by save_pretrained with model.path=<folder>, or "
        "model.revision=main for the newest revision; gated models need `huggingface-cli login` "
        "or HF_TOKEN"
    )


@contextmanager
def quiet_hub() -> Iterator[None]:
    """Silences the hub client's warnings (one per retry of an unreachable download) while a
    model loads: the failure, if any, is reported once as one line (hub_error_hint)."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def short_error(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def scheduler_config(src: str | Path, revision: str | None) -> dict[str, Any]:
    if isinstance(src, Path):
        return json.loads((src / "scheduler" / "scheduler_config.json").read_text())
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(src, subfolder="scheduler", revision=revision))


def check_offload(offload: str, device: torch.device) -> None:
    """Offloading keeps weights in CPU memory for a GPU; on the CPU it is a mistake."""
    if offload != "none" and device.type == "cpu":
        raise ValueError(
            f"model.offload={offload} keeps weights in CPU memory for a GPU; on run.device=cpu "
            "everything is in CPU memory already: use model.offload=none"
        )


def refuse_options(
    opts: AdapterOptions,
    honours: frozenset[str],
    owner: str,
    universal: frozenset[str] = UNIVERSAL_OPTIONS,
) -> None:
    """A one-line ValueError for an option set away from its default that `owner` does not
    act on (every latent family acts on `universal`, and on `honours`)."""
    default = AdapterOptions()
    for f in fields(AdapterOptions):
        value = getattr(opts, f.name)
        if f.name in universal or f.name in honours or value == getattr(default, f.name):
            continue
        acts = ", ".join(sorted(universal | honours)) or "none of them"
        was = getattr(default, f.name)
        fix = "unset" if was is None else f"at its default {was}"
        raise ValueError(
            f"model.{f.name}={value} does not apply to {owner} (it acts on: {acts}); leave "
            f"model.{f.name} {fix}"
        )


def _is_tokenizer_part(name: str) -> bool:
    return name.startswith("tokenizer")


def required_files(parts: Sequence[str]) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """(part -> files of which one a local folder must hold, subfolders that must hold weights)
    for a pipeline folder with `parts`: model_index.json, each part, the scheduler config."""
    required: dict[str, tuple[str, ...]] = {"model_index.json": ("model_index.json",)}
    for name in parts:
        required[name] = (
            tuple(f"{name}/{f}" for f in TOKENIZER_FILES)
            if _is_tokenizer_part(name)
            else (f"{name}/config.json",)
        )
    required["scheduler"] = ("scheduler/scheduler_config.json",)
    return required, tuple(n for n in parts if not _is_tokenizer_part(n))


def part_classes(
    index: dict[str, Any], parts: Sequence[str], optional: Sequence[str], src: str | Path
) -> dict[str, str]:
    """part -> "<library>:<Class>" as model_index.json names it; an optional part the index
    leaves out (or names as [null, null]) is skipped; a required one is a ModelFolderError."""
    out = {}
    for name in (*parts, *optional):
        entry = index.get(name)
        if isinstance(entry, (list, tuple)) and len(entry) == 2 and all(entry):
            out[name] = f"{entry[0]}:{entry[1]}"
        elif name in parts:
            raise ModelFolderError(
                f"model_index.json of {src} names no class for the part {name!r} (found "
                f"{entry!r}); save the whole pipeline with <Pipeline>.save_pretrained(folder)"
            )
    return out

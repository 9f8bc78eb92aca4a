"""Text-encoder calls the family adapters share: tokenise with a truncation warning, CLIP's
last hidden state (SD 1.x / 2.x) or penultimate one and pooled output (SDXL, SD 3), T5's last
hidden state, the model index and the loading of one part."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch


def tokenize(
    tokenizer: Any, prompts: list[str], max_length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids [k, max_length] and attention mask [k, max_length] (long), padded to max_length.

    Prompts longer than max_length tokens are truncated, with one warning naming each.
    """
    enc = tokenizer(
        prompts,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    )
    for p in prompts:
        n = len(tokenizer(p).input_ids)
        if n > max_length:
            warnings.warn(
                f"prompt truncated to {max_length} of its {n} tokens: {p!r}",
                RuntimeWarning,
                stacklevel=3,
            )
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def clip_last(encoder: Any, ids: torch.Tensor) -> torch.Tensor:
    """Last hidden state [k, T, D] of a CLIP text encoder (after its final layer norm): what
    SD 1.x / 2.x are conditioned on (SD 2.x checkpoints ship the encoder one layer short)."""
    return encoder(ids)[0]


def clip_hidden(encoder: Any, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate hidden states [k, T, D], first output [k, P]) of a CLIP text encoder:
    SDXL's and SD 3's conditioning (not SD 1.x / 2.x's: `clip_last`).

    The first output is the projected pooled vector of a CLIPTextModelWithProjection
    (`text_embeds`) and the pooled vector of a plain CLIPTextModel (`pooler_output`).
    """
    out = encoder(ids, output_hidden_states=True)
    first = out[0]
    if first.dim() == 3:  # CLIPTextModel: [0] is the last hidden state; pooled is [1]
        first = out[1]
    return out.hidden_states[-2], first


def t5_hidden(encoder: Any, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Last hidden state [k, T, D] of a T5 encoder (with the padding mask when given)."""
    if mask is None:
        return encoder(ids)[0]
    return encoder(ids, attention_mask=mask)[0]


def model_index(src: str | Path, revision: str | None) -> dict[str, Any]:
    """The pipeline's model_index.json (its config: e.g. force_zeros_for_empty_prompt)."""
    if isinstance(src, Path):
        return json.loads((src / "model_index.json").read_text())
    from diffusers import DiffusionPipeline

    return dict(DiffusionPipeline.load_config(src, revision=revision))


def hub_kwargs(revision: str | None) -> dict[str, Any]:
    return {"revision": revision} if revision else {}


def is_tokenizer(spec: str) -> bool:
    """Whether a part's class spec names a tokenizer (no weights, no dtype)."""
    return spec == "tokenizer" or spec.endswith(("Tokenizer", "TokenizerFast"))


def load_part(
    src: str | Path, subfolder: str, spec: str, dtype: torch.dtype, revision: str | None
) -> Any:
    """One part of a saved pipeline, from its subfolder.

    spec: "<library>:<Class>" as model_index.json names it, library diffusers or transformers:
    a network or text encoder loaded in `dtype`, or a tokenizer (a class name ending in
    "Tokenizer" / "TokenizerFast", no dtype; every tokenizer but CLIP's BPE one is read with
    AutoTokenizer, see `load_tokenizer`), or "tokenizer" (AutoTokenizer).
    """
    import importlib

    if spec == "tokenizer" or (is_tokenizer(spec) and not spec.startswith("transformers:CLIP")):
        return load_tokenizer(src, subfolder, revision)
    library, name = spec.split(":")
    cls = getattr(importlib.import_module(library), name)
    kw = hub_kwargs(revision)
    if not is_tokenizer(spec):
        kw["torch_dtype" if library == "diffusers" else "dtype"] = dtype
    return cls.from_pretrained(src, subfolder=subfolder, **kw)


def load_tokenizer(src: str | Path, subfolder: str, revision: str | None) -> Any:
    """A CLIP or T5 tokenizer from a pipeline subfolder (AutoTokenizer reads its class).

    T5's SentencePiece tokenizer without a tokenizer.json needs the sentencepiece package; the
    error says so in one line.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src, subfolder=subfolder, **hub_kwargs(revision))
    except (ImportError, ValueError) as err:
        if "sentencepiece" in str(err).lower() or "protobuf" in str(err).lower():
            raise ImportError(
                f"the {subfolder} of {src} is a SentencePiece (T5) tokenizer: "
                "`pip install sentencepiece protobuf` to load it"
            ) from err
        raise

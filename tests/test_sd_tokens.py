"""The offline CLIP tokenizer of tiny-sd and word -> token index lookup."""

from __future__ import annotations

from pathlib import Path

import pytest

from infodecomp.models.families.tokens import word_token_indices


@pytest.fixture(scope="module")
def tok(tiny_sd_dir: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")


def test_tokenizer_reproduces_clip_ids(tok) -> None:
    # Reference ids of OpenAI CLIP's tokenizer (e.g. the transformers CLIP docs' example).
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("a red circle").input_ids == [49406, 320, 736, 7117, 49407]
    assert tok.convert_ids_to_tokens([320, 736, 7117]) == ["a</w>", "red</w>", "circle</w>"]
    assert len(tok) == 49408 and tok.model_max_length == 77
    padded = tok("a red circle", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[5:] == [49407] * 72


def test_single_token_words_and_case(tok) -> None:
    assert word_token_indices(tok, "a red circle", "circle") == [3]
    assert word_token_indices(tok, "A Red Circle", "RED") == [2]


def test_multi_token_word(tok) -> None:
    caption = "a photo of an armadillo on grass"
    pieces = tok.tokenize("armadillo")
    assert len(pieces) > 1  # the point of the test: a word split into several BPE tokens
    idx = word_token_indices(tok, caption, "armadillo")
    assert idx == list(range(5, 5 + len(pieces)))
    ids = tok(caption).input_ids
    assert [ids[i] for i in idx] == tok.convert_tokens_to_ids(pieces)


def test_repeated_word_and_occurrence(tok) -> None:
    caption = "a dog chases another dog."
    assert word_token_indices(tok, caption, "dog") == [2, 5]
    assert word_token_indices(tok, caption, "dog", occurrence=1) == [5]
    with pytest.raises(ValueError, match="occurs 2 time"):
        word_token_indices(tok, caption, "dog", occurrence=2)


def test_word_only_at_word_boundaries(tok) -> None:
    # "ing" is a piece of "skiing" in COCO-style manifests; it is not a word of the caption.
    assert tok.tokenize("ing") == ["ing</w>"]
    with pytest.raises(ValueError, match="'ing' does not occur in caption 'a man skiing'"):
        word_token_indices(tok, "a man skiing", "ing")


def test_missing_word_names_word_and_caption(tok) -> None:
    with pytest.raises(ValueError, match="'zebra' does not occur in caption 'a red circle'"):
        word_token_indices(tok, "a red circle", "zebra")


def test_word_past_the_limit(tok) -> None:
    caption = " ".join(["red"] * 80) + " zebra"
    with pytest.raises(ValueError, match="77-token limit"):
        word_token_indices(tok, caption, "zebra")

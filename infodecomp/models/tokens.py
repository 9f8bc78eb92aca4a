"""Where a word of a caption sits in its CLIP tokenisation (for per-word attention maps)."""

from __future__ import annotations

from typing import Any

END_OF_WORD = "</w>"


def _bpe(tokenizer: Any, text: str) -> list[str]:
    return list(tokenizer.tokenize(text))


def word_token_indices(
    tokenizer: Any, caption: str, word: str, occurrence: int | None = None
) -> list[int]:
    """Indices of `word`'s tokens in the encoded `caption` (start token counted, so +1).

    CLIP's tokenizer lowercases and splits text into words before BPE, so a word is tokenised the
    same way alone and inside a caption; its tokens are found as a run of caption tokens that
    starts at a word boundary and ends with the end-of-word marker. Words split into several BPE
    tokens yield several indices; punctuation attached in the caption ("dog,") is its own word.

    Args:
        tokenizer: a CLIP tokenizer (transformers CLIPTokenizer or compatible `tokenize`).
        caption: the full prompt.
        word: the word (or several words) to find; case-insensitive.
        occurrence: None for all occurrences (their indices concatenated in order), or the
            0-based occurrence to return.

    Returns:
        Sorted token indices into the 77-token encoding of the caption.

    Raises:
        ValueError: the word is not in the caption, the occurrence does not exist, or the word
            lies past the tokenizer's length limit (it would be truncated away).
    """
    cap = _bpe(tokenizer, caption)
    target = _bpe(tokenizer, word)
    if not target:
        raise ValueError(f"word {word!r} has no tokens; give a non-empty word")
    starts = []
    for i in range(len(cap) - len(target) + 1):
        at_boundary = i == 0 or cap[i - 1].endswith(END_OF_WORD)
        if at_boundary and cap[i : i + len(target)] == target:
            starts.append(i)
    if not starts:
        raise ValueError(f"word {word!r} does not occur in caption {caption!r} (tokens {cap})")
    if occurrence is not None:
        if not 0 <= occurrence < len(starts):
            raise ValueError(
                f"word {word!r} occurs {len(starts)} time(s) in caption {caption!r}; "
                f"occurrence {occurrence} does not exist (0-based)"
            )
        starts = [starts[occurrence]]
    indices = [s + 1 + k for s in starts for k in range(len(target))]
    limit = int(getattr(tokenizer, "model_max_length", 77)) - 1  # last slot holds the end token
    if max(indices) >= limit:
        raise ValueError(
            f"word {word!r} in caption {caption!r} lies at token {max(indices)}, past the "
            f"{limit + 1}-token limit; shorten the caption"
        )
    return indices

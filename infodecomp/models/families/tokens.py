"""Where a word of a caption sits in its tokenisation (for per-word attention maps).

Two tokenizer conventions are understood: CLIP's BPE, which lowercases and marks the end of a
word with "</w>" and puts a start token before the caption, and SentencePiece (T5), which marks
the start of a word with "\u2581" and puts no start token. The number of special tokens before
the caption is read off the tokenizer itself.
"""

from __future__ import annotations

from typing import Any

END_OF_WORD = "</w>"
START_OF_WORD = "\u2581"  # SentencePiece's word-start marker


def _bpe(tokenizer: Any, text: str) -> list[str]:
    return list(tokenizer.tokenize(text))


def _prefix_style(tokens: list[str]) -> bool:
    return any(t.startswith(START_OF_WORD) for t in tokens) and not any(
        t.endswith(END_OF_WORD) for t in tokens
    )


def _leading_specials(tokenizer: Any, caption: str, tokens: list[str]) -> int:
    """How many special tokens the tokenizer puts before the caption's tokens (CLIP 1, T5 0)."""
    ids = list(tokenizer(caption).input_ids)
    body = list(tokenizer.convert_tokens_to_ids(tokens))
    for start in range(len(ids) - len(body) + 1):
        if ids[start : start + len(body)] == body:
            return start
    return 1 if getattr(tokenizer, "bos_token_id", None) is not None else 0


def word_token_indices(
    tokenizer: Any,
    caption: str,
    word: str,
    occurrence: int | None = None,
    max_length: int | None = None,
) -> list[int]:
    """Indices of `word`'s tokens in the encoded `caption` (special tokens before it counted).

    A word is tokenised the same way alone and inside a caption by both conventions; its tokens
    are found as a run of caption tokens that starts and ends at word boundaries ("</w>" ends a
    CLIP word; a "\u2581" token or punctuation starts the next SentencePiece word). Words split
    into several tokens yield several indices; punctuation attached in the caption ("dog,") is
    its own token.

    Args:
        tokenizer: a CLIP or T5 tokenizer (transformers, or anything with `tokenize`,
            `__call__` and `convert_tokens_to_ids`).
        caption: the full prompt.
        word: the word (or several words) to find; case-insensitive for CLIP (it lowercases),
            as written for T5.
        occurrence: None for all occurrences (their indices concatenated in order), or the
            0-based occurrence to return.
        max_length: the encoding's length (default: the tokenizer's model_max_length).

    Returns:
        Sorted token indices into the encoding of the caption.

    Raises:
        ValueError: the word is not in the caption, the occurrence does not exist, or the word
            lies past the length limit (it would be truncated away).
    """
    cap = _bpe(tokenizer, caption)
    target = _bpe(tokenizer, word)
    if not target:
        raise ValueError(f"word {word!r} has no tokens; give a non-empty word")
    prefix = _prefix_style(cap + target)
    starts = []
    for i in range(len(cap) - len(target) + 1):
        if cap[i : i + len(target)] != target:
            continue
        if prefix:
            nxt = cap[i + len(target)] if i + len(target) < len(cap) else START_OF_WORD
            bare = nxt.removeprefix(START_OF_WORD)
            ok = nxt.startswith(START_OF_WORD) or not bare[:1].isalnum()
        else:
            ok = i == 0 or cap[i - 1].endswith(END_OF_WORD)
        if ok:
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
    lead = _leading_specials(tokenizer, caption, cap)
    indices = [s + lead + k for s in starts for k in range(len(target))]
    length = int(max_length or getattr(tokenizer, "model_max_length", 77))
    limit = length - 1  # the last slot holds the end token
    if max(indices) >= limit:
        raise ValueError(
            f"word {word!r} in caption {caption!r} lies at token {max(indices)}, past the "
            f"{limit + 1}-token limit; shorten the caption"
        )
    return indices

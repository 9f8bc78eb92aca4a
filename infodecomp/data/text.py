"""Word-level text helpers of the COCO manifests, their builder and the word swaps."""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace (spaces, newlines) to one space and trim the ends."""
    return _WS.sub(" ", text).strip()


def whole_word(word: str, flags: int = 0) -> re.Pattern[str]:
    """Regex matching `word` (one or more words) as a whole word, not inside a longer word."""
    body = r"\s+".join(re.escape(w) for w in word.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", flags)

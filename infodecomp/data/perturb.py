"""ARO word-order perturbations (COCO-Order, Flickr30k-Order) and the benchmark's caption cleaning.

The four perturbations follow the ARO benchmark: shuffle nouns and adjectives among themselves;
shuffle every other word; shuffle words within consecutive trigrams; shuffle the order of the
trigrams. Each caption gets its own numpy Generator seeded from (seed, item id, perturbation), so
a caption's options are the same in every run and independent of which other items are loaded.

Part-of-speech tags (Penn Treebank: NN*, JJ*) come from an injectable tagger, a callable
words -> tags. The default is NLTK's perceptron tagger, an optional dependency. Deviation from
ARO, stated once: ARO tags with spaCy's en_core_web_sm and tokenises trigrams with NLTK's
word_tokenize; here one regex tokeniser close to the Treebank rules feeds all four functions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Tagger = Callable[[Sequence[str]], Sequence[str]]

NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
ADJ_TAGS = frozenset({"JJ", "JJR", "JJS"})
MAX_WORDS = 30

POS_INSTALL_HINT = (
    "pip install 'infodecomp[pos]' && "
    "python -m nltk.downloader averaged_perceptron_tagger_eng"
    " (NLTK < 3.9 names the resource averaged_perceptron_tagger)"
)

_CLEAN_CHARS = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")
_TOKEN = re.compile(r"\w+(?=n't\b)|n't\b|'(?:s|re|ve|ll|d|m)\b|\w+(?:-\w+)*|[^\w\s]", re.IGNORECASE)


def clean_caption(text: str, max_words: int = MAX_WORDS) -> str:
    """ARO/BLIP caption cleaning: lowercase, drop . ! \" ( ) * # : ; ~, collapse spaces, cap words.

    Args:
        text: raw or perturbed caption.
        max_words: keep at most this many space-separated words.

    Returns:
        The cleaned caption.
    """
    text = _CLEAN_CHARS.sub(" ", text.lower())
    text = _SPACES.sub(" ", text).rstrip("\n").strip(" ")
    words = text.split(" ")
    if len(words) > max_words:
        text = " ".join(words[:max_words])
    return text


def tokenize(text: str) -> list[str]:
    """Split a caption into words and punctuation (clitics such as 's and n't apart)."""
    return _TOKEN.findall(text)


def _shuffle_positions(words: Sequence[str], positions: Sequence[int], rng: Any) -> list[str]:
    out = list(words)
    idx = list(positions)
    perm = np.asarray(rng.permutation(len(idx)), dtype=int)
    for dst, src in zip(idx, perm, strict=True):
        out[dst] = words[idx[src]]
    return out


def shuffle_nouns_and_adj(words: Sequence[str], tags: Sequence[str], rng: Any) -> list[str]:
    """Permute the nouns among noun positions and the adjectives among adjective positions.

    Args:
        words: tokens of the caption.
        tags: Penn Treebank tags, one per token.
        rng: numpy Generator (anything with `permutation(n)`).

    Returns:
        The perturbed tokens; every other token stays where it was.
    """
    _check_tags(words, tags)
    nouns = [i for i, t in enumerate(tags) if t in NOUN_TAGS]
    adjs = [i for i, t in enumerate(tags) if t in ADJ_TAGS]
    out = _shuffle_positions(words, nouns, rng)
    return _shuffle_positions(out, adjs, rng)


def shuffle_all_but_nouns_and_adj(words: Sequence[str], tags: Sequence[str], rng: Any) -> list[str]:
    """Permute every token that is neither a noun nor an adjective; those stay in place.

    Args:
        words: tokens of the caption.
        tags: Penn Treebank tags, one per token.
        rng: numpy Generator (anything with `permutation(n)`).

    Returns:
        The perturbed tokens.
    """
    _check_tags(words, tags)
    keep = NOUN_TAGS | ADJ_TAGS
    others = [i for i, t in enumerate(tags) if t not in keep]
    return _shuffle_positions(words, others, rng)


def trigrams(words: Sequence[str]) -> list[list[str]]:
    """Consecutive trigrams of the tokens; the last one may hold one or two tokens."""
    return [list(words[i : i + 3]) for i in range(0, len(words), 3)]


def shuffle_within_trigrams(words: Sequence[str], rng: Any) -> list[str]:
    """Permute the tokens inside each consecutive trigram; the trigrams keep their order.

    Args:
        words: tokens of the caption.
        rng: numpy Generator (anything with `permutation(n)`).

    Returns:
        The perturbed tokens.
    """
    out: list[str] = []
    for tri in trigrams(words):
        out.extend(tri[j] for j in np.asarray(rng.permutation(len(tri)), dtype=int))
    return out


def shuffle_trigrams(words: Sequence[str], rng: Any) -> list[str]:
    """Permute the order of the consecutive trigrams; each trigram stays intact.

    Args:
        words: tokens of the caption.
        rng: numpy Generator (anything with `permutation(n)`).

    Returns:
        The perturbed tokens.
    """
    tris = trigrams(words)
    out: list[str] = []
    for j in np.asarray(rng.permutation(len(tris)), dtype=int):
        out.extend(tris[j])
    return out


def caption_rng(seed: int, item_id: str, which: int) -> np.random.Generator:
    """Generator for perturbation `which` (0-3) of one caption, from the seed and the item id."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little"), int(which)])


def order_options(
    caption: str,
    item_id: str,
    seed: int,
    tagger: Tagger,
    max_words: int = MAX_WORDS,
) -> tuple[str, str, str, str, str]:
    """The five COCO/Flickr-Order options: the true caption first, then its four perturbations.

    As in ARO, perturbations act on the raw caption's tokens; each option is cleaned afterwards.

    Args:
        caption: the raw caption.
        item_id: stable id of the item (seeds the perturbations).
        seed: the data set seed (`DataSpec.seed`).
        tagger: callable words -> Penn Treebank tags.
        max_words: word cap of the cleaning step.

    Returns:
        (true, nouns/adjectives shuffled, others shuffled, within-trigram shuffled,
        trigrams shuffled), all cleaned.
    """
    words = tokenize(caption)
    tags = list(tagger(words))
    perturbed = (
        shuffle_nouns_and_adj(words, tags, caption_rng(seed, item_id, 0)),
        shuffle_all_but_nouns_and_adj(words, tags, caption_rng(seed, item_id, 1)),
        shuffle_within_trigrams(words, caption_rng(seed, item_id, 2)),
        shuffle_trigrams(words, caption_rng(seed, item_id, 3)),
    )
    clean = [clean_caption(caption, max_words)]
    clean += [clean_caption(" ".join(p), max_words) for p in perturbed]
    return tuple(clean)  # type: ignore[return-value]


def nltk_tagger() -> Tagger:
    """NLTK's averaged-perceptron tagger as a words -> tags callable.

    Raises:
        ImportError: NLTK or its tagger data is missing; the message says how to install both.
    """
    try:
        import nltk
    except ImportError as err:
        raise ImportError(
            "The COCO-Order / Flickr30k-Order perturbations need a part-of-speech tagger "
            f"(NLTK), which is not installed. Install it with: {POS_INSTALL_HINT}"
        ) from err
    try:
        nltk.pos_tag(["a", "dog"])
    except LookupError as err:
        raise ImportError(
            "NLTK is installed but its tagger data is missing. Download it with: "
            "python -m nltk.downloader averaged_perceptron_tagger_eng "
            "(NLTK < 3.9: averaged_perceptron_tagger)"
        ) from err

    def tag(words: Sequence[str]) -> list[str]:
        return [t for _, t in nltk.pos_tag(list(words))] if words else []

    return tag


def _check_tags(words: Sequence[str], tags: Sequence[str]) -> None:
    if len(words) != len(tags):
        raise ValueError(f"tagger returned {len(tags)} tags for {len(words)} words: {list(words)}")

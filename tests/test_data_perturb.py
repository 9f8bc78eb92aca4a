"""ARO order perturbations and caption cleaning, with a hand-written tagger (no NLTK needed)."""

from __future__ import annotations

import itertools
import sys
from collections import Counter

import numpy as np
import pytest

from infodecomp.data.perturb import (
    caption_rng,
    clean_caption,
    nltk_tagger,
    order_options,
    shuffle_all_but_nouns_and_adj,
    shuffle_nouns_and_adj,
    shuffle_trigrams,
    shuffle_within_trigrams,
    tokenize,
    trigrams,
)

TAGS = {
    "a": "DT",
    "the": "DT",
    "black": "JJ",
    "small": "JJ",
    "red": "JJ",
    "dog": "NN",
    "ball": "NN",
    "park": "NN",
    "man": "NN",
    "horse": "NN",
    "chases": "VBZ",
    "rides": "VBZ",
    "in": "IN",
    "on": "IN",
    ".": ".",
    ",": ",",
    "'s": "POS",
    "is": "VBZ",
}


def dict_tagger(words):
    return [TAGS.get(w.lower(), "NN") for w in words]


class ReverseRng:
    """Stand-in Generator whose permutation reverses, so outputs can be checked by hand."""

    def permutation(self, n):
        return np.arange(n)[::-1]


CAPTION = "a black dog chases a small ball in the park"
WORDS = CAPTION.split()
#          a   black dog  chases a    small ball in   the  park
TAGGED = ["DT", "JJ", "NN", "VBZ", "DT", "JJ", "NN", "IN", "DT", "NN"]


def test_hand_tagger_matches_hand_tags():
    assert dict_tagger(WORDS) == TAGGED


def test_shuffle_nouns_and_adj_by_hand():
    # nouns dog, ball, park reversed -> park, ball, dog; adjectives black, small -> small, black
    out = shuffle_nouns_and_adj(WORDS, TAGGED, ReverseRng())
    assert " ".join(out) == "a small park chases a black ball in the dog"


def test_shuffle_all_but_nouns_and_adj_by_hand():
    # others a, chases, a, in, the reversed -> the, in, a, chases, a
    out = shuffle_all_but_nouns_and_adj(WORDS, TAGGED, ReverseRng())
    assert " ".join(out) == "the black dog in a small ball chases a park"


def test_shuffle_within_trigrams_by_hand():
    # [a black dog] [chases a small] [ball in the] [park]
    assert trigrams(WORDS)[-1] == ["park"]
    out = shuffle_within_trigrams(WORDS, ReverseRng())
    assert " ".join(out) == "dog black a small a chases the in ball park"


def test_shuffle_trigrams_by_hand():
    out = shuffle_trigrams(WORDS, ReverseRng())
    assert " ".join(out) == "park ball in the chases a small a black dog"


def test_real_generator_moves_only_the_right_positions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = shuffle_nouns_and_adj(WORDS, TAGGED, rng)
        for w, t, o in zip(WORDS, TAGGED, out, strict=True):
            if t not in ("NN", "JJ"):
                assert o == w
        assert Counter(o for o, t in zip(out, TAGGED, strict=True) if t == "NN") == Counter(
            ["dog", "ball", "park"]
        )
        out = shuffle_all_but_nouns_and_adj(WORDS, TAGGED, rng)
        for w, t, o in zip(WORDS, TAGGED, out, strict=True):
            if t in ("NN", "JJ"):
                assert o == w
        out = shuffle_within_trigrams(WORDS, rng)
        assert [sorted(t) for t in trigrams(out)] == [sorted(t) for t in trigrams(WORDS)]
        out = shuffle_trigrams(WORDS, rng)
        orders = itertools.permutations(trigrams(WORDS))
        assert any(out == [w for tri in order for w in tri] for order in orders)


def test_tag_count_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 tags for 3 words"):
        shuffle_nouns_and_adj(["a", "b", "c"], ["DT", "NN"], ReverseRng())


def test_clean_caption_rules():
    raw = 'A Man (in red) rides: "fast"!  ~ok;  #Done*.\n'
    assert clean_caption(raw) == "a man in red rides fast ok done"
    assert clean_caption("A dog, a cat.") == "a dog, a cat"  # commas stay, as in ARO
    long = " ".join(f"w{i}" for i in range(35))
    assert clean_caption(long) == " ".join(f"w{i}" for i in range(30))
    assert clean_caption(long, max_words=3) == "w0 w1 w2"


def test_tokenize_splits_punctuation_and_clitics():
    assert tokenize("A man's dog doesn't bark.") == [
        "A",
        "man",
        "'s",
        "dog",
        "does",
        "n't",
        "bark",
        ".",
    ]


def test_order_options_true_first_cleaned_and_permutations():
    caption = "A black dog chases a small ball in the park."
    opts = order_options(caption, "coco-order-0-0", seed=0, tagger=dict_tagger)
    assert len(opts) == 5
    assert opts[0] == "a black dog chases a small ball in the park"
    for o in opts[1:]:
        assert Counter(o.split()) == Counter(opts[0].split())
        assert o == o.lower() and "." not in o and "  " not in o
    # nouns stay on noun slots, so the perturbation keeps the determiner/verb skeleton
    assert opts[1].split()[3] == "chases"


def test_order_options_seeded_reproducible():
    caption = "a man in a red shirt rides a brown horse on the beach near the blue sea today"
    a = order_options(caption, "x-1", seed=3, tagger=dict_tagger)
    b = order_options(caption, "x-1", seed=3, tagger=dict_tagger)
    assert a == b
    assert order_options(caption, "x-1", seed=4, tagger=dict_tagger) != a
    assert order_options(caption, "x-2", seed=3, tagger=dict_tagger) != a
    r1, r2 = caption_rng(3, "x-1", 0), caption_rng(3, "x-1", 1)
    assert r1.integers(1 << 30) != r2.integers(1 << 30)


def test_order_options_cap_thirty_words():
    caption = " ".join(["dog"] * 40)
    opts = order_options(caption, "cap", seed=0, tagger=dict_tagger)
    assert all(len(o.split()) == 30 for o in opts)


def test_missing_nltk_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nltk", None)  # import nltk -> ImportError
    with pytest.raises(ImportError) as err:
        nltk_tagger()
    msg = str(err.value)
    assert "pip install 'infodecomp[pos]'" in msg
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng" in msg

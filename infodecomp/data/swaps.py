"""Word-swap edits of COCO100-IT for the intervention experiment (data.swaps): infodecomp's
table of visually distinct partners (`distinct`, the default) and the published script's pairs
(`published`)."""

from __future__ import annotations

import re

from infodecomp.data.text import normalize_space

# Word-swap partners for the intervention experiment (COCO100-IT covers airplane, bear, bed, cat,
# dog, elephant, horse, person, teddy bear, zebra), data.swaps=distinct (the default). Partners
# are visually distinct objects that fit the same scene role; singular and plural forms are
# listed explicitly. Only the item's word is swapped (`swap_caption`).
SWAP_TABLE: dict[str, str] = {
    "airplane": "bird",
    "airplanes": "birds",
    "bear": "elephant",
    "bears": "elephants",
    "bed": "couch",
    "beds": "couches",
    "cat": "dog",
    "cats": "dogs",
    "dog": "cat",
    "dogs": "cats",
    "elephant": "bear",
    "elephants": "bears",
    "horse": "cow",
    "horses": "cows",
    "person": "monkey",
    "persons": "monkeys",
    "people": "monkeys",
    "teddy bear": "doll",
    "teddy bears": "dolls",
    "zebra": "horse",
    "zebras": "horses",
}

# data.swaps=published: the partners of the published intervention script, both ways, each
# also with a plural "s" on both sides. Later pairs win where two write the same key
# ("monkeys": "people", not "persons").
PUBLISHED_SWAP_PAIRS: tuple[tuple[str, str], ...] = (
    ("dog", "cat"),
    ("zebra", "horse"),
    ("bed", "table"),
    ("bear", "elephant"),
    ("airplane", "kite"),
    ("person", "monkey"),
    ("people", "monkeys"),
    ("teddy bear", "robot"),
)


def _published_swaps() -> dict[str, str]:
    table: dict[str, str] = {}
    for a, b in PUBLISHED_SWAP_PAIRS:
        table.update({a: b, b: a, a + "s": b + "s", b + "s": a + "s"})
    return table


PUBLISHED_SWAP_TABLE: dict[str, str] = _published_swaps()
SWAPS = ("distinct", "published")


def swap_partner(word: str) -> str | None:
    """The swap partner of a word form from SWAP_TABLE (case-insensitive), or None."""
    return SWAP_TABLE.get(normalize_space(word).lower())


def swap_caption(caption: str, word: str, swap: str) -> str:
    """Replace every whole-word occurrence of `word` by `swap`, fixing a preceding a/an.

    The first letter keeps its case ("Dogs" -> "Cats"); "an airplane" becomes "a bird".
    """
    body = r"\s+".join(re.escape(w) for w in word.split())
    pattern = re.compile(
        rf"(?:(?<!\w)(?P<art>an?)(?P<sp>\s+))?(?<!\w)(?P<word>{body})(?!\w)", re.IGNORECASE
    )

    def repl(m: re.Match[str]) -> str:
        new = swap[0].upper() + swap[1:] if m.group("word")[:1].isupper() else swap
        if m.group("art") is None:
            return new
        article = "an" if swap[:1].lower() in "aeiou" else "a"
        if m.group("art")[:1].isupper():
            article = article.capitalize()
        return f"{article}{m.group('sp')}{new}"

    return pattern.sub(repl, caption)


def swap_all_listed(caption: str, table: dict[str, str]) -> str:
    """Every whole-word occurrence of any key of `table` in the caption replaced by its partner,
    in one pass (a swapped word is not swapped back), matched case-insensitively and written
    as the table writes it (lower case); articles are left as they are. At one position the
    longer key wins ("teddy bear" over "bear", "dogs" over "dog"). The published rule."""
    keys = sorted(table, key=len, reverse=True)
    pattern = re.compile(
        r"(?<!\w)(" + "|".join(r"\s+".join(map(re.escape, k.split())) for k in keys) + r")(?!\w)",
        re.IGNORECASE,
    )
    return pattern.sub(lambda m: table[normalize_space(m.group(0)).lower()], caption)


def swap_edit(caption: str, word: str, swaps: str) -> tuple[str | None, str | None]:
    """(swap word, swapped caption) of a COCO100-IT row under data.swaps, or (None, None) when
    the word has no partner (the row then has no swap edit)."""
    if swaps == "published":
        partner = PUBLISHED_SWAP_TABLE.get(normalize_space(word).lower())
        if partner is None:
            return None, None
        return partner, swap_all_listed(caption, PUBLISHED_SWAP_TABLE)
    partner = swap_partner(word)
    if partner is None:
        return None, None
    return partner, swap_caption(caption, word, partner)

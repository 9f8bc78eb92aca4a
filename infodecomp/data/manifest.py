"""Build COCO-IT / COCO-WL manifests from the COCO val2017 annotation files.

COCO-IT rule (paper section 4.1, reproduced from the published manifest): for each image, in the
order of the instances file, and each category annotated in it, in the order of its first
annotation, take the first caption (captions-file order) that holds the category's name or its
other number form as a whole word (case-sensitive). When a caption holds both forms, the other
form wins ("elephants" over "elephant", "ski" over "skis"), as in all 33 such published rows.
`context` deletes the word, `context_` replaces it by "_".

Published deletion artefacts (default, `fix_artifacts=False`): a plain substring replacement, so a
word occurring twice is deleted twice and a word inside a longer word is deleted too ("skiing"
-> "ing", "bedroom" -> "room"). With `fix_artifacts=True` only the first whole-word occurrence is
deleted (or blanked).

COCO-WL rule (our own; the published file was picked by hand): for each word type, a fixed word
list (WORD_TYPE_LISTS) is visited round-robin; each turn takes the next caption (images in
instances-file order, captions in captions-file order) that holds that word as a whole word
(case-insensitive) and whose image has no row of this type yet, until `rows_per_type` rows.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from infodecomp.data.coco import (
    BASE_COLUMNS,
    CAPTION_FIELDS,
    INSTANCE_FIELDS,
    check_instances,
)
from infodecomp.data.errors import COCO2017_SOURCE, read_json, require_path
from infodecomp.data.text import whole_word

# Irregular number forms of COCO category names: name -> its other form.
IRREGULAR_FORMS = {
    "person": "people",
    "mouse": "mice",
    "knife": "knives",
    "skis": "ski",
    "sheep": None,
    "scissors": None,
}

# COCO-WL word lists, "|"-separated so that multi-word entries ("in front of") stay whole.
_WORD_TYPES = {
    "verb": "standing|sitting|holding|riding|walking|eating|playing|looking|flying|laying|"
    "running|swimming|jumping|wearing",
    "num": "two|three|four|five|six|seven|eight|nine|ten",
    "adj": "red|white|black|brown|green|yellow|small|large|young|old|cute|wooden",
    "adv": "slowly|quickly|happily|together|partially|closely|brightly|carefully|outside|nearly",
    "perp": "behind|next to|in front of|under|above|near|beside|on top of|inside|across",
    "pronoun": "his|her|their|its|he|she|they|it",
    "conj": "and|while|but|where|or|as|so",
}
WORD_TYPE_LISTS: dict[str, tuple[str, ...]] = {
    k: tuple(v.split("|")) for k, v in _WORD_TYPES.items()
}


def plural(name: str) -> str:
    """English plural of a (possibly multi-word) category name; the last word is inflected."""
    head, _, last = name.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def category_forms(name: str) -> tuple[str, ...]:
    """The forms a caption may use for a category, in matching order: other form first, then name.

    Examples: "dog" -> ("dogs", "dog"); "person" -> ("people", "person"); "skis" -> ("ski",
    "skis"); "sheep" -> ("sheep",).
    """
    other = IRREGULAR_FORMS[name] if name in IRREGULAR_FORMS else plural(name)
    return (other, name) if other else (name,)


def find_form(caption: str, forms: Sequence[str], ignore_case: bool = False) -> str | None:
    """The first of `forms` found as a whole word in the caption, as written there; else None."""
    flags = re.IGNORECASE if ignore_case else 0
    for form in forms:
        m = whole_word(form, flags).search(caption)
        if m:
            return m.group(0)
    return None


def delete_word(caption: str, word: str, fix_artifacts: bool = False, fill: str = "") -> str:
    """Delete `word` (or replace it by `fill`), with the published or the fixed rule.

    Args:
        caption: the caption.
        word: the word as written in the caption.
        fix_artifacts: False: replace every substring occurrence (published); True: only the
            first whole-word occurrence.
        fill: "" for `context`, "_" for `context_`.
    """
    if not fix_artifacts:
        return caption.replace(word, fill)
    return whole_word(word).sub(fill, caption, count=1)


def _load_json(
    path: str | Path, what: str, expected: str, needs: dict[str, tuple[str, ...]]
) -> dict:
    """A COCO annotation file, parsed and checked: encoding, syntax and missing fields are one
    DataError naming the file (and the record)."""
    p = require_path(path, what, [expected], COCO2017_SOURCE)
    return check_instances(read_json(p, what), p, what, needs)


def _captions_by_image(captions: dict) -> dict[int, list[str]]:
    by_image: dict[int, list[str]] = {}
    for ann in captions.get("annotations", []):
        by_image.setdefault(int(ann["image_id"]), []).append(ann["caption"])
    return by_image


def _image_order(instances: dict, limit: int | None) -> list[int]:
    ids = [int(img["id"]) for img in instances.get("images", [])]
    return ids[:limit] if limit is not None else ids


def coco_it_rows(
    instances: dict, captions: dict, fix_artifacts: bool = False, limit: int | None = None
) -> Iterator[list[str]]:
    """Rows [image id, label, caption, context, word, context_] of the COCO-IT rule."""
    names = {int(c["id"]): c["name"] for c in instances.get("categories", [])}
    cats_by_image: dict[int, list[int]] = {}
    for ann in instances.get("annotations", []):
        cats = cats_by_image.setdefault(int(ann["image_id"]), [])
        if int(ann["category_id"]) not in cats:
            cats.append(int(ann["category_id"]))
    caps = _captions_by_image(captions)
    for image_id in _image_order(instances, limit):
        for cat in cats_by_image.get(image_id, []):
            name = names[cat]
            forms = category_forms(name)
            for caption in caps.get(image_id, []):
                word = find_form(caption, forms)
                if word is not None:
                    yield [
                        str(image_id),
                        name,
                        caption,
                        delete_word(caption, word, fix_artifacts),
                        word,
                        delete_word(caption, word, fix_artifacts, "_"),
                    ]
                    break


def coco_wl_rows(
    instances: dict,
    captions: dict,
    fix_artifacts: bool = False,
    limit: int | None = None,
    rows_per_type: int = 10,
) -> Iterator[list[str]]:
    """Rows [image id, label, caption, context, word, context_, word type] of the COCO-WL rule."""
    caps = _captions_by_image(captions)
    pool = [(i, c) for i in _image_order(instances, limit) for c in caps.get(i, [])]
    for word_type, words in WORD_TYPE_LISTS.items():
        patterns = [whole_word(w, re.IGNORECASE) for w in words]
        cursor = [0] * len(words)  # next pool position to look at, per word
        used: set[int] = set()
        taken = 0
        while taken < rows_per_type and any(c < len(pool) for c in cursor):
            for k, label in enumerate(words):
                if taken >= rows_per_type:
                    break
                while cursor[k] < len(pool):
                    image_id, caption = pool[cursor[k]]
                    cursor[k] += 1
                    m = patterns[k].search(caption)
                    if m and image_id not in used:
                        used.add(image_id)
                        taken += 1
                        word = m.group(0)
                        yield [
                            str(image_id),
                            label,
                            caption,
                            delete_word(caption, word, fix_artifacts),
                            word,
                            delete_word(caption, word, fix_artifacts, "_"),
                            word_type,
                        ]
                        break


def build_manifest(
    instances_json: str | Path,
    captions_json: str | Path,
    out_csv: str | Path,
    kind: str = "coco-it",
    fix_artifacts: bool = False,
    limit: int | None = None,
    rows_per_type: int = 10,
    blank_column: bool | None = None,
) -> int:
    """Write a COCO-IT or COCO-WL manifest CSV in the published format.

    Args:
        instances_json: COCO instances file (instances_val2017.json).
        captions_json: COCO captions file (captions_val2017.json).
        out_csv: where to write the manifest (parent folders are created).
        kind: "coco-it" or "coco-wl".
        fix_artifacts: delete the whole word once instead of the published substring rule.
        limit: consider only the first N images of the instances file.
        rows_per_type: COCO-WL rows per word type.
        blank_column: write the `context_` column; default as published (COCO-IT: no,
            COCO-WL: yes).

    Returns:
        The number of rows written.
    """
    if kind not in ("coco-it", "coco-wl"):
        raise ValueError(f"build_manifest kind must be 'coco-it' or 'coco-wl', got {kind!r}")
    instances = _load_json(
        instances_json, "COCO instances file", "instances_val2017.json", INSTANCE_FIELDS
    )
    captions = _load_json(
        captions_json, "COCO captions file", "captions_val2017.json", CAPTION_FIELDS
    )
    with_blank = (kind == "coco-wl") if blank_column is None else blank_column
    header = list(BASE_COLUMNS) + (["context_"] if with_blank else [])
    if kind == "coco-it":
        rows = coco_it_rows(instances, captions, fix_artifacts, limit)
    else:
        header.append("")
        rows = coco_wl_rows(instances, captions, fix_artifacts, limit, rows_per_type)
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row if with_blank else row[:5] + row[6:])
            n += 1
    return n


def main_build(argv: Sequence[str] | None = None) -> int:
    """Command-line entry of `infodecomp build-coco-manifest`; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="infodecomp build-coco-manifest",
        description="Build a COCO-IT / COCO-WL manifest CSV from COCO val2017 annotations.",
    )
    parser.add_argument("--instances", required=True, help="instances_val2017.json")
    parser.add_argument("--captions", required=True, help="captions_val2017.json")
    parser.add_argument("--out", required=True, help="output CSV")
    parser.add_argument(
        "--kind",
        choices=("coco-it", "coco-wl"),
        default="coco-it",
        help="coco-it: object nouns (the paper's rule); coco-wl: other word types (our rule)",
    )
    parser.add_argument(
        "--fix-artifacts",
        action="store_true",
        help="delete the whole word once (default: the published substring rule)",
    )
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    args = parser.parse_args(argv)
    n = build_manifest(
        args.instances, args.captions, args.out, args.kind, args.fix_artifacts, args.limit
    )
    print(f"wrote {n} rows to {args.out}")
    return 0

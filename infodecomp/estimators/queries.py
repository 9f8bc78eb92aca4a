"""The one place that turns captions, contexts and words into engine queries.

Every command that estimates information (aro, localize, intervene, visualize, calibrate), the
Python API and `infodecomp validate` build their queries here, so the validate rows that compare
estimates with exact values also check which condition sits where: a wrong caption, context or
word position here fails validate (tests/test_validate_exactness.py injects each).

- `option_queries`: per image its caption options and the unconditional "", contrast j =
  (option j, ""): i^o / i^s of option j (ARO scores; the MI of one caption).
- `word_queries`: per (image, caption, word) item the conditions (caption, context, word, ""),
  contrast CMI = (caption, context) = i(x; word | context) and MI = (word, "") = i(x; word)
  (or the manifest's Label in place of the word, as the published localisation prompts).
- `intervene_queries`: per intervention item (caption, "_" context, swapped caption), contrast
  EDIT_CONTRAST[edit]: the omit CMI and the swap CMI, each edit scored by its own CMI.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch

from infodecomp.estimators.engine import Query

# contrast indices of a word query (`word_queries`): ItemEstimate.info_o(CMI), io_map[MI], ...
CMI, MI = 0, 1


def option_queries(
    xs: torch.Tensor | Sequence[torch.Tensor],
    options: Sequence[Sequence[Hashable]],
    keys: Sequence[Hashable],
    unconditional: bool = True,
) -> list[Query]:
    """One query per image: its caption options and the unconditional "", contrast j = (option j,
    ""), so i^o / i^s of option j is contrast j and its denoising loss condition j.
    unconditional=False: the options alone, no contrasts (enough for condition scores such as
    the denoising loss; the draws, keyed by the item, and so the values are the same, at
    options / (options + 1) of the evaluations)."""
    return [
        Query(
            xs[i].cpu(),
            (*opts, "") if unconditional else tuple(opts),
            tuple((j, len(opts)) for j in range(len(opts))) if unconditional else (),
            key=keys[i],
        )
        for i, opts in enumerate(options)
    ]


def context_of(item: Any, blank: bool) -> str:
    """The CMI context of a word item: the caption without the word (`context`), or with the
    word replaced by "_" (`context_blank`)."""
    return item.context_blank if blank else item.context


def mi_prompt_of(item: Any, mi_prompt: str = "word") -> str:
    """The MI's prompt: the word itself ("word"), or the manifest's Label column ("label",
    what the published localisation code prompts with: a COCO category, "dog" for "dogs")."""
    if mi_prompt == "word":
        return item.word
    if mi_prompt != "label":
        raise ValueError(f"mi_prompt={mi_prompt!r} is not one of: word, label")
    label = (getattr(item, "extra", None) or {}).get("label")
    if not label:
        raise ValueError(
            f"mi_prompt=label: item {item.item_id} has no Label (a COCO manifest column); "
            "use mi_prompt=word"
        )
    return label


def word_queries(
    items: Sequence[Any],
    xs: torch.Tensor | Sequence[torch.Tensor],
    blank: bool,
    mi: bool = True,
    mi_prompt: str = "word",
    logsnr_keys: Sequence[Hashable] | None = None,
    key_suffix: Hashable = None,
) -> list[Query]:
    """Per word item (caption, context, context_blank, word, item_id): conditions
    (caption, context, MI prompt, "") with contrasts CMI = (0, 1) and MI = (2, 3); mi=False: the
    CMI alone, conditions (caption, context). The MI prompt is the word or the manifest's Label
    (`mi_prompt_of`). `logsnr_keys` (one per item, or None) makes items share logsnr draws
    (engine.Query.logsnr_key); `key_suffix` makes the draws those of another, independent run
    (the item key becomes (item_id, key_suffix))."""
    out = []
    for i, it in enumerate(items):
        conds = (it.caption, context_of(it, blank), mi_prompt_of(it, mi_prompt), "")
        out.append(
            Query(
                xs[i].cpu(),
                conds if mi else conds[:2],
                ((0, 1), (2, 3)) if mi else ((0, 1),),
                key=str(it.item_id) if key_suffix is None else (str(it.item_id), key_suffix),
                logsnr_key=None if logsnr_keys is None else logsnr_keys[i],
            )
        )
    return out


EDIT_CONTRAST = {"omit": 0, "swap": 1}  # the contrast of intervene_queries scoring each edit


def intervene_queries(items: list, xs: torch.Tensor, edits: list[str]) -> list[Query]:
    """Per item: conditions (caption, caption with the word omitted ["_"], swapped caption if
    any) with contrast 0 = the omit CMI i(x; caption vs "_" context) and, for an item with a
    swap edit, contrast 1 = the swap CMI i(x; caption vs swapped caption), the published
    ll_ratio(x, swapped, original): each edit is scored by its own CMI."""
    out = []
    for i, it in enumerate(items):
        conds: tuple[str, ...] = (it.caption, it.context_blank)
        if "swap" in edits and it.swap_caption:
            conds += (it.swap_caption,)
        contrasts = tuple((0, k) for k in range(1, len(conds)))
        out.append(Query(xs[i].cpu(), conds, contrasts, key=str(it.item_id)))
    return out

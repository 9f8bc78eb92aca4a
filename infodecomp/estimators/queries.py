"""The one place that turns captions, contexts and words into engine queries.

Every command that estimates information (aro, localize, intervene, visualize, calibrate), the
Python API and `infodecomp validate` build their queries here, so the validate rows that compare
estimates with exact values also check which condition sits where: a wrong caption, context or
word position here fails validate (tests/test_validate_exactness.py injects each).

- `option_queries`: per image its caption options and the unconditional "", contrast j =
  (option j, ""): i^o / i^s of option j (ARO scores; the MI of one caption).
- `word_queries`: per (image, caption, word) item the conditions (caption, context, word, ""),
  contrast CMI = (caption, context) = i(x; word | context) and MI = (word, "") = i(x; word).
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


def word_queries(
    items: Sequence[Any], xs: torch.Tensor | Sequence[torch.Tensor], blank: bool, mi: bool = True
) -> list[Query]:
    """Per word item (caption, context, context_blank, word, item_id): conditions
    (caption, context, word, "") with contrasts CMI = (0, 1) and MI = (2, 3); mi=False: the
    CMI alone, conditions (caption, context)."""
    out = []
    for i, it in enumerate(items):
        conds = (it.caption, context_of(it, blank), it.word, "")
        out.append(
            Query(
                xs[i].cpu(),
                conds if mi else conds[:2],
                ((0, 1), (2, 3)) if mi else ((0, 1),),
                key=str(it.item_id),
            )
        )
    return out

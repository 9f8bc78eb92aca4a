"""Table 3: localisation mIoU of `localize` runs, paper protocol against the held-out
threshold, per setting x method x reference x words (and the word types' labels)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.metrics import IOU_COLUMNS, miou_bootstrap, miou_cells
from infodecomp.reporting.runs import Run, claim
from infodecomp.reporting.tables import int_or_none
from infodecomp.tasks.references import PUBLISHED_WL_REFERENCE

# Table 3 columns per step count: the paper-protocol mIoU, its bootstrap se, the "±" the published
# scripts would print (std of 100 resamples of 0.9 N, / 10: no se), the held-out-threshold mIoU,
# and the paper's own number.
SE_SUFFIX, PUBLISHED_PM_SUFFIX = " se", " ± (published rule)"
MIOU_SUFFIXES = (" paper", SE_SUFFIX, PUBLISHED_PM_SUFFIX, " held-out", " published")
METHOD_ORDER = ("whole", "attention", "cmi", "mi", "attn_info", "concept", "exact")
AGGREGATION_ORDER = ("daam", "layer-mean")
LOCALIZE_REQUIRED = ("item_id", "method", "n_steps", "split", *IOU_COLUMNS)

OBJECT_MASK = "object mask"
REFERENCE_ORDER = (OBJECT_MASK, PUBLISHED_WL_REFERENCE, "exact map")
# Word types of the manifests (COCO-WL's 7th column) and of ShapesWorld, in display order.
WORD_TYPE_LABELS = {
    "noun": "noun",
    "verb": "verb",
    "adj": "adjective",
    "adv": "adverb",
    "num": "numeral",
    "perp": "preposition",
    "pronoun": "pronoun",
    "conj": "conjunction",
}
SHAPES_WORD_TYPES = {"adj": "colour (adj)", "noun": "shape (noun)", "perp": "relation (perp)"}


def word_type_label(word_type: str, shapes: bool) -> str:
    """Display label of a word type; ShapesWorld names what its types are (colour, shape, ...)."""
    if shapes and word_type in SHAPES_WORD_TYPES:
        return SHAPES_WORD_TYPES[word_type]
    return WORD_TYPE_LABELS.get(word_type, word_type)


NOTE_TABLE3_EXACT = (
    "Exact CMI (oracle): the exact CMI map, from the oracle's posteriors, scored against the "
    "object masks: what a perfect estimator scores under this protocol. Reference 'exact map': "
    "the estimated CMI map scored against the exact map on the estimator's logsnr range at the "
    "same threshold (near 100: the estimator puts the information where it is; the object-mask "
    "protocol is what caps the score)."
)
NOTE_TABLE3_ERRORS = (
    "se: bootstrap standard error of the paper-protocol mIoU (all pairs resampled, threshold "
    "chosen again on each resample). ± (published rule): the published scripts' error bar for the "
    "same statistic, the standard deviation over 100 resamples of 0.9 N pairs divided by 10; it "
    "is no standard error and is shown only to compare with the paper."
)
NOTE_TABLE3_WL = (
    f"Reference '{PUBLISHED_WL_REFERENCE}': COCO-WL words scored as the published code scored "
    "them, against the union of every annotated object of the image (no COCO category marks a "
    "verb, number or adjective; pycocotools returns all annotations for an empty category list). "
    "It measures overlap with the objects, not localisation of the word."
)


def table3(runs: list[Run], *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rows = setting x method x reference x words; columns = ``{n} paper``, ``{n} se``,
    ``{n} ± (published rule)``, ``{n} held-out`` (+ ``{n} published``).

    ``se`` is the bootstrap standard error of the paper-protocol mIoU (``n_boot`` resamples of
    all pairs, the threshold chosen again in each); ``± (published rule)`` is what the published
    scripts print as "±" for the same statistic (std of 100 resamples of 0.9 N pairs, divided by
    10; reporting.metrics.published_error_bar), shown only to compare with the paper.

    Attention rows name their aggregation ("Attention (DAAM)", "Attention+Information
    (layer-mean)"), so runs that differ in ``attention`` appear side by side; their CMI, MI and
    whole-image rows are one measurement when the runs agree on everything those depend on
    (``Run.shares_maps_with``) and are shown once, from the first such run. Published numbers
    stand beside the DAAM attention rows only (the paper's baseline).

    ``reference`` is the ground truth the maps are scored against: the object masks of the
    protocol, or (ShapesWorld oracle) the exact CMI map at the same threshold. ``words`` is
    ``all`` and, when a run holds several word types, one row per type. ``pairs`` counts the
    scored (image, word) pairs, ``unscored`` those without a ground-truth mask (all IoU values
    empty), which cannot enter the mIoU.
    """
    measured = _measure(runs, n_boot=n_boot, seed=seed)
    step_cols = sorted(measured.steps) or [None]
    rows = [_row(key, measured, step_cols) for key in sorted(measured.counts, key=_row_order)]
    return pd.DataFrame(rows)


@dataclass
class _Measured:
    """What the localize runs hold: per row key (setting, (method, aggregation), reference,
    words) the cells (paper, held-out, se, published ±; %) by step count and the (scored,
    unscored) item ids; the settings with published numbers, the ShapesWorld settings, the step
    counts."""

    cells: dict[tuple, dict[Any, tuple[float, ...]]] = field(default_factory=dict)
    counts: dict[tuple, tuple[set, set]] = field(default_factory=dict)
    paper_settings: set = field(default_factory=set)
    shapes_settings: set = field(default_factory=set)
    steps: set = field(default_factory=set)

    def score(self, key: tuple, n: int | None, sub: pd.DataFrame, n_boot: int, seed: int) -> None:
        # pairs without a ground-truth mask have no IoU at all: counted, not scored
        scored = sub[sub[IOU_COLUMNS].notna().any(axis=1)]
        ids = self.counts.setdefault(key, (set(), set()))
        ids[0].update(scored["item_id"])
        ids[1].update(set(sub["item_id"]) - set(scored["item_id"]))
        if scored.empty:
            return
        paper, held = miou_cells(scored)
        se, pm = miou_bootstrap(scored, n_boot=n_boot, seed=seed)
        self.cells.setdefault(key, {})[n] = tuple(100 * v for v in (paper, held, se, pm))
        if n is not None:
            self.steps.add(n)


def _measure(runs: list[Run], *, n_boot: int, seed: int) -> _Measured:
    measured, seen = _Measured(), {}
    first: dict[tuple, Run] = {}  # (setting, method, n, reference) -> the run its row came from
    for run in runs:
        df = run.results(LOCALIZE_REQUIRED)
        if "reference" not in df.columns:  # runs before the exact references
            df = df.assign(reference=OBJECT_MASK)
        if "word_type" not in df.columns:
            df = df.assign(word_type="noun")
        if run.paper_setting:
            measured.paper_settings.add(run.setting)
        if run.data.startswith("shapes-"):
            measured.shapes_settings.add(run.setting)
        several = df["word_type"].nunique() > 1
        for (name, n, ref), part in df.groupby(
            ["method", "n_steps", "reference"], sort=False, dropna=False
        ):
            n = int_or_none(n)
            attention = name in pub.ATTENTION_METHODS
            method = (name, run.attention if attention else None)
            if not attention:
                prev = first.setdefault((run.setting, name, n, ref), run)
                if (
                    prev is not run
                    and prev.attention != run.attention
                    and prev.shares_maps_with(run)
                ):
                    continue  # the same CMI / MI / whole-image row, already taken from prev
            claim(seen, (run.setting, method, n, ref), run)
            groups = [("all", part)]
            if several:
                groups += list(part.groupby("word_type", sort=True))
            for words, sub in groups:
                measured.score((run.setting, method, ref, words), n, sub, n_boot, seed)
    return measured


_METHOD_RANK = {m: i for i, m in enumerate(METHOD_ORDER)}
_AGGREGATION_RANK = {a: i for i, a in enumerate(AGGREGATION_ORDER)}
_REFERENCE_RANK = {r: i for i, r in enumerate(REFERENCE_ORDER)}
_WORDS_RANK = {w: i for i, w in enumerate(["all", *WORD_TYPE_LABELS])}


def _row_order(k: tuple) -> tuple:
    setting, (name, agg), ref, words = k
    return (
        setting,
        _METHOD_RANK.get(name, len(_METHOD_RANK)),
        name,
        agg is not None,
        _AGGREGATION_RANK.get(agg, len(_AGGREGATION_RANK)),
        str(agg),
        _REFERENCE_RANK.get(ref, len(_REFERENCE_RANK)),
        _WORDS_RANK.get(words, len(_WORDS_RANK)),
        words,
    )


def _row(key: tuple, measured: _Measured, step_cols: list) -> dict[str, Any]:
    """One row of Table 3: the cells of `key` at every step count, and its pair counts."""
    setting, (method, agg), ref, words = key
    by_n = measured.cells.get(key, {})
    row: dict[str, Any] = {
        "setting": setting,
        "method": pub.method_label(method, agg),
        "reference": ref,
        "words": words
        if words == "all"
        else word_type_label(words, setting in measured.shapes_settings),
    }
    for n in step_cols:
        # n_steps left empty (e.g. the whole-image mask) applies to every step count
        paper, held, se, pm = by_n.get(n, by_n.get(None, (float("nan"),) * 4))
        col = "all steps" if n is None else f"{n} steps"
        row[f"{col} paper"] = paper
        row[f"{col}{SE_SUFFIX}"] = se
        row[f"{col}{PUBLISHED_PM_SUFFIX}"] = pm
        row[f"{col} held-out"] = held
        if measured.paper_settings:
            published = (
                setting in measured.paper_settings
                and ref == OBJECT_MASK
                and words == "all"
                and agg
                in (None, pub.PUBLISHED_AGGREGATION, pub.PUBLISHED_AGGREGATION + pub.BUG_SUFFIX)
            )
            value = pub.published_miou(method, n) if published else None
            row[f"{col} published"] = float("nan") if value is None else value
    scored_ids, unscored_ids = measured.counts[key]
    row["pairs"], row["unscored"] = len(scored_ids), len(unscored_ids - scored_ids)
    return row

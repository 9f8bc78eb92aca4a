"""Turn run directories into the paper's Tables 1-4 (Markdown, LaTeX, CSV), without a model.

Reads only ``results.csv`` (and shards), ``summary.json`` and ``meta.json`` of each run (and a
calibrate run's ``calibration.csv``: the calibration table, see reporting.calibration).
Published numbers appear beside measured ones only for runs in the paper's setting: model
``sd-2.1-base`` on a real benchmark (data name not starting with ``shapes-``).
"""

from __future__ import annotations

import glob
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.calibration import calibration_table
from infodecomp.reporting.meta import META, SUMMARY, read_json
from infodecomp.reporting.metrics import (
    IOU_COLUMNS,
    decomposition_note,
    intervention_decomposition,
    intervention_table,
    mean_interval,
    miou_bootstrap,
    miou_cells,
    ranking_scores,
)
from infodecomp.reporting.tables import (
    ESTIMATOR_ORDER,
    TABLE1_KEYS,
    TABLE2_KEYS,
    accuracy_vs_samples,
    display,
    estimator_method,
    fmt_int,
    fmt_number,
    int_or_none,
    table1,
    table1_shown,
    table2,
    table4_shown,
    write_table,
)
from infodecomp.reporting.writer import natural_key, read_results
from infodecomp.tasks import column_key, column_order, get_task, mean_key
from infodecomp.tasks.references import PUBLISHED_WL_REFERENCE

COMMANDS = ("aro", "localize", "intervene", "visualize", "calibrate")
# Table 3 columns per step count: the paper-protocol mIoU, its bootstrap se, the "±" the published
# scripts would print (std of 100 resamples of 0.9 N, / 10: no se), the held-out-threshold mIoU,
# and the paper's own number.
SE_SUFFIX, PUBLISHED_PM_SUFFIX = " se", " ± (published rule)"
MIOU_SUFFIXES = (" paper", SE_SUFFIX, PUBLISHED_PM_SUFFIX, " held-out", " published")
CALIBRATE_DATA = "shapes-* (calibrate's sets)"
# Commands whose run directories carry no table: listed in the runs index only.
LISTED_ONLY = ("validate", "bench", "aggregate", "build-coco-manifest")
METHOD_ORDER = ("whole", "attention", "cmi", "mi", "attn_info", "concept", "exact")
AGGREGATION_ORDER = ("daam", "layer-mean")
LEGACY_ATTENTION = "layer-mean"  # what runs without an `attention` setting computed
ARO_REQUIRED = ("item_id", "subset", "group", "label", "option", "estimator", "score")
LOCALIZE_REQUIRED = ("item_id", "method", "n_steps", "split", *IOU_COLUMNS)
# the columns every intervene run has had; word_type, cmi_stderr and the exact columns are newer
INTERVENE_REQUIRED = (
    "item_id",
    "edit",
    "cmi_total",
    "attn_total",
    "change_total",
    "pixel_r_cmi",
    "pixel_r_attn",
)
TITLES = {
    "table1": "Table 1: compositionality accuracy (%) [95% interval: Wilson score; macro means over groups: Agresti-Coull] (ARO and the other ranking benchmarks)",
    "accuracy_vs_samples": "ARO accuracy (%) vs logsnr samples per image",
    "table2": "Table 2: accuracy (%) per group [95% Wilson score interval] (relation, attribute pair, tag; Winoground: group score)",
    "table3": "Table 3: localisation mIoU (%), paper protocol vs held-out threshold, per word type",
    "table4": "Table 4: intervention correlation (Pearson r ± bootstrap se)",
    "calibration": "Calibration: a learned ShapesWorld model against the exact oracle (same items, same draws)",
    "runs": "Runs",
}


@dataclass
class Run:
    """One run directory: its meta, summary and (lazily) results."""

    path: Path
    meta: dict
    summary: dict
    _results: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def command(self) -> str:
        return str(self.meta.get("command"))

    @property
    def config(self) -> dict:
        return self.meta.get("config") or {}

    @property
    def model(self) -> str:
        return str((self.config.get("model") or {}).get("name") or "unknown")

    @property
    def data(self) -> str:
        if self.command == "calibrate":  # several generated sets; data.name is not read
            return CALIBRATE_DATA
        return str((self.config.get("data") or {}).get("name") or "unknown")

    @property
    def n_samples(self) -> int | None:
        return int_or_none((self.config.get("estimator") or {}).get("n_samples"))

    @property
    def control(self) -> str | None:
        """The data control of an `aro` run (data.control, e.g. shuffled-images), if any."""
        return (self.config.get("data") or {}).get("control") or None

    @property
    def adaptive(self) -> bool:
        return bool((self.config.get("estimator") or {}).get("adaptive", False))

    @property
    def paper_setting(self) -> bool:
        """The paper's model on a real benchmark: published numbers are comparable."""
        return (
            self.model == pub.PAPER_MODEL
            and self.data not in ("unknown", "")
            and not self.data.startswith("shapes-")
        )

    @property
    def setting(self) -> str:
        return f"{self.model} / {self.data}"

    @property
    def attention(self) -> str:
        """Aggregation of the run's attention maps (``daam`` or ``layer-mean``); runs written
        before the ``attention`` option existed used the layer mean. A run under
        ``baseline_input=zero-one-published-bug`` adds ``+published-bug`` (its rows are named
        apart: the baselines saw [0, 1] pixels)."""
        agg = str(self.config.get("attention") or LEGACY_ATTENTION)
        bug = self.config.get("baseline_input") == "zero-one-published-bug"
        return agg + pub.BUG_SUFFIX if bug else agg

    def shares_maps_with(self, other: Run) -> bool:
        """Whether the CMI, MI and whole-image rows of two localize runs are one measurement:
        same model, data, estimator, step counts, context and seed (the attention aggregation,
        the attention steps and where or how fast the runs went may differ)."""

        def key(run: Run) -> dict:
            c = run.config
            r = c.get("run") or {}
            return {
                **{
                    k: c.get(k)
                    for k in (
                        "model",
                        "data",
                        "estimator",
                        "steps",
                        "blank_context",
                        "mi_prompt",
                        "map_draws",
                    )
                },
                **{f"run.{k}": r.get(k) for k in ("seed", "limit", "dtype")},
            }

        return key(self) == key(other)

    @property
    def data_source(self) -> str:
        """Where the run's data came from: hub id and revision, files, or a generated set."""
        ds = self.meta.get("dataset") or {}  # what the loader recorded (runs since it does)
        cfg = self.config.get("data") or {}
        if self.data.startswith("shapes-"):
            return f"ShapesWorld, generated (seed {cfg.get('seed', 0)})"
        if (ds.get("source") or cfg.get("source")) == "hf":
            name = ds.get("hf_name") or cfg.get("hf_name") or "default hub id"
            revision = ds.get("revision") or cfg.get("revision")
            where = f"{name} @ {revision}" if revision else f"{name} (revision not recorded)"
            return f"Hugging Face {where}"
        where = ds.get("annotation_file") or ds.get("manifest") or cfg.get("root")
        return f"files {where}" if where else "files"

    def results(self, required: Iterable[str] = ()) -> pd.DataFrame:
        if self._results is None:
            self._results = read_results(self.path)
        missing = [c for c in required if c not in self._results.columns]
        if missing:
            raise ValueError(
                f"{self.path}/results.csv: columns {missing} missing for a "
                f"'{self.command}' run; found {list(self._results.columns)}."
            )
        return self._results


def find_run_dirs(root: str | Path) -> list[Path]:
    """All run directories (folders holding ``meta.json``) at or below ``root``, sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob(META)}, key=lambda p: natural_key(str(p)))


def expand_run_paths(given: Iterable[str | Path]) -> list[Path]:
    """Run paths as typed: folders, glob patterns (``outputs/aro/2025-*``, ``**``) and
    ``folder/...`` (the folder and everything below it, as searching a folder does anyway).

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches nothing (one line, naming
            every such path).
    """
    out: list[Path] = []
    missing: list[str] = []
    for entry in given:
        text = str(entry)
        if text.endswith(("/...", "\\...")) or text == "...":
            text = text[:-3].rstrip("/\\") or "."
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True), key=natural_key)
            out += [Path(m) for m in matches if Path(m).is_dir()]
            if not any(Path(m).is_dir() for m in matches):
                missing.append(str(entry))
        elif Path(text).exists():
            out.append(Path(text))
        else:
            missing.append(str(entry))
    if missing:
        raise FileNotFoundError(
            f"runs: nothing found at {', '.join(missing)}; pass run directories, folders "
            "holding them (e.g. outputs/aro) or glob patterns (e.g. 'outputs/aro/2025-*')"
        )
    return list(dict.fromkeys(out))


def load_runs(run_dirs: Iterable[str | Path]) -> list[Run]:
    """Load run directories; a folder without ``meta.json`` is searched for runs below it.

    Entries may be glob patterns or end in ``/...``; see :func:`expand_run_paths`.
    """
    runs: list[Run] = []
    seen: set[Path] = set()
    for given in expand_run_paths(run_dirs):
        found = [given] if (given / META).exists() else find_run_dirs(given)
        if not found:
            raise FileNotFoundError(
                f"{given}: no meta.json there or below; pass run directories "
                "written by aro / localize / intervene / visualize."
            )
        for d in found:
            if d.resolve() in seen:  # named twice (a folder and a run inside it)
                continue
            seen.add(d.resolve())
            meta = read_json(d / META)
            if meta.get("command") not in COMMANDS + LISTED_ONLY:
                raise ValueError(
                    f"{d}/meta.json: command {meta.get('command')!r} is not one of "
                    f"{COMMANDS + LISTED_ONLY}."
                )
            summary = read_json(d / SUMMARY) if (d / SUMMARY).exists() else {}
            runs.append(Run(d, meta, summary))
    return runs


def _claim(seen: dict, key: tuple, run: Run) -> None:
    if key in seen:
        raise ValueError(
            f"{run.path} and {seen[key]} both report {key}; aggregate them separately "
            "or remove one (a rerun belongs in the same run directory)."
        )
    seen[key] = run.path


# ------------------------------------------------------------------------------------ ARO tables


def _aro(runs: list[Run]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Long records (one per model x method x n_samples x subset) and per-group rows.

    Runs are told apart by their configured ``estimator.n_samples`` (the sweep variable); the
    ``n_samples`` column of the results is what adaptive allocation actually used per item.
    """
    records, groups, seen, sources = [], [], {}, {}
    for run in runs:
        df = run.results(ARO_REQUIRED)
        if df.empty:
            continue
        used = df["n_samples"] if "n_samples" in df.columns else None
        n = run.n_samples
        if n is None and used is not None and used.nunique() == 1:
            n = int_or_none(used.iloc[0])
        for res in ranking_scores(df):
            est, subset, part, per_group = (
                res["estimator"],
                res["subset"],
                res["part"],
                res["per_group"],
            )
            method = estimator_method(est, run.adaptive)
            source = f"{run.control} control" if run.control else "measured"
            _claim(seen, (run.model, method, n, subset, source), run)
            mean_used = (
                float(part.groupby("item_id")["n_samples"].first().mean())
                if used is not None
                else (float("nan") if n is None else float(n))
            )
            common = {"model": run.model, "method": method, "n_samples": n, "subset": subset}
            sources.setdefault(subset, {})[run.data_source] = None
            rank = (ESTIMATOR_ORDER.index(est) if est in ESTIMATOR_ORDER else 9, run.adaptive)
            for i, (metric, value) in enumerate(res["metrics"].items()):
                records.append(
                    {
                        **common,
                        "subset": column_key(subset, metric),
                        "accuracy": 100 * value,
                        "accuracy_lo": 100 * res["interval"][metric][0],
                        "accuracy_hi": 100 * res["interval"][metric][1],
                        "n_items": part["item_id"].nunique(),
                        "mean_samples": mean_used,
                        "paper": run.paper_setting,
                        "source": source,
                        "derived": i > 0,  # further metrics of the same items
                        "_rank": rank,
                    }
                )
            if not run.control:  # Table 2 breaks down the measured runs only
                groups.append(per_group.assign(**common, accuracy=100 * per_group["accuracy"]))
    if not records:
        return None
    rec = pd.DataFrame(records)
    means = _group_means(rec)
    if means is not None:
        rec = pd.concat([rec, means], ignore_index=True)
    rec["_n"] = rec["n_samples"].map(lambda v: -1 if v is None else v)
    rec = rec.sort_values(["model", "_rank", "method", "_n"], kind="stable")
    rec = rec.drop(columns=["_rank", "_n"]).reset_index(drop=True)
    method_order = {m: i for i, m in enumerate(dict.fromkeys(rec["method"]))}
    if not groups:
        return rec, pd.DataFrame()
    groups_df = pd.concat(groups, ignore_index=True)
    groups_df = groups_df.sort_values("method", key=lambda c: c.map(method_order), kind="stable")
    rec.attrs["data_sources"] = {k: list(v) for k, v in sources.items()}
    return rec, groups_df


def _mean_interval(grp: pd.DataFrame) -> dict[str, float]:
    """accuracy_lo / accuracy_hi (%) of the mean of a group of subsets (metrics.mean_interval)."""
    lo, hi = mean_interval(
        list(grp["accuracy"] / 100),
        list(zip(grp["accuracy_lo"] / 100, grp["accuracy_hi"] / 100, strict=True)),
    )
    return {"accuracy_lo": 100 * lo, "accuracy_hi": 100 * hi}


def _group_means(rec: pd.DataFrame) -> pd.DataFrame | None:
    """Rows for each benchmark's mean over the tasks of one `mean_group` (SugarCrepe's Add,
    Replace, Swap), per model x method x n_samples; only over the subsets that were run."""
    rows = []
    base = rec[~rec["derived"]]
    tasks = {k: get_task(k) for k in base["subset"].unique()}
    groups = {k: (t.benchmark, t.mean_group) for k, t in tasks.items() if t.mean_group}
    if not groups:
        return None
    part = base[base["subset"].isin(groups)].assign(_g=lambda d: d["subset"].map(groups))
    for (model, method, n, source, g), grp in part.groupby(
        ["model", "method", "n_samples", "source", "_g"], sort=False, dropna=False
    ):
        first = grp.iloc[0]
        rows.append(
            {
                "model": model,
                "method": method,
                "n_samples": n,
                "subset": mean_key(*g),
                "source": source,
                "accuracy": float(grp["accuracy"].mean()),
                **_mean_interval(grp),
                "n_items": int(grp["n_items"].sum()),
                "mean_samples": first["mean_samples"],
                "paper": bool(grp["paper"].any()),
                "derived": True,
                "_rank": first["_rank"],
            }
        )
    return pd.DataFrame(rows, columns=rec.columns)


# -------------------------------------------------------------------------------- localisation


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
    cells: dict[tuple, dict[Any, tuple[float, ...]]] = {}
    counts: dict[tuple, tuple[set, set]] = {}
    paper_settings, shapes_settings, steps, seen = set(), set(), set(), {}
    first: dict[tuple, Run] = {}  # (setting, method, n, reference) -> the run its row came from
    for run in runs:
        df = run.results(LOCALIZE_REQUIRED)
        if "reference" not in df.columns:  # runs before the exact references
            df = df.assign(reference=OBJECT_MASK)
        if "word_type" not in df.columns:
            df = df.assign(word_type="noun")
        if run.paper_setting:
            paper_settings.add(run.setting)
        if run.data.startswith("shapes-"):
            shapes_settings.add(run.setting)
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
            _claim(seen, (run.setting, method, n, ref), run)
            groups = [("all", part)]
            if several:
                groups += list(part.groupby("word_type", sort=True))
            for words, sub in groups:
                key = (run.setting, method, ref, words)
                # pairs without a ground-truth mask have no IoU at all: counted, not scored
                scored = sub[sub[IOU_COLUMNS].notna().any(axis=1)]
                ids = counts.setdefault(key, (set(), set()))
                ids[0].update(scored["item_id"])
                ids[1].update(set(sub["item_id"]) - set(scored["item_id"]))
                if scored.empty:
                    continue
                paper, held = miou_cells(scored)
                se, pm = miou_bootstrap(scored, n_boot=n_boot, seed=seed)
                cells.setdefault(key, {})[n] = tuple(100 * v for v in (paper, held, se, pm))
                if n is not None:
                    steps.add(n)
    step_cols = sorted(steps) or [None]
    show_pub = bool(paper_settings)
    mo = {m: i for i, m in enumerate(METHOD_ORDER)}
    ao = {a: i for i, a in enumerate(AGGREGATION_ORDER)}
    ro = {r: i for i, r in enumerate(REFERENCE_ORDER)}
    wo = {w: i for i, w in enumerate(["all", *WORD_TYPE_LABELS])}

    def order(k: tuple) -> tuple:
        setting, (name, agg), ref, words = k
        return (
            setting,
            mo.get(name, len(mo)),
            name,
            agg is not None,
            ao.get(agg, len(ao)),
            str(agg),
            ro.get(ref, len(ro)),
            wo.get(words, len(wo)),
            words,
        )

    rows = []
    for key in sorted(counts, key=order):
        setting, (method, agg), ref, words = key
        by_n = cells.get(key, {})
        row: dict[str, Any] = {
            "setting": setting,
            "method": pub.method_label(method, agg),
            "reference": ref,
            "words": words
            if words == "all"
            else word_type_label(words, setting in shapes_settings),
        }
        for n in step_cols:
            # n_steps left empty (e.g. the whole-image mask) applies to every step count
            paper, held, se, pm = by_n.get(n, by_n.get(None, (float("nan"),) * 4))
            col = "all steps" if n is None else f"{n} steps"
            row[f"{col} paper"] = paper
            row[f"{col}{SE_SUFFIX}"] = se
            row[f"{col}{PUBLISHED_PM_SUFFIX}"] = pm
            row[f"{col} held-out"] = held
            if show_pub:
                published = (
                    setting in paper_settings
                    and ref == OBJECT_MASK
                    and words == "all"
                    and agg
                    in (None, pub.PUBLISHED_AGGREGATION, pub.PUBLISHED_AGGREGATION + pub.BUG_SUFFIX)
                )
                value = pub.published_miou(method, n) if published else None
                row[f"{col} published"] = float("nan") if value is None else value
        scored_ids, unscored_ids = counts[key]
        row["pairs"], row["unscored"] = len(scored_ids), len(unscored_ids - scored_ids)
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- interventions


def table4(runs: list[Run], *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Rows = setting x edit x words x method; image- and pixel-level r with bootstrap se.

    Methods: CMI and attention; with exact references (ShapesWorld oracle) also the exact CMI
    (the r a perfect estimator would give) and the estimate against the exact CMI. ``words`` is
    ``all`` and, with several word types, one row group per type. On the ``all`` CMI row of an
    oracle run, ``note`` says how much of the image-level r is word type and how much noise.
    """
    rows, seen = [], {}
    show_pub = any(r.paper_setting for r in runs)
    for run in runs:
        df = run.results(INTERVENE_REQUIRED)
        if df.empty:
            continue
        _claim(seen, (run.setting,), run)
        if "word_type" not in df.columns:
            df = df.assign(word_type="noun")
        shapes = run.data.startswith("shapes-")
        edits = sorted(set(df["edit"].dropna()))
        several = df["word_type"].nunique() > 1
        for edit in ["all", *edits] if len(edits) > 1 else ["all"]:
            part = df if edit == "all" else df[df["edit"] == edit]
            groups = [("all", part)]
            if several:
                groups += list(part.groupby("word_type", sort=True))
            for words, sub in groups:
                stats = intervention_table(sub, n_boot=n_boot, seed=seed)
                note = ""
                if words == "all":
                    d = intervention_decomposition(sub)
                    note = decomposition_note(d) if d else ""
                for method, s in stats.iterrows():
                    agg = run.attention if method in pub.ATTENTION_METHODS else None
                    row = {
                        "setting": run.setting,
                        "edit": edit,
                        "words": words if words == "all" else word_type_label(words, shapes),
                        "method": pub.method_label(method, agg),
                        "image_r": s.image_r,
                        "image_se": s.image_se,
                        "pixel_r": s.pixel_r,
                        "pixel_se": s.pixel_se,
                        "n_items": int(s.n_items),
                        "n_pixel": int(s.n_pixel),
                        "note": note if method == "cmi" else "",
                    }
                    if show_pub:
                        ok = run.paper_setting and edit == "all" and words == "all"
                        ok = ok and agg in (None, pub.PUBLISHED_AGGREGATION)
                        for level in ("image", "pixel"):
                            r_se = pub.published_correlation(method, level) if ok else None
                            r, se = r_se if r_se else (float("nan"), float("nan"))
                            row[f"published_{level}_r"], row[f"published_{level}_se"] = r, se
                    rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ top level


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
NOTE_TABLE4_EXACT = (
    "Exact CMI (oracle): the correlation with the exact CMI (full logsnr range) in place of the "
    "estimate. CMI estimate vs exact CMI: image level, r between the estimated and the exact "
    "totals across items; pixel level, the mean per-item r between the two maps."
)


NOTE_CALIBRATION = (
    "learned: the calibrated model; exact: the exact ShapesWorld oracle through the same "
    "estimator at the same (logsnr, eps) draws on the same items (reference 'exact oracle, same "
    "draws'), or the closed-form value the reference names (log p(x|y) - log p(x), the exact map "
    "from the oracle's posteriors). bias = mean(learned - exact); slope of learned regressed on "
    "exact and Pearson corr across items (ranking rows: across per-item margins, true option "
    "minus the best other). An oracle calibrated against itself gives bias 0, slope 1, corr 1."
)


def calibration(runs: list[Run]) -> pd.DataFrame:
    """The calibration tables of calibrate runs, one setting (model, samples) per run."""
    seen: dict = {}
    pairs = []
    for run in runs:
        setting = f"{run.model}, {run.n_samples} samples, seed {run.meta.get('seed')}"
        _claim(seen, (setting,), run)
        pairs.append((setting, run.path))
    return calibration_table(pairs)


def table_notes(built: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> dict[str, str]:
    """Paragraphs under the tables that hold rows needing one (the exact references)."""
    notes = {}
    if "calibration" in built:
        notes["calibration"] = NOTE_CALIBRATION
    if "table3" in built:
        t3 = built["table3"][0]
        exact = pub.METHOD_LABELS["exact"]
        parts = [NOTE_TABLE3_ERRORS]
        if (t3["method"] == exact).any() or (t3["reference"] == "exact map").any():
            parts.append(NOTE_TABLE3_EXACT)
        if (t3["reference"] == PUBLISHED_WL_REFERENCE).any():
            parts.append(NOTE_TABLE3_WL)
        notes["table3"] = " ".join(parts)
    if "table4" in built:
        if (built["table4"][0]["method"] == pub.METHOD_LABELS["exact"]).any():
            notes["table4"] = NOTE_TABLE4_EXACT
    return notes


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run: command, model, data, samples, progress, wall time, paper setting."""
    return pd.DataFrame(
        [
            {
                "run": str(r.path),
                "command": r.command,
                "model": r.model,
                "data": r.data,
                "n_samples": r.n_samples,
                "items_done": r.meta.get("items_done"),
                "items_skipped": r.meta.get("items_skipped"),
                "wall_time_s": r.meta.get("wall_time_s"),
                "paper_setting": r.paper_setting,
                "data_source": r.data_source,
            }
            for r in runs
        ]
    )


def aggregate(
    run_dirs: list[Path], out_dir: Path, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Build Tables 1-4 from run directories and write them as Markdown, LaTeX and CSV.

    Args:
        run_dirs: run directories (or folders searched for run directories below them).
        out_dir: where ``table{k}.{md,tex,csv}``, ``accuracy_vs_samples.*``, ``runs.*`` and the
            combined ``tables.md`` are written.
        n_boot: bootstrap resamples for the Table 3 and Table 4 standard errors.
        seed: seed of the bootstrap.

    Returns:
        Numeric tables by name (``table1``, ``table2``, ``accuracy_vs_samples``, ``table3``,
        ``table4``, ``runs``), only those the runs provide; each frame's ``attrs["markdown"]``
        holds its rendered Markdown.
    """
    built = build_tables(load_runs(run_dirs), n_boot=n_boot, seed=seed)
    return write_tables(built, out_dir)


def build_tables(
    runs: list[Run], *, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Tables 1-4, accuracy against samples and the runs index of loaded runs, unwritten.

    Returns:
        name -> (numbers, the same table as display strings), only the tables the runs provide,
        in display order (see :data:`TITLES`).
    """
    by_cmd = {c: [r for r in runs if r.command == c] for c in COMMANDS}
    built: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    notes: dict[str, list[str]] = {}
    pct = fmt_number(1)
    aro = _aro(by_cmd["aro"]) if by_cmd["aro"] else None
    if aro is not None:
        rec, groups = aro
        t1 = table1(rec)
        fmt1 = {c: pct for c in t1.columns if c not in TABLE1_KEYS}
        fmt1 |= {"n_samples": fmt_int, "samples/item": fmt_number(1)}
        built["table1"] = (t1, table1_shown(t1, display(t1, fmt1)))
        notes["table1"] = data_notes(rec.attrs["data_sources"])
        sweep = accuracy_vs_samples(rec[rec["source"] == "measured"])
        if sweep is not None:
            fmt_s = {c: pct for c in sweep.columns} | {"n_samples": fmt_int}
            built["accuracy_vs_samples"] = (sweep, display(sweep, fmt_s))
        if not groups.empty:
            t2 = table2(groups)
            fmt2 = {c: pct for c in t2.columns if c not in TABLE2_KEYS}
            shown2 = display(t2, fmt2 | {"n_samples": fmt_int, "n": fmt_int})
            built["table2"] = (t2, table1_shown(t2, shown2))
    t3 = (
        table3(by_cmd["localize"], n_boot=n_boot, seed=seed)
        if by_cmd["localize"]
        else pd.DataFrame()
    )
    if not t3.empty:
        built["table3"] = (
            t3,
            display(
                t3,
                {c: fmt_number(2) for c in t3.columns if c.endswith(MIOU_SUFFIXES)}
                | {"pairs": fmt_int, "unscored": fmt_int},
            ),
        )
    t4 = table4(by_cmd["intervene"], n_boot=n_boot, seed=seed) if by_cmd["intervene"] else None
    if t4 is not None and not t4.empty:
        built["table4"] = (t4, table4_shown(t4))
    tc = calibration(by_cmd["calibrate"]) if by_cmd["calibrate"] else pd.DataFrame()
    if not tc.empty:
        stats = {c: fmt_number(3) for c in ("learned", "exact", "bias", "slope", "corr")}
        built["calibration"] = (tc, display(tc, stats | {"n": fmt_int}))
    paragraphs = table_notes(built)
    rt = runs_table(runs)
    built["runs"] = (rt, display(rt, {"n_samples": fmt_int, "wall_time_s": fmt_number(1)}))
    for name, lines in notes.items():  # footnote lines under the table (write_tables)
        built[name][0].attrs["notes"] = lines
    for name, text in paragraphs.items():  # a paragraph under the table (write_tables)
        built[name][0].attrs["note"] = text
    return built


def write_tables(
    built: dict[str, tuple[pd.DataFrame, pd.DataFrame]], out_dir: Path
) -> dict[str, pd.DataFrame]:
    """Write the tables of :func:`build_tables` as ``{name}.{md,tex,csv}`` and ``tables.md``.

    Returns:
        The numeric tables by name, each with its Markdown in ``attrs["markdown"]``.
    """
    out: dict[str, pd.DataFrame] = {}
    parts = ["# infodecomp results\n"]
    for name, (data, shown) in built.items():
        md = write_table(
            data,
            shown,
            out_dir,
            name,
            TITLES[name],
            data.attrs.get("notes"),
            data.attrs.get("note", ""),
        )
        data.attrs["markdown"] = md
        out[name] = data
        parts.append(md)
    Path(out_dir, "tables.md").write_text("\n".join(parts), encoding="utf-8")
    return out


def data_notes(sources: dict[str, list[str]]) -> list[str]:
    """One line per subset: where its items came from (several sources are all listed)."""
    return [f"Data, {get_task(s).label}: {'; '.join(sources[s])}." for s in column_order(sources)]


def tables_markdown(tables: dict[str, pd.DataFrame]) -> str:
    """The rendered Markdown of every table returned by :func:`aggregate`, one after another."""
    return "\n".join(t.attrs.get("markdown", "") for t in tables.values())

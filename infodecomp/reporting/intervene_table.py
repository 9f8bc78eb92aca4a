"""Table 4: intervention correlations of `intervene` runs (image- and pixel-level r with
bootstrap se), per setting x edit x words x method."""

from __future__ import annotations

import pandas as pd

from infodecomp.reporting import published as pub
from infodecomp.reporting.localize_table import word_type_label
from infodecomp.reporting.metrics import (
    decomposition_note,
    intervention_decomposition,
    intervention_table,
)
from infodecomp.reporting.runs import Run, claim

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

NOTE_TABLE4_EXACT = (
    "Exact CMI (oracle): the correlation with the exact CMI (full logsnr range) in place of the "
    "estimate. CMI estimate vs exact CMI: image level, r between the estimated and the exact "
    "totals across items; pixel level, the mean per-item r between the two maps."
)


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
        claim(seen, (run.setting,), run)
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

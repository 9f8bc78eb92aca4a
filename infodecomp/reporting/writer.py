"""The results schema of each command and the run directory's store, exports and readers.

Layout of a run directory (see docs/architecture.md, 'Run directories'):

- ``results.sqlite`` (``results.rank-<r>.sqlite`` per data-parallel rank): the transactional store
  of results, finished and skipped items, legs and the config fingerprint
  (infodecomp.reporting.store).
- ``results.csv``: long-format rows, one column per name below, exported from the store at the
  end of every run and by ``infodecomp export run.out_dir=<dir>``; rows in data-set order.
- ``skipped.csv``: ``item_id,reason`` for items left out of the run.
"""

from __future__ import annotations

from infodecomp.reporting.csvio import natural_key
from infodecomp.reporting.metrics import IOU_COLUMNS
from infodecomp.reporting.segmentation import SEG_COLUMNS
from infodecomp.reporting.store import (
    RESULTS,
    SKIPPED,
    STORE,
    ResumeRefused,
    RunLock,
    RunLocked,
    RunStore,
    RunView,
    Skip,
    StoreError,
    export,
    read_results,
    store_path,
)

__all__ = [
    "ARO_COLUMNS",
    "ARO_KEY",
    "INTERVENE_COLUMNS",
    "INTERVENE_KEY",
    "LOCALIZE_COLUMNS",
    "LOCALIZE_KEY",
    "RESULTS",
    "SKIPPED",
    "STORE",
    "ResumeRefused",
    "RunLock",
    "RunLocked",
    "RunStore",
    "RunView",
    "Skip",
    "StoreError",
    "export",
    "natural_key",
    "read_results",
    "store_path",
]

# results.csv columns of each command (long format; docs/architecture.md).
ARO_COLUMNS = [
    "item_id",
    "subset",
    "group",
    "label",
    "option",
    "text",
    "estimator",
    "value",
    "stderr",
    "score",
    "n_samples",
    "n_report",
    "values_from",
]
ARO_KEY = ["item_id", "option", "estimator"]
LOCALIZE_COLUMNS = [
    "item_id",
    "word",
    "word_type",
    "method",
    "reference",
    "n_steps",
    "split",
    "value",
    *IOU_COLUMNS,
    *SEG_COLUMNS,  # segmentation benchmarks (imagenet-seg, voc-seg): counts and AP per map
]
LOCALIZE_KEY = ["item_id", "method", "n_steps", "reference"]
INTERVENE_COLUMNS = [
    "item_id",
    "word",
    "word_type",
    "edit",
    "cmi_total",
    "cmi_stderr",
    "attn_total",
    "change_total",
    "pixel_r_cmi",
    "pixel_r_attn",
    "exact_total",
    "exact_stderr",
    "pixel_r_exact",
    "pixel_r_cmi_exact",
    "roundtrip_rmse",  # RMS of generate(invert(x)) - x under the caption, per item
]
INTERVENE_KEY = ["item_id", "edit"]

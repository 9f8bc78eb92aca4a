"""The commands of `infodecomp`: the module that implements each and its one-line help.

Pure data, read by the dispatcher (cli.py) and by each command's --help (experiments/help.py).
"""

from __future__ import annotations

# command -> (module implementing `main()`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "aro": (
        "infodecomp.experiments.commands.aro",
        "compositionality: ARO, SugarCrepe, Winoground (Tables 1, 2)",
    ),
    "localize": ("infodecomp.experiments.commands.localize", "word localisation mIoU (Table 3)"),
    "intervene": (
        "infodecomp.experiments.commands.intervene",
        "prompt interventions vs CMI (Table 4)",
    ),
    "visualize": (
        "infodecomp.experiments.commands.visualize",
        "pixel MI / CMI heat maps, MMSE curves (Fig. 2)",
    ),
    "aggregate": (
        "infodecomp.experiments.commands.aggregate",
        "turn run directories into Tables 1-4 and the calibration table",
    ),
    "export": (
        "infodecomp.experiments.commands.export",
        "write results.csv / skipped.csv from a run's store (killed or damaged runs)",
    ),
    "validate": (
        "infodecomp.experiments.commands.validate",
        "check every estimator against exact ground truth",
    ),
    "bench": ("infodecomp.experiments.commands.bench", "speed and sample-efficiency benchmark"),
    "train-shapes": (
        "infodecomp.experiments.commands.train_shapes",
        "train the learned ShapesWorld model (known ground truth; model=shapes-learned)",
    ),
    "calibrate": (
        "infodecomp.experiments.commands.calibrate",
        "a learned ShapesWorld model against the exact oracle, same items and draws",
    ),
    "report": (
        "infodecomp.experiments.commands.report",
        "static HTML report of run directories (tables, curves, heat maps, metadata)",
    ),
    "build-coco-manifest": (
        "infodecomp.experiments.commands.build_manifest",
        "make COCO-IT / COCO-WL manifests from COCO annotations",
    ),
}

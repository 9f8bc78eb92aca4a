"""The zero-shot segmentation benchmarks ConceptAttention (Helbling et al., ICML 2025) reports on:
their names, evaluation grid and how each pools its metrics. Pure Python (no task registered:
these are not ranking tasks); the data layer and the reporting layer both read it.

- `imagenet-seg`: ImageNet-Segmentation (Guillaumin et al.), the 4,276 annotated images of
  `gtsegs_ijcv.mat`; one item per image, the word is its class name.
- `voc-single`: PascalVOC 2012 segmentation val, the images with one object class (930 in the
  paper), that class against everything else; void (255) pixels are left out.
- `voc-per-class`: every val image (1,449), one item per object class present, that class
  against everything else. Its numbers are binary per-class scores, not the published
  multi-class (argmax over the image's concepts) figures.

Every map and mask is scored at EVAL_SIZE x EVAL_SIZE, as the published evaluation does.
"""

from __future__ import annotations

EVAL_SIZE = 224  # the published evaluation's grid (labels resized with PIL's nearest)
VOID = 255  # PascalVOC's boundary / "difficult" label: not scored

# protocol -> how its mIoU pools the counts (reporting.segmentation.benchmark_metrics):
# "stacked": the published ImageNet-Segmentation arithmetic (prediction and target each stacked
# as (background, foreground) planes and histogrammed together: both bins get the same ratio,
# pooled agree / (2 N - agree)); "classes": per-class IoU (background, foreground) pooled over
# the data set, void pixels out (the published PascalVOC single-class script).
PROTOCOLS: dict[str, str] = {
    "imagenet-seg": "stacked",
    "voc-single": "classes",
    "voc-per-class": "classes",
}
LABELS = {
    "imagenet-seg": "ImageNet-Segmentation",
    "voc-single": "PascalVOC (single class)",
    "voc-per-class": "PascalVOC (per class, all images)",
}

# The published evaluation's PascalVOC vocabulary (index = label value in SegmentationClass):
# the word each class is prompted with.
VOC_WORDS: tuple[str, ...] = (
    "background",
    "plane",
    "bike",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "table",
    "dog",
    "horse",
    "motorcycle",
    "person",
    "pot",
    "sheep",
    "sofa",
    "train",
    "monitor",
)

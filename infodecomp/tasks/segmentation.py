"""The zero-shot segmentation benchmarks ConceptAttention (Helbling et al., ICML 2025) reports on:
their names, evaluation grid and how each pools its metrics. Pure Python (no task registered:
these are not ranking tasks); the data layer and the reporting layer both read it.

- `imagenet-seg`: ImageNet-Segmentation (Guillaumin et al.), the 4,276 annotated images of
  `gtsegs_ijcv.mat`; one item per image, the word is its class name.
- `voc-single`: PascalVOC 2012 segmentation val, the images with one object class (930 in the
  paper), that class against everything else; void (255) pixels are left out.
- `voc-multi`: the published multi-class evaluation: every val image (1,449) is one item; each
  method's maps of the five background concepts and the image's present classes are compared
  pixel by pixel (argmax), the winner's VOC label (0 for a background concept) is the
  prediction, scored over the 21 labels at MULTI_EVAL_SIZE (pixel accuracy, mIoU; no mAP).
- `voc-per-class`: every val image, one item per object class present, that class against
  everything else (binary per-class scores; not a published protocol).

Every binary map and mask is scored at EVAL_SIZE x EVAL_SIZE, as the published evaluation does;
the multi-class label maps at MULTI_EVAL_SIZE x MULTI_EVAL_SIZE, as its multi-class script does.
"""

from __future__ import annotations

EVAL_SIZE = 224  # the published evaluation's grid (labels resized with PIL's nearest)
MULTI_EVAL_SIZE = 64  # the published multi-class script's grid (labels and predictions)
VOID = 255  # PascalVOC's boundary / "difficult" label: not scored

# protocol -> how its mIoU pools the counts (reporting.segmentation.benchmark_metrics):
# "stacked": the published ImageNet-Segmentation arithmetic (prediction and target each stacked
# as (background, foreground) planes and histogrammed together: both bins get the same ratio,
# pooled agree / (2 N - agree)); "classes": per-class IoU (background, foreground) pooled over
# the data set, void pixels out (the published PascalVOC single-class script); "argmax": label
# maps over the 21 VOC labels (the published multi-class script: reporting.segmentation).
PROTOCOLS: dict[str, str] = {
    "imagenet-seg": "stacked",
    "voc-single": "classes",
    "voc-multi": "argmax",
    "voc-per-class": "classes",
}
LABELS = {
    "imagenet-seg": "ImageNet-Segmentation",
    "voc-single": "PascalVOC (single class)",
    "voc-multi": "PascalVOC (multi-class)",
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

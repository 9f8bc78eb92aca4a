"""ARO (Yuksekgonul et al., 2023): the four subsets and their published metric rules.

- VG-Relation: macro mean over relations of per-relation accuracy, the relations in
  `aro_relations.EXCLUDED_RELATIONS` left out.
- VG-Attribution: macro mean over attribute pairs with at least `MIN_ATTRIBUTE_GROUP` items.
- COCO-Order, Flickr30k-Order: plain accuracy (Precision@1).
The loaders are in infodecomp.data.aro; they tag items with these subset names.
"""

from __future__ import annotations

from infodecomp.tasks.aro_relations import EXCLUDED_RELATIONS
from infodecomp.tasks.base import RankingTask, register

MIN_ATTRIBUTE_GROUP = (
    25  # VG-Attribution averages over attribute pairs with at least this many items
)

VG_RELATION = RankingTask(
    "vg-relation",
    "VG-R",
    "ARO",
    macro_groups=lambda g: ~g["group"].isin(EXCLUDED_RELATIONS),
    rule="macro over relations, excluded relations left out",
    aliases=("visual-genome-relation", "vg-r", "aro-vg-relation", "VG_Relation"),
)
VG_ATTRIBUTION = RankingTask(
    "vg-attribution",
    "VG-A",
    "ARO",
    macro_groups=lambda g: g["n"] >= MIN_ATTRIBUTE_GROUP,
    rule=f"macro over attribute pairs with >= {MIN_ATTRIBUTE_GROUP} items",
    aliases=("visual-genome-attribution", "vg-a", "aro-vg-attribution", "VG_Attribution"),
)
COCO_ORDER = RankingTask(
    "coco-order", "COCO-Order", "ARO", aliases=("aro-coco-order", "COCO_Order")
)
FLICKR_ORDER = RankingTask(
    "flickr-order",
    "Flickr-Order",
    "ARO",
    aliases=("flickr30k-order", "aro-flickr-order", "Flickr30k_Order"),
)

register(VG_ATTRIBUTION, VG_RELATION, COCO_ORDER, FLICKR_ORDER)

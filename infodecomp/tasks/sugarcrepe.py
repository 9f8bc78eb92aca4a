"""SugarCrepe (Hsieh et al., 2023): seven hard-negative subsets of COCO val2017 captions.

Per subset the authors' metric is the fraction of items whose positive caption scores strictly
higher than the negative one (a tie counts as wrong: loaders put the negative first, so the
first-index tie rule picks it). Tables also show the means over the Add, Replace and Swap
subsets. The loader is infodecomp.data.sugarcrepe.
"""

from __future__ import annotations

from infodecomp.tasks.base import RankingTask, register

# subset file stem -> (task name, table label, mean group)
SUBSETS = {
    "add_att": ("sugarcrepe-add-att", "SC add-att", "Add"),
    "add_obj": ("sugarcrepe-add-obj", "SC add-obj", "Add"),
    "replace_att": ("sugarcrepe-replace-att", "SC replace-att", "Replace"),
    "replace_obj": ("sugarcrepe-replace-obj", "SC replace-obj", "Replace"),
    "replace_rel": ("sugarcrepe-replace-rel", "SC replace-rel", "Replace"),
    "swap_att": ("sugarcrepe-swap-att", "SC swap-att", "Swap"),
    "swap_obj": ("sugarcrepe-swap-obj", "SC swap-obj", "Swap"),
}

register(
    *(
        RankingTask(
            name, label, "SugarCrepe", rule="positive > negative (ties wrong)", mean_group=g
        )
        for name, label, g in SUBSETS.values()
    )
)

"""Winoground (Thrush et al., 2022): two images and two captions per example, the same words
in another order. Scores: with s(c, i) the score of caption c on image i,

- text correct:  s(c0, i0) > s(c1, i0) and s(c1, i1) > s(c0, i1)
- image correct: s(c0, i0) > s(c0, i1) and s(c1, i1) > s(c1, i0)
- group correct: both.

Comparisons are strict (a tie is wrong). Loaders give each image its own RankingItem with the
two captions as options, label = the image's index (caption k describes image k) and item id
`<example id>-img<k>`; both images of an example share one (logsnr, eps) draw (common random
numbers). The image score compares one caption across two images: pointwise information is
comparable across images, the raw denoising loss is not (it mostly measures how hard an image
is to denoise).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from infodecomp.tasks.base import RankingTask, register

IMAGE_SEP = "-img"  # item ids are f"{example}{IMAGE_SEP}{k}", k in (0, 1)


def example_of(item_id: str) -> str:
    return str(item_id).rsplit(IMAGE_SEP, 1)[0]


@dataclass(frozen=True)
class WinogroundTask(RankingTask):
    """A 2 x 2 image-caption task with text, image and group scores (see the module doc)."""

    metrics: tuple[str, ...] = ("text", "image", "group")
    rule: str = "text / image / group scores over 2 x 2 examples (strict, ties wrong)"

    def evaluate(self, scores: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
        need = {"item_id", "option", "score", "label", "group"}
        missing = need - set(scores.columns)
        if missing:
            raise ValueError(f"{self.name}: columns {sorted(missing)} missing")
        if scores["score"].isna().any():
            raise ValueError(f"{self.name}: NaN scores; rerun those items")
        df = scores.assign(
            example=scores["item_id"].map(example_of), image=scores["label"].astype(int)
        )
        s = df.pivot_table(
            index="example", columns=["image", "option"], values="score", aggfunc="first"
        )
        full = [(i, o) for i in (0, 1) for o in (0, 1)]
        complete = s.reindex(columns=pd.MultiIndex.from_tuples(full)).dropna()
        if complete.empty:
            raise ValueError(f"{self.name}: no example has both images scored on both captions")
        v = {k: complete[k].to_numpy() for k in full}
        text = (v[0, 0] > v[0, 1]) & (v[1, 1] > v[1, 0])
        image = (v[0, 0] > v[1, 0]) & (v[1, 1] > v[0, 1])
        per = pd.DataFrame(
            {"text": text, "image": image, "group": text & image}, index=complete.index
        )
        tags = df.groupby("example")["group"].first().reindex(per.index).astype(str)
        g = per.astype(float).groupby(tags)
        per_group = pd.DataFrame(
            {
                "group": g.mean().index,
                "n": g.size().values,
                "accuracy": g.mean()["group"].values,  # per-tag group score
                "text": g.mean()["text"].values,
                "image": g.mean()["image"].values,
                "included": True,
            }
        )
        per_group.attrs.update(
            rule=self.rule,
            subset=self.name,
            incomplete=int(s.shape[0] - len(complete)),
            micro=float(per["group"].mean()),
            macro=float(per_group["accuracy"].mean()),
        )
        return {m: float(per[m].mean()) for m in self.metrics}, per_group


register(
    WinogroundTask("winoground", "Winoground", "Winoground"),
    WinogroundTask("shapes-winoground", "shapes-winoground", "ShapesWorld"),
)

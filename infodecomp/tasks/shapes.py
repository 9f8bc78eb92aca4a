"""ShapesWorld ranking sets (infodecomp.data.shapes): plain accuracy; the per-group table keeps
the macro mean over relations / colour pairs in its attrs."""

from __future__ import annotations

from infodecomp.tasks.base import RankingTask, register

register(
    *(
        RankingTask(name, name, "ShapesWorld")
        for name in ("shapes-attribute", "shapes-order", "shapes-relation")
    )
)

"""Section 5 of calibrate (`intervene`): the learned model's images regenerated (probability-flow
ODE) with the word omitted or swapped; the change against the learned and the exact CMI, per
image (totals) and per pixel (maps)."""

from __future__ import annotations

from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.estimators.queries import EDIT_CONTRAST, intervene_queries
from infodecomp.experiments.commands.calibrate.pair import (
    EXACT_MAP,
    SAME_DRAWS,
    Pair,
    pearson_r,
    row,
    with_x,
)
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import CalibrateConfig
from infodecomp.experiments.maps import exact_word_info
from infodecomp.experiments.regeneration import change_map, exact_swap_info, regenerate


def intervene_section(pair: Pair, cfg: CalibrateConfig) -> list[dict]:
    """Each edit's change against its own CMI (omit: caption vs "_" context; swap: caption vs
    swapped caption), the learned model's and the oracle's at the same draws, and the exact."""
    items = load_dataset(
        DataSpec(
            name="shapes-intervene", size=cfg.word_items, seed=cfg.data.seed, noise=cfg.data.noise
        )
    ).items
    xs_m, xs_o = pair.encode([it.image for it in items])
    ecfg = engine_config(cfg.estimator, cfg.run, pixel_maps=True)
    queries = intervene_queries(items, xs_o, cfg.edits)
    ests_m, ests_o = pair.estimate(with_x(queries, xs_m), queries, ecfg)
    seed, n_draws = cfg.run.seed, cfg.exact_draws
    exact = {
        "omit": exact_word_info(pair.oracle, items, xs_o, True, seed, n_draws=n_draws),
        "swap": exact_swap_info(pair.oracle, items, xs_o, seed, n_draws=n_draws),
    }
    regen, _ = regenerate(pair.model, items, xs_m, cfg.n_sigmas, cfg.edits)
    rows = []
    for edit in cfg.edits:
        k = EDIT_CONTRAST[edit]
        idx = [i for i, it in enumerate(items) if edit == "omit" or it.swap_caption]
        changes = [change_map(regen, edit, i).double().numpy() for i in idx]
        total = [float(c.sum()) for c in changes]
        lt = [ests_m[i].info_o(k)[0] for i in idx]
        ot = [ests_o[i].info_o(k)[0] for i in idx]
        xt = [exact[edit][i].total("io")[0] for i in idx]
        note = f"the learned model's ODE ({cfg.n_sigmas} noise levels); the edit's own CMI i^o (swap: caption vs swapped), full range for the exact map"
        q_img = "image-level r(change total, CMI total)"
        for ref, totals in ((SAME_DRAWS, ot), (EXACT_MAP, xt)):
            r_l, r_x = pearson_r(total, lt), pearson_r(total, totals)
            rows.append(
                row("intervene", q_img, edit, ref, r_l, r_x, paired=False, note=note, n=len(idx))
            )
        px_l = [
            pearson_r(c, ests_m[i].io_map[k].numpy()) for c, i in zip(changes, idx, strict=True)
        ]
        px_o = [
            pearson_r(c, ests_o[i].io_map[k].numpy()) for c, i in zip(changes, idx, strict=True)
        ]
        px_x = [
            pearson_r(c, exact[edit][i].map().numpy()) for c, i in zip(changes, idx, strict=True)
        ]
        q_px = "pixel-level r(change, CMI map), mean over images"
        rows.append(row("intervene", q_px, edit, SAME_DRAWS, px_l, px_o, paired=False, note=note))
        rows.append(row("intervene", q_px, edit, EXACT_MAP, px_l, px_x, paired=False, note=note))
    return rows

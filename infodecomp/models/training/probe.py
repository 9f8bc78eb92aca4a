"""The relation probe of a ShapesWorld model: does it know where the relation words put the
objects? Loss gaps of a model against the exact oracle's on fixed draws (a relation swapped,
the relation or the first colour word removed), the layout effect of "left of" against "right
of" on pure noise, and the text encoder's distances; logged every `eval_every` training steps
(train_log.csv) and printed on the model card."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from infodecomp.models.training.data import draw_logsnr, noisy, predict
from infodecomp.worlds import shapes as world

# the relation probe's swap draws: below -1 a swap contradicts no visible scene
SWAP_BAND = (-6.0, -1.0)
LAYOUT_LOGSNR = -3.0  # the layout probe's logsnr: the relation band's peak
LAYOUT_REPEATS = 4  # noise draws per caption pair of the layout probe
OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}


@dataclass
class ProbeSet:
    """Fixed draws of the relation probe: two-object relation captions with a scene of each.

    Captions per item: the true one, the relation swapped for its opposite (the objects' places
    exchanged), the relation word removed, the first colour word removed. `low` draws have
    logsnr uniform over SWAP_BAND, `train` draws the training density; `exact_*` are the exact
    oracle's per-row loss gaps on the same draws. `te_*` are caption pairs that differ in the
    relation (left of / right of) or in the first colour (red / blue), for the text encoder.
    """

    ids: torch.Tensor  # [4, N, T]: true, swapped, relation removed, colour removed
    z_low: torch.Tensor
    logsnr_low: torch.Tensor
    eps_low: torch.Tensor
    z_train: torch.Tensor
    logsnr_train: torch.Tensor
    eps_train: torch.Tensor
    exact_swap: torch.Tensor  # [N] exact squared-error gap, swapped - true, low draws
    exact_relation: torch.Tensor  # [N] relation removed - true, training draws
    exact_colour: torch.Tensor  # [N] colour removed - true, training draws
    te_relation: torch.Tensor  # [2, P, T]
    te_colour: torch.Tensor  # [2, P, T]
    captions: tuple[list[str], ...] = ()  # the 4 caption lists behind `ids`
    layout_z: torch.Tensor | None = None  # [L, C, H, W] pure noise at logsnr LAYOUT_LOGSNR
    layout_captions: tuple[list[str], ...] = ()  # left of / right of captions of te_relation
    exact_layout: float = 0.0  # the oracle's layout effect (relation_probe)

    def to(self, device: torch.device) -> ProbeSet:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return ProbeSet(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in moved.items()})


def probe_captions(c1: str, s1: str, rel: str, c2: str, s2: str) -> tuple[str, str, str, str]:
    """(true, relation swapped, relation removed, first colour removed) captions of one item."""
    return (
        f"a {c1} {s1} {rel} a {c2} {s2}",
        f"a {c1} {s1} {OPPOSITE[rel]} a {c2} {s2}",
        f"a {c1} {s1} a {c2} {s2}",
        f"a {s1} {rel} a {c2} {s2}",
    )


def make_probe_set(tokenizer: Any, size: int, seed: int, sigma0: float) -> ProbeSet:
    from infodecomp.models.oracles.exact import ShapesOracle

    gen = torch.Generator().manual_seed(20_000 + seed)
    kinds = list(itertools.product(world.COLOURS, world.SHAPES))
    rels = list(world.RELATIONS)
    means = world.scene_means().float()
    captions: list[tuple[str, str, str, str]] = []
    scenes = []
    for _ in range(size):
        (c1, s1), (c2, s2) = (kinds[int(i)] for i in torch.randint(len(kinds), (2,), generator=gen))
        rel = rels[int(torch.randint(len(rels), (1,), generator=gen))]
        caps = probe_captions(c1, s1, rel, c2, s2)
        members = world.scene_set(caps[0]).nonzero().flatten()
        scenes.append(int(members[int(torch.randint(len(members), (1,), generator=gen))]))
        captions.append(caps)
    shape = (size, 3, world.CANVAS, world.CANVAS)
    x = (means[scenes] + sigma0 * torch.randn(size, means.shape[1], generator=gen)).view(shape)
    lo, hi = SWAP_BAND
    logsnr_low = lo + (hi - lo) * torch.rand(size, generator=gen)
    eps_low = torch.randn(shape, generator=gen)
    logsnr_train = draw_logsnr(size, gen)
    eps_train = torch.randn(shape, generator=gen)
    z_low, z_train = noisy(x, logsnr_low, eps_low), noisy(x, logsnr_train, eps_train)
    oracle = ShapesOracle(sigma0=sigma0)

    def err(z: torch.Tensor, logsnr: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
        cond = oracle.encode_conditions([c[k] for c in captions])
        out = oracle.eps_hat(z.double(), logsnr.double(), cond)
        return (out.float() - eps).square().flatten(1).sum(1)

    def ids(texts: list[str]) -> torch.Tensor:
        pad = dict(padding="max_length", max_length=tokenizer.model_max_length)
        return tokenizer(texts, return_tensors="pt", **pad).input_ids

    true_train = err(z_train, logsnr_train, eps_train, 0)
    pairs = [(c1, s1, c2, s2) for (c1, s1), (c2, s2) in itertools.product(kinds, kinds)][::9]
    layout_captions = tuple(
        [f"a {a} {b} {r} a {c} {d}" for a, b, c, d in pairs] * LAYOUT_REPEATS
        for r in ("left of", "right of")
    )
    layout_z = torch.randn(len(layout_captions[0]), *shape[1:], generator=gen)
    layout = layout_effect(
        lambda ids, caps, z, ls: oracle.eps_hat(
            z.double(), ls.double(), oracle.encode_conditions(caps)
        ),
        layout_z,
        layout_captions,
        None,
    )
    return ProbeSet(
        ids=torch.stack([ids([c[k] for c in captions]) for k in range(4)]),
        z_low=z_low,
        logsnr_low=logsnr_low,
        eps_low=eps_low,
        z_train=z_train,
        logsnr_train=logsnr_train,
        eps_train=eps_train,
        exact_swap=err(z_low, logsnr_low, eps_low, 1) - err(z_low, logsnr_low, eps_low, 0),
        exact_relation=err(z_train, logsnr_train, eps_train, 2) - true_train,
        exact_colour=err(z_train, logsnr_train, eps_train, 3) - true_train,
        te_relation=torch.stack(
            [
                ids([f"a {a} {b} {r} a {c} {d}" for a, b, c, d in pairs])
                for r in ("left of", "right of")
            ]
        ),
        te_colour=torch.stack(
            [
                ids([f"a {col} {b} left of a {c} {d}" for _, b, c, d in pairs])
                for col in ("red", "blue")
            ]
        ),
        captions=tuple([c[k] for c in captions] for k in range(4)),
        layout_z=layout_z,
        layout_captions=layout_captions,
        exact_layout=layout,
    )


Predictor = Callable[[torch.Tensor, list[str], torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def layout_effect(
    predict_eps: Predictor,
    z: torch.Tensor,
    captions: tuple[list[str], ...],
    ids: tuple[torch.Tensor, ...] | None,
) -> float:
    """Mean |x-hat(z, "... left of ...") - x-hat(z, "... right of ...")| per pixel at logsnr
    LAYOUT_LOGSNR, on the same pure-noise z: how far the relation word moves the denoised image
    (the exact oracle: about 0.3; a model that paints colours but places nothing: about 0)."""
    logsnr = torch.full((len(z),), LAYOUT_LOGSNR, dtype=z.dtype, device=z.device)
    a, s = (
        math.sqrt(torch.sigmoid(torch.tensor(LAYOUT_LOGSNR))),
        math.sqrt(torch.sigmoid(torch.tensor(-LAYOUT_LOGSNR))),
    )
    xs = []
    for k, caps in enumerate(captions):
        row_ids = ids[k] if ids is not None else None
        eps = predict_eps(row_ids, caps, z, logsnr).to(z.dtype)  # type: ignore[arg-type]
        xs.append((z - s * eps) / a)
    return float((xs[0] - xs[1]).abs().mean())


def module_predictor(unet: Any, text_encoder: Any, prediction: str = "epsilon") -> Predictor:
    """(ids, captions, z, logsnr) -> eps of a UNet and text encoder (the training path)."""
    return lambda ids, captions, z, logsnr: predict(unet, text_encoder, ids, z, logsnr, prediction)


def denoiser_predictor(model: Any) -> Predictor:
    """(ids, captions, z, logsnr) -> eps of a Denoiser (any model, the exact oracle included)."""
    return lambda ids, captions, z, logsnr: model.eps_hat(
        z, logsnr, model.encode_conditions(captions)
    )


@torch.no_grad()
def relation_probe(
    predict_eps: Predictor, probe: ProbeSet, text_encoder: Any = None, batch: int = 256
) -> dict[str, float]:
    """Per-pixel loss gaps of a model on the probe draws, beside the exact oracle's.

    swap_gap: swapped - true caption, logsnr in SWAP_BAND; relation_gap / colour_gap: relation /
    first colour word removed - true caption, training density (`_se`: standard error over
    items). layout: `layout_effect` beside the oracle's (exact_layout). With a text encoder,
    te_relation / te_colour: mean Frobenius distance of its outputs for captions that differ in
    the relation (left of / right of) / first colour (red / blue).
    """
    dim = probe.eps_low[0].numel()

    def err(k: int, z: torch.Tensor, logsnr: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        rows = []
        for s in range(0, len(z), batch):
            sl = slice(s, s + batch)
            pred = predict_eps(probe.ids[k][sl], probe.captions[k][sl], z[sl], logsnr[sl])
            rows.append((pred.float() - eps[sl]).square().flatten(1).sum(1))
        return torch.cat(rows) / dim

    low = (probe.z_low, probe.logsnr_low, probe.eps_low)
    train = (probe.z_train, probe.logsnr_train, probe.eps_train)
    true_train = err(0, *train)
    gaps = {
        "swap_gap": (err(1, *low) - err(0, *low), probe.exact_swap),
        "relation_gap": (err(2, *train) - true_train, probe.exact_relation),
        "colour_gap": (err(3, *train) - true_train, probe.exact_colour),
    }
    out: dict[str, float] = {}
    for name, (gap, exact) in gaps.items():
        out[name] = float(gap.mean())
        out[f"{name}_se"] = float(gap.std() / math.sqrt(len(gap)))
        out[f"exact_{name}"] = float(exact.mean()) / dim
    if probe.layout_z is not None:
        out["layout"] = layout_effect(
            predict_eps,
            probe.layout_z,
            probe.layout_captions,
            tuple(probe.te_relation.repeat(1, LAYOUT_REPEATS, 1)),
        )
        out["exact_layout"] = probe.exact_layout
    if text_encoder is not None:
        for name, pair in (("te_relation", probe.te_relation), ("te_colour", probe.te_colour)):
            a, b = (text_encoder(ids)[0].float() for ids in pair)
            out[name] = float((a - b).flatten(1).norm(dim=1).mean())
    return out


PROBE_SHARE = 0.25  # a model that knows relations has at least this share of the exact gaps


def knows_relations(probe: dict[str, float], share: float = PROBE_SHARE) -> bool:
    """The relation-probe verdict: the swap gap (below logsnr -1) is significant (> 3 standard
    errors) and at least `share` of the exact oracle's, and so is the relation-removed gap's
    mean (over the training density it is noisy: few items carry it, so no SE condition)."""
    swap = probe["swap_gap"] > 3 * probe["swap_gap_se"]
    return swap and all(
        probe[g] >= share * probe[f"exact_{g}"] for g in ("swap_gap", "relation_gap")
    )

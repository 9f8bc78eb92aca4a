"""Training the learned ShapesWorld model (models.shapes_learned) on the world's own distribution.

Data. A caption is drawn first (its kind with `CAPTION_MIX`, then uniformly within the kind from
worlds.shapes.training_captions), then a scene uniformly from the caption's scene set, then
x = render(scene) + sigma0 * noise. So for every caption c the pairs (x, c) follow exactly the
conditional p(x | c) of the exact oracle (models.oracles.ShapesOracle), and the empty caption
(caption dropout) follows p(x): the optimal denoiser of this training distribution is the oracle.

Objective. eps-prediction MSE at z = sqrt(sigmoid(l)) x + sqrt(sigmoid(-l)) eps, with l drawn
from the engine's logistic (loc 1, scale 2) truncated to the trained range (mixed with uniform
draws over the range, `UNIFORM_SHARE`). AdamW with warm-up and cosine decay; an exponential
moving average (EMA) of the weights is what is saved.

Held-out loss. A fixed set of draws (its own seed) scores the EMA model against the exact MMSE
of the oracle on the same (x, c, l, eps): `excess` = model loss - exact MMSE (>= 0 in
expectation), for the captioned and the empty-caption denoiser.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.families.shapes_learned import SCHEDULE, build_parts, with_coordinates
from infodecomp.models.training.settings import PREDICTIONS, TrainSettings  # noqa: F401
from infodecomp.worlds import shapes as world

CAPTION_MIX = {"empty": 0.15, "full": 0.45, "partial": 0.35, "single": 0.05}
UNIFORM_SHARE = 0.2  # share of logsnr draws uniform over the trained range
LOGISTIC = (1.0, 2.0)  # the engine's default logsnr sampler: loc, scale
RELATION_BAND = (
    -6.0,
    0.0,
)  # logsnr where the relation words carry their information (exact oracle)
SWAP_BAND = (
    -6.0,
    -1.0,
)  # the relation probe's swap draws: below -1 a swap contradicts no visible scene


class CaptionSampler:
    """Draws (caption ids, scene images) pairs from the training distribution (module doc)."""

    def __init__(self, tokenizer: Any, sigma0: float) -> None:
        pool = world.training_captions()
        self.kinds = list(CAPTION_MIX)
        self.captions = {k: pool[k] for k in self.kinds}
        self.kind_probs = torch.tensor([CAPTION_MIX[k] for k in self.kinds], dtype=torch.float64)
        every = [c for k in self.kinds for c in self.captions[k]]
        self.index = {c: i for i, c in enumerate(every)}
        ids = tokenizer(
            every, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids  # [C, T]
        self.ids = ids
        self.members = [world.scene_set(c).nonzero().flatten() for c in every]
        self.offsets = {}
        start = 0
        for k in self.kinds:
            self.offsets[k] = start
            start += len(self.captions[k])
        self.means = world.scene_means().float()  # [K, D]
        self.sigma0 = sigma0

    def scene_for(self, caption_index: int, gen: torch.Generator) -> int:
        """A scene index drawn uniformly from the caption's scene set."""
        m = self.members[caption_index]
        return int(m[int(torch.randint(len(m), (1,), generator=gen))])

    def draw(
        self, n: int, gen: torch.Generator, kind: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """n draws: caption indices [n], images [n, 3, H, W], captions (strings)."""
        if kind is None:
            kinds = torch.multinomial(self.kind_probs, n, replacement=True, generator=gen)
        else:
            kinds = torch.full((n,), self.kinds.index(kind))
        idx, scenes = [], []
        for k in kinds.tolist():
            name = self.kinds[k]
            c = self.offsets[name] + int(
                torch.randint(len(self.captions[name]), (1,), generator=gen)
            )
            idx.append(c)
            scenes.append(self.scene_for(c, gen))
        noise = torch.randn(n, self.means.shape[1], generator=gen)
        x = (self.means[scenes] + self.sigma0 * noise).view(n, 3, world.CANVAS, world.CANVAS)
        every = list(self.index)
        return torch.tensor(idx), x, [every[i] for i in idx]


_SAMPLERS: dict[float, CaptionSampler] = {}


def _shared_sampler(tokenizer: Any, sigma0: float) -> CaptionSampler:
    """One sampler per sigma0 and process (its tables depend on nothing else: the tokenizer is
    always CLIP's BPE at shapes_learned.TOKENS)."""
    if sigma0 not in _SAMPLERS:
        _SAMPLERS[sigma0] = CaptionSampler(tokenizer, sigma0)
    return _SAMPLERS[sigma0]


def draw_logsnr(n: int, gen: torch.Generator, band_share: float = 0.0) -> torch.Tensor:
    """logsnr [n]: logistic (loc 1, scale 2) truncated to the trained range, UNIFORM_SHARE uniform;
    with band_share > 0, that share of the draws is then replaced by uniform draws over
    RELATION_BAND (the draws of band_share 0 are unchanged)."""
    lo, hi = SCHEDULE.trained_range
    loc, scale = LOGISTIC
    cdf = lambda v: 1 / (1 + math.exp(-(v - loc) / scale))  # noqa: E731
    u = cdf(lo) + (cdf(hi) - cdf(lo)) * torch.rand(n, generator=gen, dtype=torch.float64)
    logistic = loc + scale * torch.log(u / (1 - u))
    uniform = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    pick = torch.rand(n, generator=gen) < UNIFORM_SHARE
    out = torch.where(pick, uniform, logistic).float()
    if band_share > 0:
        blo, bhi = RELATION_BAND
        band = blo + (bhi - blo) * torch.rand(n, generator=gen)
        out = torch.where(torch.rand(n, generator=gen) < band_share, band, out)
    return out


def loss_weight(logsnr: torch.Tensor, cap: float) -> torch.Tensor:
    """Per-draw weight of the eps MSE: 1 (cap 0), else 1 + min(exp(-logsnr), cap).

    exp(-logsnr) times the eps error is the x error: the weight lifts the low-logsnr band where
    the relation words act (their share of the plain eps loss is ~0.1 %). Every logsnr keeps a
    positive weight, so the optimal denoiser (the exact oracle) is unchanged.
    """
    if cap <= 0:
        return torch.ones_like(logsnr)
    return 1 + torch.exp(-logsnr).clamp(max=cap)


def noisy(x: torch.Tensor, logsnr: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    a = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1)
    s = torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1)
    return a * x + s * eps


def predict(
    unet: Any,
    text_encoder: Any,
    ids: torch.Tensor,
    z: torch.Tensor,
    logsnr: torch.Tensor,
    prediction: str = "epsilon",
) -> torch.Tensor:
    """eps-hat of the network; a v-prediction network's v is turned into eps = a v + s z."""
    t = SCHEDULE.timestep(logsnr).float()
    enc = text_encoder(ids)[0]  # [B, T, D]
    out = unet(with_coordinates(unet, z), t, encoder_hidden_states=enc, return_dict=False)[0]
    if prediction == "epsilon":
        return out
    a = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1)
    s = torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1)
    return a * out + s * z


@dataclass
class EvalSet:
    """Fixed held-out draws with the exact MMSE of each row (conditional and empty caption)."""

    ids: torch.Tensor
    empty_ids: torch.Tensor
    z: torch.Tensor
    logsnr: torch.Tensor
    eps: torch.Tensor
    exact_cond: torch.Tensor  # [N] per-row squared error of the exact conditional denoiser
    exact_uncond: torch.Tensor  # [N] same, empty caption

    def to(self, device: torch.device) -> EvalSet:
        return EvalSet(*(getattr(self, f.name).to(device) for f in fields(self)))


def make_eval_set(sampler: CaptionSampler, size: int, seed: int, sigma0: float) -> EvalSet:
    from infodecomp.models.oracles.exact import ShapesOracle

    gen = torch.Generator().manual_seed(10_000 + seed)
    idx, x, captions = sampler.draw(size, gen)
    logsnr = draw_logsnr(size, gen)
    eps = torch.randn(x.shape, generator=gen)
    z = noisy(x, logsnr, eps)
    oracle = ShapesOracle(sigma0=sigma0)

    def exact(caps: list[str]) -> torch.Tensor:
        out = oracle.eps_hat(z.double(), logsnr.double(), oracle.encode_conditions(caps))
        return (out.float() - eps).square().flatten(1).sum(1)  # [N]

    empty = sampler.ids[sampler.index[""]].expand(size, -1)
    return EvalSet(sampler.ids[idx], empty, z, logsnr, eps, exact(captions), exact([""] * size))


@torch.no_grad()
def evaluate(
    unet: Any, text_encoder: Any, ev: EvalSet, batch: int = 256, prediction: str = "epsilon"
) -> dict[str, float]:
    """Held-out per-pixel losses of a model and their excess over the exact MMSE."""
    dim = ev.eps[0].numel()
    out: dict[str, float] = {}
    for name, ids, exact in (
        ("cond", ev.ids, ev.exact_cond),
        ("uncond", ev.empty_ids, ev.exact_uncond),
    ):
        errs = []
        for s in range(0, len(ids), batch):
            sl = slice(s, s + batch)
            pred = predict(unet, text_encoder, ids[sl], ev.z[sl], ev.logsnr[sl], prediction)
            errs.append((pred.float() - ev.eps[sl]).square().flatten(1).sum(1))
        err = torch.cat(errs)
        out[f"loss_{name}"] = float(err.mean()) / dim
        out[f"exact_{name}"] = float(exact.mean()) / dim
        out[f"excess_{name}"] = out[f"loss_{name}"] - out[f"exact_{name}"]
    return out


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
    import itertools

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


def _lr_at(step: int, s: TrainSettings) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    frac = (step - s.warmup) / max(1, s.steps - s.warmup)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, live: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), live.parameters(), strict=True):
        e.lerp_(p, 1 - decay)


def fingerprint(settings: TrainSettings) -> dict[str, Any]:
    """What a checkpoint may be resumed under: the settings and the architecture."""
    from infodecomp.models.families import shapes_learned

    return {"settings": asdict(settings), "architecture": shapes_learned.fingerprint(settings.seed)}


def _fits(target: torch.nn.Module, source: torch.nn.Module, but: str = "") -> bool:
    """Same parameter names and shapes (the same architecture), `but` one parameter."""
    a, b = target.state_dict(), source.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a if k != but)


def warm_start(unet: Any, text_encoder: Any, init: str, added: str = "zero") -> list[str]:
    """Loads the parts of the model folder `init` whose architecture matches (the UNet, the text
    encoder when it is of the same class and shape); returns the parts loaded. "": none.

    A part of another architecture keeps its fresh weights; a folder with none that fits is an
    error naming it. A UNet that takes more input channels (coordinates) than the init's gets the
    init's weights for the shared ones; the added ones start at 0 (added="zero": the same
    function as the init) or keep their fresh random weights (added="fresh": position enters
    the features from the first step, which a product of two zero-started factors, query
    position x key side, otherwise has to grow out of).
    """
    if added not in ("zero", "fresh"):
        raise ValueError(f"train.init_added={added!r}: choose zero or fresh")
    if not init:
        return []
    from diffusers import UNet2DConditionModel

    folder = Path(init)
    if not (folder / "unet" / "config.json").is_file():
        raise ValueError(
            f"train.init={init}: no shapes-learned model there (unet/config.json missing); give "
            "a model folder written by train-shapes (or the shipped one), or '' for random weights"
        )
    loaded = []
    source = UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet", torch_dtype=torch.float32
    )
    if _fits(unet, source):
        unet.load_state_dict(source.state_dict())
        loaded.append("unet")
    elif _fits(unet, source, but="conv_in.weight"):  # more input channels: coordinates
        state, new = source.state_dict(), unet.conv_in.weight.detach().clone()
        old = state["conv_in.weight"]
        if new.shape[1] > old.shape[1] and new.shape[0] == old.shape[0]:
            if added == "zero":
                new.zero_()  # the added input channels start at 0: the same function as the source
            new[:, : old.shape[1]] = old
            unet.load_state_dict({**state, "conv_in.weight": new})
            how = "zero-initialised" if added == "zero" else "fresh random weights"
            loaded.append(f"unet (added input channels: {how})")
    import transformers

    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    name = (config.get("architectures") or [""])[0]
    if name == type(text_encoder).__name__:
        cls = getattr(transformers, name)
        source_text = cls.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float32)
        if _fits(text_encoder, source_text):
            text_encoder.load_state_dict(source_text.state_dict())
            loaded.append("text_encoder")
    if not loaded:
        raise ValueError(
            f"train.init={init}: neither part matches train.arch; use '' or a model of it"
        )
    return loaded


class Trainer:
    """Resumable training: `checkpoint.pt` in `folder` holds weights, EMA, optimiser, RNG, log."""

    def __init__(
        self, settings: TrainSettings, folder: Path, device: str | torch.device = "cpu"
    ) -> None:
        self.s, self.folder, self.fingerprint = settings, Path(folder), fingerprint(settings)
        self.device = torch.device(device)
        parts = build_parts(settings.seed, settings.arch)
        self.unet, self.text_encoder, self.tokenizer = (
            parts["unet"],
            parts["text_encoder"],
            parts["tokenizer"],
        )
        self.warm_started = warm_start(
            self.unet, self.text_encoder, settings.init, settings.init_added
        )
        self.unet.to(self.device)
        self.text_encoder.to(self.device)
        # the EMA copies are only ever evaluated: eval mode (no dropout)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False).eval()
        params = [*self.unet.parameters(), *self.text_encoder.parameters()]
        self.opt = torch.optim.AdamW(params, lr=settings.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.log: list[dict[str, float]] = []
        self.seconds = 0.0
        self.sampler = _shared_sampler(self.tokenizer, settings.sigma0)
        self.eval_set = make_eval_set(
            self.sampler, settings.eval_size, settings.seed, settings.sigma0
        ).to(self.device)
        self.probe_set = (
            make_probe_set(self.tokenizer, settings.probe_size, settings.seed, settings.sigma0).to(
                self.device
            )
            if settings.probe_size
            else None
        )

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    def resume(self) -> bool:
        """Loads checkpoint.pt when present; refuses one written under other settings."""
        if not self.checkpoint.is_file():
            return False
        state = torch.load(self.checkpoint, weights_only=False, map_location=self.device)
        if state["fingerprint"] != self.fingerprint:
            raise ValueError(
                f"{self.checkpoint} was written by a training run with other settings; use "
                "another run.out_dir, or run.resume=overwrite to start afresh"
            )
        for name in ("unet", "text_encoder", "ema_unet", "ema_text"):
            getattr(self, name).load_state_dict(state[name])
        self.opt.load_state_dict(state["opt"])
        self.gen.set_state(state["gen"].cpu())
        self.step, self.log, self.seconds = state["step"], state["log"], state["seconds"]
        return True

    def save_checkpoint(self) -> None:
        state = {
            "fingerprint": self.fingerprint,
            "settings": asdict(self.s),
            "step": self.step,
            "log": self.log,
            "seconds": self.seconds,
            "gen": self.gen.get_state(),
            "opt": self.opt.state_dict(),
            **{
                n: getattr(self, n).state_dict()
                for n in ("unet", "text_encoder", "ema_unet", "ema_text")
            },
        }
        tmp = self.checkpoint.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint)  # atomic: an interrupted save keeps the previous one

    def train_step(self) -> float:
        s = self.s
        idx, x, _ = self.sampler.draw(s.batch, self.gen)
        logsnr = draw_logsnr(s.batch, self.gen, s.band_share)
        eps = torch.randn(x.shape, generator=self.gen)  # every draw on the CPU: device-independent
        x, logsnr, eps = (v.to(self.device) for v in (x, logsnr, eps))
        ids = self.sampler.ids[idx].to(self.device)
        z = noisy(x, logsnr, eps)
        pred = predict(self.unet, self.text_encoder, ids, z, logsnr, s.prediction)
        per_draw = (pred - eps).square().flatten(1).mean(1)  # [B] eps error (v: a^2 |v error|)
        loss = (loss_weight(logsnr, s.low_snr_weight) * per_draw).mean()
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(self.step, s)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            [*self.unet.parameters(), *self.text_encoder.parameters()], 1.0
        )
        self.opt.step()
        decay = min(s.ema, (1 + self.step) / (10 + self.step))
        _ema_update(self.ema_unet, self.unet, decay)
        _ema_update(self.ema_text, self.text_encoder, decay)
        self.step += 1
        return float(loss.detach())

    def log_row(self, window: list[float]) -> dict[str, float]:
        """A train_log.csv row: held-out losses and (probe_size > 0) the relation probe."""
        row = {"step": self.step, "train_loss": sum(window) / max(1, len(window)),
               "seconds": self.seconds, **evaluate(self.ema_unet, self.ema_text, self.eval_set, prediction=self.s.prediction)}  # fmt: skip
        if self.probe_set is not None:
            predictor = module_predictor(self.ema_unet, self.ema_text, self.s.prediction)
            row.update(relation_probe(predictor, self.probe_set, self.ema_text))
        return row

    def run(
        self,
        deadline: float | None = None,
        progress: Callable[[int, float, dict[str, float] | None], None] | None = None,
        stop_at: int | None = None,
    ) -> bool:
        """Trains to `steps` (or until `deadline`, time.time() seconds, or step `stop_at`, both
        checkpointed: a rerun resumes exactly); True when finished."""
        self.unet.train()
        self.text_encoder.train()
        window: list[float] = []
        while self.step < self.s.steps:
            if (deadline is not None and time.time() >= deadline) or (
                stop_at is not None and self.step >= stop_at
            ):
                self.save_checkpoint()
                return False
            t0 = time.time()
            window.append(self.train_step())
            self.seconds += time.time() - t0
            row = None
            if self.step % self.s.eval_every == 0 or self.step == self.s.steps:
                row = self.log_row(window)
                self.log.append(row)
                window = []
            if self.step % self.s.checkpoint_every == 0 or self.step == self.s.steps:
                self.save_checkpoint()
            if progress is not None:
                progress(self.step, window[-1] if window else row["train_loss"], row)  # type: ignore[index]
        return True


SAVE_DTYPE = torch.float16  # the shipped weights (under 20 MB); loaded in any dtype


def export_model(trainer: Trainer, folder: Path, card: str) -> Path:
    """Saves the EMA weights (SAVE_DTYPE safetensors) in the diffusers layout, with README.md."""
    from infodecomp.models.families.shapes_learned import save_model

    folder = Path(folder)
    save_model(
        folder,
        trainer.ema_unet.cpu(),
        trainer.ema_text.cpu(),
        trainer.tokenizer,
        dtype=SAVE_DTYPE,
        prediction_type=trainer.s.prediction,
        extra={"_infodecomp_steps": trainer.step},
    )
    trainer.ema_unet.to(trainer.device)
    trainer.ema_text.to(trainer.device)
    (folder / "README.md").write_text(card)
    return folder


def model_card(
    trainer: Trainer,
    *,
    command: str,
    device: str,
    threads: int,
    held_out: dict[str, float],
    init_label: str = "",
) -> str:
    """The model card: architecture, training, compute, final and held-out losses, and the
    relation probe of the last log row. init_label: what `train.init` named, in words."""
    from infodecomp.models.families import shapes_learned as sl

    s, last = trainer.s, (trainer.log[-1] if trainer.log else {})
    n_unet = sum(p.numel() for p in trainer.ema_unet.parameters())
    n_text = sum(p.numel() for p in trainer.ema_text.parameters())
    lines = [
        "# shapes-learned: a text-to-image diffusion model trained on ShapesWorld",
        "",
        "Load it with `model=shapes-learned` (these files) or `model=shapes-learned "
        "model.path=<folder>`; architecture in infodecomp/models/families/shapes_learned.py.",
        "",
        "## Architecture",
        "- UNet2DConditionModel, pixel space 16 x 16 x 3"
        + (
            f" + {sl.COORD_CHANNELS} coordinate channels (x, y)"
            if trainer.ema_unet.config.in_channels > 3
            else ""
        )
        + f", blocks {list(trainer.ema_unet.config.block_out_channels)}, "
        f"cross-attention at 8 x 8 and 4 x 4, epsilon prediction: {n_unet / 1e6:.2f} M parameters",
        f"- {type(trainer.ema_text).__name__} from scratch (2 layers, width 64, {sl.TOKENS} tokens"
        + (", bidirectional" if type(trainer.ema_text).__name__ != "CLIPTextModel" else ", causal")
        + f") behind CLIP's BPE tokenizer: {n_text / 1e6:.2f} M parameters (most of them the "
        "unused vocabulary rows)",
        f"- architecture `train.arch={s.arch}` (shapes_learned.ARCHITECTURES)",
        f"- continuous logsnr schedule: time = 1000 sigmoid(-logsnr / 4), trained on logsnr in "
        f"{list(sl.SCHEDULE.trained_range)}",
        f"- weights: exponential moving average (decay {s.ema}), stored as {str(SAVE_DTYPE).split('.')[-1]} safetensors",
        "",
        "## Training",
        f"- data: ShapesWorld (sigma0 = {s.sigma0}), captions drawn first (kinds {CAPTION_MIX}), "
        "then a scene uniformly from the caption's scene set: the exact oracle is the optimal "
        "denoiser of this distribution",
        f"- {trainer.step} steps of batch {s.batch}, AdamW lr {s.lr} (warm-up {s.warmup}, cosine to 10 % at step {s.steps}), seed {s.seed}",
        "- loss: eps MSE"
        + (
            f" weighted by 1 + min(exp(-logsnr), {s.low_snr_weight}) (the x error below logsnr 0)"
            if s.low_snr_weight > 0
            else ""
        )
        + (
            f"; {s.band_share:.0%} of the logsnr draws uniform over {list(RELATION_BAND)}, where "
            "the relation words act"
            if s.band_share > 0
            else ""
        ),
        *(
            [f"- warm start: {', '.join(trainer.warm_started)} from `train.init` ({init_label})"]
            if trainer.warm_started
            else []
        ),
        f"- compute: {trainer.seconds / 60:.1f} min of training steps on {device} ({threads} threads)",
        f"- command: `{command}`",
        "",
        "## Held-out denoising loss (per pixel, mean over the training logsnr density)",
        "",
        "| denoiser | model | exact MMSE | excess |",
        "| --- | --- | --- | --- |",
    ]
    for name, label in (("cond", "captioned"), ("uncond", "empty caption")):
        lines.append(
            f"| {label} | {held_out[f'loss_{name}']:.4f} | {held_out[f'exact_{name}']:.4f} | "
            f"{held_out[f'excess_{name}']:.4f} |"
        )
    if "loss_random" in held_out:
        lines += [
            "",
            f"A random-weight model of the same architecture: {held_out['loss_random']:.4f}.",
        ]
    if last:
        lines += ["", f"Final training loss (last {s.eval_every} steps): {last['train_loss']:.4f}."]
    if "swap_gap" in last:
        lines += [
            "",
            f"## Relation probe (step {last['step']:.0f}, train_log.csv; per pixel, model vs exact)",
            "",
            "| loss gap | model | exact |",
            "| --- | --- | --- |",
            *(
                f"| {label} | {last[g]:.6f} ± {last[f'{g}_se']:.6f} | {last[f'exact_{g}']:.6f} |"
                for g, label in (
                    ("swap_gap", f"relation swapped, logsnr in {list(SWAP_BAND)}"),
                    ("relation_gap", "relation word removed"),
                    ("colour_gap", "first colour word removed"),
                )
            ),
            "",
            f"Layout (mean |x-hat| change, left of vs right of, logsnr {LAYOUT_LOGSNR}): "
            f"{last['layout']:.4f} (exact {last['exact_layout']:.4f}).",
            "",
            f"Text encoder output distance: left of / right of {last['te_relation']:.2f}, "
            f"red / blue {last['te_colour']:.2f}.",
        ]
    return "\n".join(lines) + "\n"

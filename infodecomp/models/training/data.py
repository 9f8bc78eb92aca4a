"""The training distribution of the learned ShapesWorld model (models.families.shapes_learned),
its objective and its held-out loss.

Data. A caption is drawn first (its kind with `CAPTION_MIX`, then uniformly within the kind from
worlds.shapes.training_captions), then a scene uniformly from the caption's scene set, then
x = render(scene) + sigma0 * noise. So for every caption c the pairs (x, c) follow exactly the
conditional p(x | c) of the exact oracle (models.oracles.ShapesOracle), and the empty caption
(caption dropout) follows p(x): the optimal denoiser of this training distribution is the oracle.

Objective. eps-prediction MSE at z = sqrt(sigmoid(l)) x + sqrt(sigmoid(-l)) eps, with l drawn
from the engine's logistic (loc 1, scale 2) truncated to the trained range (mixed with uniform
draws over the range, `UNIFORM_SHARE`). AdamW with warm-up and cosine decay; an exponential
moving average (EMA) of the weights is what is saved (models.training.trainer).

Held-out loss. A fixed set of draws (its own seed) scores the EMA model against the exact MMSE
of the oracle on the same (x, c, l, eps): `excess` = model loss - exact MMSE (>= 0 in
expectation), for the captioned and the empty-caption denoiser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch

from infodecomp.models.families.shapes_learned import SCHEDULE, with_coordinates
from infodecomp.worlds import shapes as world

CAPTION_MIX = {"empty": 0.15, "full": 0.45, "partial": 0.35, "single": 0.05}
UNIFORM_SHARE = 0.2  # share of logsnr draws uniform over the trained range
LOGISTIC = (1.0, 2.0)  # the engine's default logsnr sampler: loc, scale
# logsnr where the relation words carry their information (exact oracle)
RELATION_BAND = (-6.0, 0.0)


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


def shared_sampler(tokenizer: Any, sigma0: float) -> CaptionSampler:
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

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
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.families.shapes_learned import SCHEDULE, build_parts
from infodecomp.worlds import shapes as world

CAPTION_MIX = {"empty": 0.15, "full": 0.45, "partial": 0.35, "single": 0.05}
UNIFORM_SHARE = 0.2  # share of logsnr draws uniform over the trained range
LOGISTIC = (1.0, 2.0)  # the engine's default logsnr sampler: loc, scale


@dataclass
class TrainSettings:
    """What a training run does; its fingerprint guards resumption."""

    steps: int = 3000  # optimiser steps (one CPU thread: about an hour)
    batch: int = 128  # training draws per step
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10 %)
    warmup: int = 100  # warm-up steps
    ema: float = 0.995  # decay of the weights' moving average (the saved model)
    seed: int = 0  # initial weights and every training draw
    sigma0: float = world.SIGMA0  # pixel noise of the ShapesWorld data
    eval_size: int = 1024  # held-out draws scored against the exact MMSE
    eval_every: int = 250  # steps between held-out evaluations (train_log.csv)
    checkpoint_every: int = (
        100  # steps between checkpoints (an interrupted run loses at most these)
    )


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


def draw_logsnr(n: int, gen: torch.Generator) -> torch.Tensor:
    """logsnr [n]: logistic (loc 1, scale 2) truncated to the trained range, UNIFORM_SHARE uniform."""
    lo, hi = SCHEDULE.trained_range
    loc, scale = LOGISTIC
    cdf = lambda v: 1 / (1 + math.exp(-(v - loc) / scale))  # noqa: E731
    u = cdf(lo) + (cdf(hi) - cdf(lo)) * torch.rand(n, generator=gen, dtype=torch.float64)
    logistic = loc + scale * torch.log(u / (1 - u))
    uniform = lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)
    pick = torch.rand(n, generator=gen) < UNIFORM_SHARE
    return torch.where(pick, uniform, logistic).float()


def noisy(x: torch.Tensor, logsnr: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    a = torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1)
    s = torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1)
    return a * x + s * eps


def predict(unet: Any, text_encoder: Any, ids: torch.Tensor, z: torch.Tensor, logsnr: torch.Tensor):
    t = SCHEDULE.timestep(logsnr).float()
    enc = text_encoder(ids)[0]  # [B, T, D]
    return unet(z, t, encoder_hidden_states=enc, return_dict=False)[0]


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
def evaluate(unet: Any, text_encoder: Any, ev: EvalSet, batch: int = 256) -> dict[str, float]:
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
            pred = predict(unet, text_encoder, ids[sl], ev.z[sl], ev.logsnr[sl])
            errs.append((pred.float() - ev.eps[sl]).square().flatten(1).sum(1))
        err = torch.cat(errs)
        out[f"loss_{name}"] = float(err.mean()) / dim
        out[f"exact_{name}"] = float(exact.mean()) / dim
        out[f"excess_{name}"] = out[f"loss_{name}"] - out[f"exact_{name}"]
    return out


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


class Trainer:
    """Resumable training: `checkpoint.pt` in `folder` holds weights, EMA, optimiser, RNG, log."""

    def __init__(
        self, settings: TrainSettings, folder: Path, device: str | torch.device = "cpu"
    ) -> None:
        self.s, self.folder, self.fingerprint = settings, Path(folder), fingerprint(settings)
        self.device = torch.device(device)
        parts = build_parts(settings.seed)
        self.unet, self.text_encoder, self.tokenizer = (
            parts["unet"],
            parts["text_encoder"],
            parts["tokenizer"],
        )
        self.unet.to(self.device)
        self.text_encoder.to(self.device)
        self.ema_unet = copy.deepcopy(self.unet).requires_grad_(False)
        self.ema_text = copy.deepcopy(self.text_encoder).requires_grad_(False)
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
        logsnr = draw_logsnr(s.batch, self.gen)
        eps = torch.randn(x.shape, generator=self.gen)  # every draw on the CPU: device-independent
        x, logsnr, eps = (v.to(self.device) for v in (x, logsnr, eps))
        ids = self.sampler.ids[idx].to(self.device)
        pred = predict(self.unet, self.text_encoder, ids, noisy(x, logsnr, eps), logsnr)
        loss = (pred - eps).square().mean()
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

    def run(
        self,
        deadline: float | None = None,
        progress: Callable[[int, float, dict[str, float] | None], None] | None = None,
    ) -> bool:
        """Trains to `steps` (or until `deadline`, time.time() seconds); True when finished."""
        self.unet.train()
        self.text_encoder.train()
        window: list[float] = []
        while self.step < self.s.steps:
            if deadline is not None and time.time() >= deadline:
                self.save_checkpoint()
                return False
            t0 = time.time()
            window.append(self.train_step())
            self.seconds += time.time() - t0
            row = None
            if self.step % self.s.eval_every == 0 or self.step == self.s.steps:
                row = {"step": self.step, "train_loss": sum(window) / len(window),
                       "seconds": self.seconds, **evaluate(self.ema_unet, self.ema_text, self.eval_set)}  # fmt: skip
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
        extra={"_infodecomp_steps": trainer.step},
    )
    trainer.ema_unet.to(trainer.device)
    trainer.ema_text.to(trainer.device)
    (folder / "README.md").write_text(card)
    return folder


def model_card(
    trainer: Trainer, *, command: str, device: str, threads: int, held_out: dict[str, float]
) -> str:
    """The model card: architecture, training, compute, final and held-out losses."""
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
        f"- UNet2DConditionModel, pixel space 16 x 16 x 3, blocks {list(sl.UNET_CONFIG['block_out_channels'])}, "
        f"cross-attention at 8 x 8 and 4 x 4, epsilon prediction: {n_unet / 1e6:.2f} M parameters",
        f"- CLIPTextModel from scratch (2 layers, width 64, {sl.TOKENS} tokens) behind CLIP's BPE "
        f"tokenizer: {n_text / 1e6:.2f} M parameters (most of them the unused vocabulary rows)",
        f"- continuous logsnr schedule: time = 1000 sigmoid(-logsnr / 4), trained on logsnr in "
        f"{list(sl.SCHEDULE.trained_range)}",
        f"- weights: exponential moving average (decay {s.ema}), stored as {str(SAVE_DTYPE).split('.')[-1]} safetensors",
        "",
        "## Training",
        f"- data: ShapesWorld (sigma0 = {s.sigma0}), captions drawn first (kinds {CAPTION_MIX}), "
        "then a scene uniformly from the caption's scene set: the exact oracle is the optimal "
        "denoiser of this distribution",
        f"- {trainer.step} steps of batch {s.batch}, AdamW lr {s.lr} (warm-up {s.warmup}, cosine to 10 %), seed {s.seed}",
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
    return "\n".join(lines) + "\n"

"""Training the learned ShapesWorld model: `Trainer` (AdamW with warm-up and cosine decay, an
EMA of the weights, resumable checkpoints), the warm start from a trained folder and the
export of the EMA weights in the diffusers layout. What is drawn and scored:
models.training.data; the relation probe: models.training.probe; the model card:
models.training.card."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.families.shapes_learned import build_parts
from infodecomp.models.training.data import (
    draw_logsnr,
    evaluate,
    loss_weight,
    make_eval_set,
    noisy,
    predict,
    shared_sampler,
)
from infodecomp.models.training.probe import make_probe_set, module_predictor, relation_probe
from infodecomp.models.training.settings import TrainSettings


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
        self.sampler = shared_sampler(self.tokenizer, settings.sigma0)
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

"""The model card (README.md) of a trained ShapesWorld model: architecture, training, compute,
final and held-out losses, and the relation probe of the last log row."""

from __future__ import annotations

from infodecomp.models.training.data import CAPTION_MIX, RELATION_BAND
from infodecomp.models.training.probe import LAYOUT_LOGSNR, SWAP_BAND
from infodecomp.models.training.trainer import SAVE_DTYPE, Trainer


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
    s, last = trainer.s, (trainer.log[-1] if trainer.log else {})
    lines = [
        "# shapes-learned: a text-to-image diffusion model trained on ShapesWorld",
        "",
        "Load it with `model=shapes-learned` (these files) or `model=shapes-learned "
        "model.path=<folder>`; architecture in infodecomp/models/families/shapes_learned.py.",
        "",
        *_architecture(trainer),
        "",
        *_training(trainer, command=command, device=device, threads=threads, init_label=init_label),
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
        lines += _relation_probe(last)
    return "\n".join(lines) + "\n"


def _architecture(trainer: Trainer) -> list[str]:
    """The card's architecture section: the UNet, the text encoder, the schedule, the weights."""
    from infodecomp.models.families import shapes_learned as sl

    s = trainer.s
    n_unet = sum(p.numel() for p in trainer.ema_unet.parameters())
    n_text = sum(p.numel() for p in trainer.ema_text.parameters())
    return [
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
    ]


def _training(
    trainer: Trainer, *, command: str, device: str, threads: int, init_label: str
) -> list[str]:
    """The card's training section: data, steps, loss, warm start, compute, command."""
    s = trainer.s
    return [
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
    ]


def _relation_probe(last: dict[str, float]) -> list[str]:
    """The card's relation-probe section, from the last train_log.csv row."""
    return [
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

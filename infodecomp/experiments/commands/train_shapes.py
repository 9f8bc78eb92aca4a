"""`infodecomp train-shapes`: trains the learned ShapesWorld model (models.training).

Writes into the run directory: checkpoint.pt (every `checkpoint_every` steps; a rerun into the
same directory with the same settings resumes from it, other settings are refused),
train_log.csv (held-out losses against the exact MMSE), model/ (the EMA weights in the diffusers
layout with its model card, README.md; load it with model=shapes-learned model.path=<run>/model)
and meta.json.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict

import pandas as pd
import torch
from tqdm import tqdm

from infodecomp.experiments.common import resolve_device, to_dict
from infodecomp.experiments.config import TrainShapesConfig
from infodecomp.experiments.errors import RunError
from infodecomp.experiments.shim import hydra_main, run_dir
from infodecomp.reporting.meta import write_meta

log = logging.getLogger("infodecomp")


def run(cfg: TrainShapesConfig) -> dict:
    from infodecomp.models.families.shapes_learned import build_parts
    from infodecomp.models.training.card import model_card
    from infodecomp.models.training.data import evaluate
    from infodecomp.models.training.trainer import Trainer, export_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.run.device)
    out = run_dir(cfg, "train-shapes")
    started = time.time()
    if cfg.run.resume == "overwrite":
        (out / "checkpoint.pt").unlink(missing_ok=True)
    trainer = Trainer(cfg.train, out, device)
    try:
        resumed = trainer.resume()
    except ValueError as err:  # a checkpoint of other settings: a user error, one line
        raise RunError(str(err)) from err
    if resumed:
        log.info(
            "resuming %s at step %d of %d", out / "checkpoint.pt", trainer.step, cfg.train.steps
        )
    deadline = started + 60 * cfg.max_minutes if cfg.max_minutes else None
    bar = tqdm(
        total=cfg.train.steps, initial=trainer.step, desc="train-shapes", unit="step",
        disable=not cfg.run.progress,
    )  # fmt: skip
    finished = trainer.run(deadline=deadline, progress=_progress(bar), stop_at=cfg.stop_at or None)
    bar.close()
    pd.DataFrame(trainer.log).to_csv(out / "train_log.csv", index=False)
    pred = cfg.train.prediction
    held_out = evaluate(trainer.ema_unet, trainer.ema_text, trainer.eval_set, prediction=pred)
    parts = build_parts(cfg.train.seed, cfg.train.arch)
    random = evaluate(
        parts["unet"].to(device),
        parts["text_encoder"].to(device),
        trainer.eval_set,
        prediction=pred,
    )
    held_out["loss_random"] = random["loss_cond"]
    threads = torch.get_num_threads()
    command = "infodecomp train-shapes " + " ".join(_card_overrides(_overrides()))
    card = model_card(trainer, command=command.strip(), device=str(device), threads=threads,
                      held_out=held_out, init_label=_init_label(cfg.train.init))  # fmt: skip
    export_model(trainer, out / "model", card)
    summary = {"finished": finished, "step": trainer.step, "train_seconds": trainer.seconds,
               **held_out}  # fmt: skip
    write_meta(
        out, to_dict(cfg), device=str(device), dtype="float32", seed=cfg.train.seed,
        wall_time_s=time.time() - started, items_done=trainer.step, items_skipped=0,
        extra={"command": "train-shapes", "summary": summary, "settings": asdict(cfg.train)},
    )  # fmt: skip
    state = (
        "finished"
        if finished
        else f"stopped at max_minutes={cfg.max_minutes} / stop_at={cfg.stop_at} (rerun to resume)"
    )
    print(
        f"train-shapes: {state}, step {trainer.step}/{cfg.train.steps}, held-out loss "
        f"{held_out['loss_cond']:.4f} (exact MMSE {held_out['exact_cond']:.4f}, random weights "
        f"{held_out['loss_random']:.4f}); empty caption {held_out['loss_uncond']:.4f} -> {out / 'model'}"
    )
    return summary


def _progress(bar: tqdm) -> Callable[[int, float, dict | None], None]:
    """The trainer's progress callback: the bar, and the held-out losses and the relation
    probe logged at every evaluation."""

    def progress(step: int, loss: float, row: dict | None) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}")
        if row:
            log.info(
                "step %d: held-out loss %.4f (exact MMSE %.4f, excess %.4f); empty caption %.4f",
                step, row["loss_cond"], row["exact_cond"], row["excess_cond"], row["loss_uncond"],
            )  # fmt: skip
        if row and "swap_gap" in row:
            log.info(
                "step %d: relation probe (model / exact, per pixel): swap below -1 %.5f / %.5f, "
                "relation removed %.6f / %.6f, colour removed %.6f / %.6f, layout %.4f / %.4f; "
                "text encoder left/right %.2f, red/blue %.2f",
                step, row["swap_gap"], row["exact_swap_gap"], row["relation_gap"],
                row["exact_relation_gap"], row["colour_gap"], row["exact_colour_gap"],
                row["layout"], row["exact_layout"], row["te_relation"], row["te_colour"],
            )  # fmt: skip

    return progress


PATH_KEYS = ("run.out_dir", "train.init")  # machine paths: the model card names them in words


def _card_overrides(overrides: list[str]) -> list[str]:
    """The overrides for the model card, folders as <folder> (a card holds no machine paths)."""
    return [
        f"{o.split('=', 1)[0]}=<folder>" if o.split("=", 1)[0] in PATH_KEYS else o
        for o in overrides
    ]


def _init_label(init: str) -> str:
    """What a warm start began from, in words: its text encoder and training steps."""
    import json
    from pathlib import Path

    if not init:
        return ""
    index = json.loads((Path(init) / "model_index.json").read_text())
    steps = index.get("_infodecomp_steps", "?")
    return f"a shapes-learned model with a {index['text_encoder'][1]}, {steps} training steps"


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []


main = hydra_main("train-shapes", run)

if __name__ == "__main__":
    main()

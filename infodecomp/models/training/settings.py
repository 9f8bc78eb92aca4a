"""What a ShapesWorld training run does (models.training.shapes), importable without torch:
the `train-shapes` config schema is built from it, and `aggregate` / `report` load that schema."""

from __future__ import annotations

from dataclasses import dataclass

from infodecomp.worlds.noise import SIGMA0


@dataclass
class TrainSettings:
    """What a training run does; its fingerprint guards resumption."""

    steps: int = 3000  # optimiser steps (one CPU thread: about an hour)
    batch: int = 128  # training draws per step
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10 %)
    warmup: int = 100  # warm-up steps
    ema: float = 0.995  # decay of the weights' moving average (the saved model)
    seed: int = 0  # initial weights and every training draw
    sigma0: float = SIGMA0  # pixel noise of the ShapesWorld data
    eval_size: int = 1024  # held-out draws scored against the exact MMSE
    eval_every: int = 250  # steps between held-out evaluations (train_log.csv)
    checkpoint_every: int = (
        100  # steps between checkpoints (an interrupted run loses at most these)
    )

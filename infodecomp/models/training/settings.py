"""What a ShapesWorld training run does (models.training.trainer), importable without torch:
the `train-shapes` config schema is built from it, and `aggregate` / `report` load that schema."""

from __future__ import annotations

from dataclasses import dataclass

from infodecomp.worlds.noise import SIGMA0

PREDICTIONS = ("epsilon", "v_prediction")  # what the UNet outputs


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
    arch: str = "v1"  # shapes_learned.ARCHITECTURES: v1 (CLIP, UNet attention at 8, 4) | v2
    band_share: float = 0.0  # share of training logsnr draws uniform over RELATION_BAND
    low_snr_weight: float = 0.0  # 0: plain eps MSE; c > 0: weight 1 + min(exp(-logsnr), c)
    probe_size: int = 256  # relation-probe items (train_log.csv every eval_every steps)
    init: str = ""  # "": random weights; a shapes-learned model folder: warm start (warm_start)
    init_added: str = "zero"  # warm start, input channels the init lacks: zero | fresh (random)
    prediction: str = "epsilon"  # what the UNet outputs: epsilon | v_prediction (v = a eps - s x)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(
                f"train.prediction={self.prediction!r}: choose one of {', '.join(PREDICTIONS)}"
            )

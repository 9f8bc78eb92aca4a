"""Estimation engine: logsnr sampling, MMSE, pointwise and pixel-wise information (pure torch)."""

from infodecomp.estimators.channel import alpha_sigma, noisy_channel
from infodecomp.estimators.engine import EngineConfig, ItemEstimate, Query, estimate
from infodecomp.estimators.protocol import Denoiser
from infodecomp.estimators.samplers import LogsnrSampler

__all__ = [
    "Denoiser",
    "EngineConfig",
    "ItemEstimate",
    "LogsnrSampler",
    "Query",
    "alpha_sigma",
    "estimate",
    "noisy_channel",
]

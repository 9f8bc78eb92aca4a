"""Shared fixtures: the tiny random-weight Stable Diffusion pipeline, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The test models are tiny: one intra-op thread is as fast, and it avoids the many-fold slowdown
# of oversubscribed OpenMP threads on a shared CPU. INFODECOMP_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("INFODECOMP_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built tiny-sd folder (diffusers save_pretrained layout)."""
    from infodecomp.models.tiny.sd import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir: Path):
    """A float32 CPU StableDiffusionDenoiser over tiny-sd; tests must not change its settings."""
    from infodecomp.models.families.sd import StableDiffusionDenoiser

    return StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu", dtype="float32")

"""The SD 2.1 base architecture dicts: conformance with the reference configs, size, forward pass."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from infodecomp.models.tiny import sd21_arch as arch

REFERENCE = Path(os.environ.get("INFODECOMP_SD21_REFERENCE", "/work/shared/reference/sd21-base"))
SKIP_KEYS = {"_class_name", "_diffusers_version", "torch_dtype"}


def _norm(value):
    return [_norm(v) for v in value] if isinstance(value, list | tuple) else value


@pytest.mark.parametrize(
    ("part", "ours"),
    [
        ("unet/config.json", arch.UNET_CONFIG),
        ("vae/config.json", arch.VAE_CONFIG),
        ("text_encoder/config.json", arch.TEXT_ENCODER_CONFIG),
        ("scheduler/scheduler_config.json", arch.SCHEDULER_CONFIG),
    ],
)
def test_configs_match_the_reference_files(part: str, ours: dict) -> None:
    path = REFERENCE / part
    if not path.is_file():
        pytest.skip(f"reference config {path} not available")
    ref = {k: v for k, v in json.loads(path.read_text()).items() if k not in SKIP_KEYS}
    assert set(ours) == set(ref), f"fields differ: {set(ours) ^ set(ref)}"
    assert {k: _norm(v) for k, v in ours.items()} == ref


def test_parameter_counts_on_meta_device() -> None:
    parts = arch.build_sd21_base_random(device="meta", dtype=torch.float16)
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    assert counts == {
        "unet": arch.EXPECTED_UNET_PARAMS,
        "vae": 83_653_863,
        "text_encoder": 340_387_840,
    }
    assert parts["unet"].dtype == torch.float16 and parts["vae"].config.scaling_factor == 0.18215
    assert (
        parts["unet"].config.sample_size == 64 and parts["text_encoder"].config.hidden_size == 1024
    )


@pytest.mark.gpu
def test_sd21_base_random_build_and_forward_on_gpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    parts = arch.build_sd21_base_random(device="cuda", dtype=torch.float16)
    unet = parts["unet"]
    assert sum(p.numel() for p in unet.parameters()) == arch.EXPECTED_UNET_PARAMS
    ids = torch.randint(0, 49408, (1, 77), device="cuda")
    with torch.no_grad():
        cond = parts["text_encoder"](ids)[0]
        assert cond.shape == (1, 77, 1024)
        out = unet(
            torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16),
            torch.tensor([500], device="cuda"),
            cond,
        ).sample
        assert out.shape == (1, 4, 64, 64) and torch.isfinite(out).all()
        img = (
            parts["vae"]
            .decode(torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16))
            .sample
        )
        assert img.shape == (1, 3, 512, 512)


@pytest.mark.slow
def test_unet_builds_on_cpu_with_the_expected_size() -> None:
    unet = arch.build_unet(device="cpu")
    assert sum(p.numel() for p in unet.parameters()) == arch.EXPECTED_UNET_PARAMS

"""Stable Diffusion 2.1 base architecture (the paper's model) as plain config dicts, no download.

The values are those of stabilityai/stable-diffusion-2-1-base's component configs; a test checks
them against reference copies of those files. `build_sd21_base_random` instantiates the
architecture with random weights for shape, memory and speed checks without the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "use_linear_projection": True,
}

# The published file has no scaling_factor; diffusers' default 0.18215 applies (SD 1.x / 2.x).
VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 768,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
VAE_SCALING_FACTOR = 0.18215

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1024,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 16,
    "num_hidden_layers": 23,
    "pad_token_id": 1,
    "projection_dim": 512,
    "vocab_size": 49408,
}

SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}

# Counted from UNet2DConditionModel(**UNET_CONFIG) (diffusers 0.39); a test recounts it.
EXPECTED_UNET_PARAMS = 865_910_724


def _models() -> tuple[type, type, type, type]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextConfig


def build_unet(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """SD 2.1 base UNet with random weights (device "meta" builds it without memory)."""
    unet_cls = _models()[0]
    with torch.device(device):
        return unet_cls(**UNET_CONFIG).to(dtype)


def build_sd21_base_random(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> dict[str, Any]:
    """Random-weight SD 2.1 base components: {"unet", "vae", "text_encoder"}, eval mode.

    About 1.29 B parameters in all (5.2 GB in float32); build on the GPU for speed.
    """
    unet_cls, vae_cls, text_cls, text_cfg = _models()
    te_cfg = {
        k: v for k, v in TEXT_ENCODER_CONFIG.items() if k not in ("architectures", "model_type")
    }
    with torch.device(device):
        parts = {
            "unet": unet_cls(**UNET_CONFIG),
            "vae": vae_cls(**VAE_CONFIG, scaling_factor=VAE_SCALING_FACTOR),
            "text_encoder": text_cls(text_cfg(**te_cfg)),
        }
    return {k: m.to(dtype).eval().requires_grad_(False) for k, m in parts.items()}

"""`tiny-sdxl`, `tiny-sd3`, `tiny-flux`, `tiny-pixart`: random-weight pipelines built offline.

Each has its family's architecture at toy size (the real classes, the real pipeline layout
written by `save_pretrained`, the real scheduler config and VAE constants) so every code path of
its adapter runs on a CPU in seconds through the same `from_pretrained` path as a hub
checkpoint: 32 x 32 images, 16 x 16 latents (8 x 8 patches for the transformers). Every text
encoder is tokenised with CLIP's offline BPE vocabulary (models/tiny/sd.py); the T5 slots use it
with a shorter length (TEXT_TOKENS), and their T5 encoders are built from config with CLIP's
vocabulary size. Built once into the cache (models/tiny/sd.py: cache_root) per config digest.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.tiny.sd import (
    SEED,
    STAMP_FILE,
    TEXT_CONFIG,
    VAE_CONFIG,
    build_clip_tokenizer,
    cached_folder,
)

TEXT_TOKENS = 32  # T5 slots of the tiny pipelines (real: 256 / 300 / 512)
VOCAB = 49408


def _clip(hidden: int, heads: int, projection: int | None = None) -> dict[str, Any]:
    cfg = {
        **TEXT_CONFIG,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_attention_heads": heads,
    }
    if projection is not None:
        cfg["projection_dim"] = projection
    return cfg


T5_CONFIG = {
    "vocab_size": VOCAB,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 1,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "feed_forward_proj": "gated-gelu",
    "pad_token_id": 49407,
    "eos_token_id": 49407,
    "decoder_start_token_id": 0,
}
VAE_FLOW = {  # 16-channel VAE without quant convs (SD 3, Flux.1)
    **VAE_CONFIG,
    "latent_channels": 16,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
DDPM_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

CONFIGS: dict[str, dict[str, Any]] = {
    "sdxl": {
        "unet": {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 64),
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
            "cross_attention_dim": 64,  # 32 + 32: both CLIP encoders' hidden states
            "attention_head_dim": (2, 4),
            "transformer_layers_per_block": (1, 2),
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 6 * 8 + 32,  # 6 time ids + pooled (32)
            "norm_num_groups": 8,
        },
        "vae": {**VAE_CONFIG, "scaling_factor": 0.13025, "force_upcast": True},
        "text_encoder": _clip(32, 4),
        "text_encoder_2": _clip(32, 4, projection=32),
        "scheduler": {**DDPM_SCHEDULER, "interpolation_type": "linear"},
    },
    "sd3": {
        "transformer": {
            "sample_size": 16,
            "patch_size": 2,
            "in_channels": 16,
            "num_layers": 2,
            "attention_head_dim": 8,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,  # T5 width; CLIP 16 + 8 are padded to it
            "caption_projection_dim": 16,
            "pooled_projection_dim": 32,  # CLIP-L 16 + CLIP-G 16 projections
            "out_channels": 16,
            "pos_embed_max_size": 16,
            "dual_attention_layers": (0,),  # SD 3.5 Medium's extra image self-attention
            "qk_norm": "rms_norm",  # SD 3.5
        },
        "vae": {**VAE_FLOW, "scaling_factor": 1.5305, "shift_factor": 0.0609},
        "text_encoder": _clip(16, 2, projection=16),
        "text_encoder_2": _clip(8, 2, projection=16),
        "text_encoder_3": T5_CONFIG,
        "scheduler": {"num_train_timesteps": 1000, "shift": 3.0},
    },
    "flux": {
        "transformer": {
            "patch_size": 1,
            "in_channels": 64,  # 16 latent channels x 2 x 2 packed patch
            "num_layers": 1,
            "num_single_layers": 1,
            "attention_head_dim": 16,
            "num_attention_heads": 2,
            "joint_attention_dim": 32,
            "pooled_projection_dim": 16,
            "guidance_embeds": True,  # as FLUX.1-dev
            "axes_dims_rope": (4, 6, 6),
        },
        "vae": {**VAE_FLOW, "scaling_factor": 0.3611, "shift_factor": 0.1159},
        "text_encoder": _clip(16, 2),
        "text_encoder_2": T5_CONFIG,
        "scheduler": {
            "num_train_timesteps": 1000,
            "shift": 3.0,
            "use_dynamic_shifting": True,
            "base_shift": 0.5,
            "max_shift": 1.15,
            "base_image_seq_len": 256,
            "max_image_seq_len": 4096,
        },
    },
    "pixart": {
        "transformer": {
            "num_attention_heads": 2,
            "attention_head_dim": 8,
            "in_channels": 4,
            "out_channels": 8,  # learned variance: eps, then the variance interpolation
            "num_layers": 2,
            "cross_attention_dim": 16,
            "sample_size": 16,
            "patch_size": 2,
            "caption_channels": 32,
            "norm_num_groups": 8,
            "use_additional_conditions": False,
        },
        "vae": {**VAE_CONFIG, "scaling_factor": 0.13025},
        "text_encoder": T5_CONFIG,
        "scheduler": {
            "num_train_timesteps": 1000,
            "beta_start": 0.0001,
            "beta_end": 0.02,
            "beta_schedule": "linear",
            "prediction_type": "epsilon",
        },
    },
}


def fingerprint(family: str) -> str:
    spec = [CONFIGS[family], TEXT_TOKENS, SEED, "v1"]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()


def _tokenizers(tmp: Path) -> dict[str, Any]:
    return {
        "clip": build_clip_tokenizer(tmp / "clip"),
        "clip_bang": build_clip_tokenizer(tmp / "clip2", pad_token="!"),  # SDXL's tokenizer_2
        "t5": build_clip_tokenizer(tmp / "t5", model_max_length=TEXT_TOKENS),
    }


def _seeded(make: Callable[[], Any]) -> Any:
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        return make()
    finally:
        torch.random.set_rng_state(state)


def _sdxl(cfg: dict, tok: dict) -> Any:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**cfg["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"])),
        tokenizer=tok["clip"],
        tokenizer_2=tok["clip_bang"],
        unet=UNet2DConditionModel(**cfg["unet"]),
        scheduler=EulerDiscreteScheduler(**cfg["scheduler"]),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def _sd3(cfg: dict, tok: dict) -> Any:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    return StableDiffusion3Pipeline(
        transformer=SD3Transformer2DModel(**cfg["transformer"]),
        scheduler=FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]),
        vae=AutoencoderKL(**cfg["vae"]),
        text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder"])),
        tokenizer=tok["clip"],
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**cfg["text_encoder_2"])),
        tokenizer_2=tok["clip_bang"],
        text_encoder_3=T5EncoderModel(T5Config(**cfg["text_encoder_3"])),
        tokenizer_3=tok["t5"],
    )


def _flux(cfg: dict, tok: dict) -> Any:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**cfg["scheduler"]),
        vae=AutoencoderKL(**cfg["vae"]),
        text_encoder=CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])),
        tokenizer=tok["clip"],
        text_encoder_2=T5EncoderModel(T5Config(**cfg["text_encoder_2"])),
        tokenizer_2=tok["t5"],
        transformer=FluxTransformer2DModel(**cfg["transformer"]),
    )


def _pixart(cfg: dict, tok: dict) -> Any:
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    return PixArtSigmaPipeline(
        tokenizer=tok["t5"],
        text_encoder=T5EncoderModel(T5Config(**cfg["text_encoder"])),
        vae=AutoencoderKL(**cfg["vae"]),
        transformer=PixArtTransformer2DModel(**cfg["transformer"]),
        scheduler=DPMSolverMultistepScheduler(**cfg["scheduler"]),
    )


BUILDERS: dict[str, Callable[[dict, dict], Any]] = {
    "sdxl": _sdxl,
    "sd3": _sd3,
    "flux": _flux,
    "pixart": _pixart,
}


def build_tiny(family: str, folder: str | Path) -> Path:
    """Builds the random-weight tiny pipeline of `family` into `folder` (save_pretrained layout).

    Deterministic: every weight comes from one fixed torch seed. Returns the folder.
    """
    if family not in BUILDERS:
        raise ValueError(f"no tiny pipeline for family {family!r}; one of: {', '.join(BUILDERS)}")
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        tok = _tokenizers(Path(tmp))
        pipe = _seeded(lambda: BUILDERS[family](CONFIGS[family], tok))
        pipe.save_pretrained(folder, safe_serialization=True)
    (folder / STAMP_FILE).write_text(fingerprint(family))
    return folder


def tiny_path(family: str) -> Path:
    """The cached tiny pipeline folder of `family`, built on first use."""
    return cached_folder(
        f"tiny-{family}-v1", lambda folder: build_tiny(family, folder), fingerprint(family)
    )

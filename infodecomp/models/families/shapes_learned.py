"""`shapes-learned`: a text-to-image diffusion model trained on ShapesWorld, where the truth is known.

Architecture (the Stable Diffusion family's shape, at ShapesWorld's size, in pixel space):
- a diffusers UNet2DConditionModel on 16 x 16 x 3 pixels, cross-attention to the text at the
  8 x 8 and 4 x 4 levels, epsilon prediction;
- a CLIPTextModel trained from scratch (2 layers, width 64) behind CLIP's real BPE tokenizer
  (16 tokens: ShapesWorld captions take at most 10);
- a continuous logsnr schedule (models.schedule.ContinuousSchedule): time = 1000 sigmoid(-logsnr / 4),
  trained on logsnr in [-9, 11];
- no VAE: models.pixel.IdentityAutoencoder, so every command of the SD adapter runs on it.

Saved like a diffusers pipeline (unet/, text_encoder/, tokenizer/, scheduler/, model_index.json)
and loaded with `ShapesLearnedDenoiser.from_pretrained(folder)`. The trained weights ship in
infodecomp/models/resources/shapes-learned (see its README.md, the model card); training is
`infodecomp train-shapes` (models.shapes_training).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from infodecomp.models.dynamics.schedule import ContinuousSchedule
from infodecomp.models.families.pixel import PixelSpaceMixin
from infodecomp.models.families.sd import StableDiffusionDenoiser
from infodecomp.models.tiny.sd import RESOURCES, build_clip_tokenizer, cached_folder
from infodecomp.worlds import shapes as world

SHIPPED = RESOURCES / "shapes-learned"
TOKENS = 16  # text tokens (bos + words + eos + padding); captions use at most 10

UNET_CONFIG: dict[str, Any] = {
    "sample_size": world.CANVAS,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": (32, 64, 128),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": 4,  # diffusers reads it as the number of heads
    "norm_num_groups": 16,
}
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": TOKENS,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_act": "quick_gelu",
}
SCHEDULE = ContinuousSchedule(logsnr_min=-9.0, logsnr_max=11.0, time_scale=4.0)


def build_parts(seed: int = 0) -> dict[str, Any]:
    """Fresh random-weight parts (unet, text_encoder, tokenizer) from the configs above."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(Path(tmp), model_max_length=TOKENS)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    finally:
        torch.random.set_rng_state(state)
    return {"unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer}


def save_model(
    folder: str | Path,
    unet: Any,
    text_encoder: Any,
    tokenizer: Any,
    dtype: torch.dtype = torch.float32,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes the diffusers layout (weights as safetensors in `dtype`) into `folder`."""
    import copy

    folder = Path(folder)
    for name, part in (("unet", unet), ("text_encoder", text_encoder)):
        copy.deepcopy(part).to(dtype).save_pretrained(folder / name, safe_serialization=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(SCHEDULE.config(), indent=2)
    )
    index = {
        "_class_name": "ShapesLearnedPipeline",
        "_infodecomp_family": "infodecomp.models.families.shapes_learned:ShapesLearnedDenoiser",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["infodecomp", "ContinuousSchedule"],
        **(extra or {}),
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def fingerprint(seed: int = 0) -> str:
    import hashlib

    spec = [UNET_CONFIG, TEXT_CONFIG, SCHEDULE.config(), TOKENS, seed]
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()


def random_path(seed: int = 0) -> Path:
    """The random-weight (untrained) model of the same architecture, cached on first use."""
    from infodecomp.models.tiny.sd import STAMP_FILE

    def build(folder: Path) -> Path:
        save_model(folder, **build_parts(seed))
        (folder / STAMP_FILE).write_text(fingerprint(seed))
        return folder

    return cached_folder(f"shapes-learned-random-{seed}", build, fingerprint(seed))


def shipped_path() -> Path:
    """The trained weights shipped with the package (a one-line error when absent)."""
    from infodecomp.models.families.latent import ModelFolderError

    if not (SHIPPED / "unet" / "config.json").is_file():
        raise ModelFolderError(
            f"the trained ShapesWorld model is missing from {SHIPPED}; reinstall infodecomp, or "
            "train one with `infodecomp train-shapes` and pass model.path=<run dir>/model"
        )
    return SHIPPED


class ShapesLearnedDenoiser(PixelSpaceMixin, StableDiffusionDenoiser):
    """A pixel-space text-to-image model of the SD family's shape on a continuous logsnr schedule.

    ShapesWorld tensors are its data points as they are (noisy pixels beyond [-1, 1] included):
    `trained_world` tells the runner to hand them over unclipped.
    """

    PARTS = ("unet", "text_encoder", "tokenizer")  # no VAE: pixel space
    HONOURS = frozenset({"attn_processor"})  # continuous logsnr: no timestep rule to choose
    trained_world = "shapes"

    @classmethod
    def _make_schedule(cls, config: dict[str, Any]) -> ContinuousSchedule:
        return ContinuousSchedule.from_config(config)

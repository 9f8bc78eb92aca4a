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
`infodecomp train-shapes` (models.training).
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
# v2: the same UNet with a bidirectional text encoder (T5's encoder: every word's output sees the
# whole caption, so an object's words can carry the side the relation puts it on; CLIP's causal
# encoder lets the first object's words see nothing after them). Same CLIP BPE tokenizer and
# schedule. (Attention at 16 x 16 costs 1.4-1.8 x per step on this CPU; not tried.)
UNET_V2_CONFIG: dict[str, Any] = dict(UNET_CONFIG)
# v2xy: v2 with two coordinate channels (x, y in [-1, 1]) appended to the UNet's input, so every
# pixel's features (and its cross-attention queries) know where the pixel is from the first layer.
COORD_CHANNELS = 2
UNET_V2XY_CONFIG: dict[str, Any] = {**UNET_CONFIG, "in_channels": 3 + COORD_CHANNELS}
T5_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "d_model": 64,
    "d_kv": 16,
    "d_ff": 128,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 16,
    "relative_attention_max_distance": TOKENS,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,  # T5's default 0.1 would also act in the trainer's EMA copies
    "pad_token_id": 49407,
    "eos_token_id": 49407,
    "decoder_start_token_id": 0,
}
# name -> (UNet config, text encoder class (transformers), its config class, its config)
ARCHITECTURES: dict[str, tuple[dict[str, Any], str, str, dict[str, Any]]] = {
    "v1": (UNET_CONFIG, "CLIPTextModel", "CLIPTextConfig", TEXT_CONFIG),
    "v2": (UNET_V2_CONFIG, "T5EncoderModel", "T5Config", T5_TEXT_CONFIG),
    "v2xy": (UNET_V2XY_CONFIG, "T5EncoderModel", "T5Config", T5_TEXT_CONFIG),
}
SCHEDULE = ContinuousSchedule(logsnr_min=-9.0, logsnr_max=11.0, time_scale=4.0)


def _architecture(arch: str) -> tuple[dict[str, Any], str, str, dict[str, Any]]:
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"train.arch={arch!r} is unknown; choose one of {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[arch]


def with_coordinates(unet: Any, z: torch.Tensor) -> torch.Tensor:
    """The UNet's input: z, with the coordinate channels appended when the UNet takes them
    (in_channels = channels of z + COORD_CHANNELS; x then y, each in [-1, 1] across the canvas)."""
    extra = int(unet.config.in_channels) - z.shape[1]
    if extra == 0:
        return z
    if extra != COORD_CHANNELS:
        raise ValueError(
            f"the UNet takes {unet.config.in_channels} input channels and the data has "
            f"{z.shape[1]}: a shapes-learned UNet takes the data or the data and {COORD_CHANNELS} "
            "coordinate channels"
        )
    b, _, h, w = z.shape
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=z.device, dtype=z.dtype),
        torch.linspace(-1, 1, w, device=z.device, dtype=z.dtype),
        indexing="ij",
    )
    return torch.cat([z, torch.stack([xs, ys]).expand(b, -1, -1, -1)], dim=1)


def build_parts(seed: int = 0, arch: str = "v1") -> dict[str, Any]:
    """Fresh random-weight parts (unet, text_encoder, tokenizer) of architecture `arch`."""
    import transformers
    from diffusers import UNet2DConditionModel

    unet_config, text_class, config_class, text_config = _architecture(arch)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(Path(tmp), model_max_length=TOKENS)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        config = getattr(transformers, config_class)(**text_config)
        text_encoder = getattr(transformers, text_class)(config)
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
    prediction_type: str = "epsilon",
) -> Path:
    """Writes the diffusers layout (weights as safetensors in `dtype`) into `folder`; the
    scheduler config says what the UNet outputs (epsilon or v_prediction)."""
    import copy

    folder = Path(folder)
    for name, part in (("unet", unet), ("text_encoder", text_encoder)):
        copy.deepcopy(part).to(dtype).save_pretrained(folder / name, safe_serialization=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**SCHEDULE.config(), "prediction_type": prediction_type}, indent=2)
    )
    index = {
        "_class_name": "ShapesLearnedPipeline",
        "_infodecomp_family": "infodecomp.models.families.shapes_learned:ShapesLearnedDenoiser",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", type(text_encoder).__name__],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["infodecomp", "ContinuousSchedule"],
        **(extra or {}),
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def fingerprint(seed: int = 0, arch: str = "v1") -> str:
    import hashlib

    unet_config, text_class, _, text_config = _architecture(arch)
    spec = [unet_config, text_config, SCHEDULE.config(), TOKENS, seed]
    if arch != "v1":  # v1's digest is unchanged (cached random-weight folders stay valid)
        spec.append(text_class)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()


def random_path(seed: int = 0) -> Path:
    """The random-weight (untrained) model of the same architecture, cached on first use."""
    from infodecomp.models.tiny.sd import STAMP_FILE

    def build(folder: Path) -> Path:
        save_model(folder, **build_parts(seed))
        (folder / STAMP_FILE).write_text(fingerprint(seed))
        return folder

    return cached_folder(f"shapes-learned-random-{seed}", build, fingerprint(seed))


TEXT_ENCODERS = {("transformers", cls) for _, cls, _, _ in ARCHITECTURES.values()}


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

    def _check(self) -> None:
        """The text encoder model_index.json named is one a shapes-learned model has (v1:
        CLIPTextModel, v2: T5EncoderModel; both are called as text_encoder(ids)[0])."""
        name = type(self.text_encoder).__name__
        if ("transformers", name) not in TEXT_ENCODERS:
            raise ValueError(
                f"the text encoder is a {name}; a shapes-learned model has one of "
                f"{', '.join(sorted(f'{a}.{b}' for a, b in TEXT_ENCODERS))}"
            )

    def _denoise(self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return super()._denoise(network, with_coordinates(network, z), t, cond)

    @classmethod
    def _make_schedule(cls, config: dict[str, Any]) -> ContinuousSchedule:
        return ContinuousSchedule.from_config(config)

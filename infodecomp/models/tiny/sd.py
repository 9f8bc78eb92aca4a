"""`tiny-sd`: a random-weight Stable Diffusion pipeline built offline, with the real CLIP tokenizer.

It has the architecture family of Stable Diffusion (cross-attention UNet, KL autoencoder, CLIP
text encoder, scaled-linear DDPM schedule) at toy size, so every code path of the Stable
Diffusion adapter runs on a CPU in seconds: 32 x 32 images, 4 x 16 x 16 latents, 77 x 32 prompt
encodings. The tokenizer is CLIP's BPE, derived from CLIP's vocabulary file (shipped in
infodecomp/models/resources with its MIT license), so token indices and word maps behave as with
the real model.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

CACHE_ENV = "INFODECOMP_CACHE"
TINY_NAME = "tiny-sd-v1"
RESOURCES = Path(__file__).resolve().parents[1] / "resources"
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP keeps this many merges of the vocabulary file
SEED = 1234
STAMP_FILE = "infodecomp_tiny_sd.txt"  # fingerprint of the configs the folder was built from

UNET_CONFIG = {
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 2,  # diffusers reads it as the number of heads; 2 heads keep CPU SDPA fast
    "norm_num_groups": 8,
}
VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (16, 32),
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 32,
}
TEXT_CONFIG = {
    "vocab_size": 49408,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 49407,
    "hidden_act": "quick_gelu",
}
SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from bytes to printable unicode characters (GPT-2 style)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clip_vocab_file() -> Path:
    """CLIP's BPE vocabulary file, shipped inside the package (MIT, see its LICENSE file)."""
    path = RESOURCES / VOCAB_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed package; reinstall infodecomp "
            "(pip install --force-reinstall infodecomp, or pip install . from a checkout)"
        )
    return path


def write_clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """Writes vocab.json and merges.txt of CLIP's tokenizer, derived the way CLIP builds them."""
    with gzip.open(clip_vocab_file(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    vocab_path.write_text(
        json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False), encoding="utf-8"
    )
    # transformers skips the first line of merges.txt (a version header), like CLIP does.
    merges_path.write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    return vocab_path, merges_path


def build_clip_tokenizer(
    folder: Path, pad_token: str = "<|endoftext|>", model_max_length: int = 77
):  # -> transformers.CLIPTokenizer
    """A CLIPTokenizer (77 tokens, pad = end token) from files written into `folder`.

    SDXL's second tokenizer pads with "!"; a T5 slot of a tiny pipeline may take another length.
    """
    from transformers import CLIPTokenizer

    vocab_path, merges_path = write_clip_tokenizer_files(folder)
    return CLIPTokenizer(
        str(vocab_path),
        str(merges_path),
        pad_token=pad_token,
        model_max_length=model_max_length,
    )


def build_tiny_sd(folder: str | Path) -> Path:
    """Builds the random-weight tiny pipeline into `folder` (a diffusers save_pretrained layout).

    Deterministic: weights come from a fixed torch seed. Returns the folder.
    """
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_clip_tokenizer(Path(tmp))
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(SEED)
        unet = UNet2DConditionModel(**UNET_CONFIG)
        vae = AutoencoderKL(**VAE_CONFIG)
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    finally:
        torch.random.set_rng_state(state)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / STAMP_FILE).write_text(fingerprint())
    return folder


def fingerprint() -> str:
    """A digest of the configs and seed; a cached build with another digest is stale."""
    spec = [UNET_CONFIG, VAE_CONFIG, TEXT_CONFIG, SCHEDULER_CONFIG, SEED]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def cache_root() -> Path:
    """$INFODECOMP_CACHE, or ~/.cache/infodecomp."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "infodecomp"


def _is_current(folder: Path, digest: str | None = None) -> bool:
    stamp = folder / STAMP_FILE
    return stamp.is_file() and stamp.read_text() == (digest or fingerprint())


def cached_folder(name: str, build: Callable[[Path], Path], digest: str) -> Path:
    """`cache_root() / name`, built with `build(folder)` on first use (in a temporary folder,
    then renamed). `build` must write `digest` into STAMP_FILE; a cached folder with another
    digest (built from other configs) is replaced by a fresh build."""
    target = cache_root() / name
    if _is_current(target, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    stale = target.parent / f"{tmp.name}-stale"
    try:
        build(tmp)
        if target.exists() and not _is_current(target, digest):
            os.rename(target, stale)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _is_current(target, digest):  # not a concurrent builder's win
                raise
    finally:
        for leftover in (tmp, stale):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return target


def tiny_sd_path() -> Path:
    """The cached tiny pipeline folder, built on first use (in a temporary folder, then renamed).

    A cached folder from other configs (its fingerprint differs) is replaced by a fresh build.
    """
    return cached_folder(TINY_NAME, lambda folder: build_tiny_sd(folder), fingerprint())

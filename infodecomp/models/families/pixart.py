"""PixArt-Sigma (and PixArt-alpha) as a Denoiser (the family part; the rest is models.latent).

A DiT (PixArtTransformer2DModel) with cross-attention to T5: prompts are tokenised to
`model.text_tokens` (default 300, the Sigma pipeline's max_sequence_length) with the padding
mask, encoded by T5 with that mask, and the mask goes to the transformer's cross-attention.
"" is encoded like any prompt (the pipeline's unconditional input). Epsilon prediction on the
linear DDPM schedule (betas 1e-4 .. 2e-2) with learned variance: the transformer outputs 2 C
channels and the first C are eps (the rest, the variance interpolation, is dropped). Checkpoints
with additional conditions (PixArt-alpha 1024) get the shown image's resolution and aspect ratio
1. The SDXL VAE (scaling 0.13025) overflows in float16 and then runs in float32.

Attention: the transformer blocks' cross-attention (attn2) is captured like the UNet's
(models.attention); all layers share one patch grid. A word's map averages its T5 positions.

The unconditional condition: PixArt was trained with caption dropout (probability 0.1) to a
fixed learned embedding, `y_embedding` [T, D] in T5's output space, which the diffusers
conversion drops. Without it the "" condition is T5(""), which the network was not trained on
as "no caption", so i^o / i^s against "" measure information relative to an untrained
condition; every PixArt model logs this once. `model.null_embedding=<file>` gives the learned
embedding (a .safetensors or .pt/.pth file holding the tensor, or a state dict with one tensor or
a key ending in `y_embedding`, e.g. an original PixArt checkpoint's `y_embedder.y_embedding`):
it then stands for "", with every one of its T positions attended (a mask of ones; training
kept the dropped caption's own mask, which differs per caption). A file of another shape than
[T, D] (T = model.text_tokens, D = T5's width) is refused.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import t5_hidden, tokenize

T5_TOKENS = 300
NULL_EMBEDDING_KEY = "y_embedding"  # the learned null caption's name in PixArt checkpoints
log = logging.getLogger("infodecomp")


def load_null_embedding(path: str | Path, shape: tuple[int, int]) -> torch.Tensor:
    """The learned unconditional caption embedding [T, D] float32 from a tensor file.

    The file (.safetensors, or .pt / .pth read with torch.load(weights_only=True)) holds the
    tensor itself or a state dict (also under "state_dict") with one tensor or one key ending in
    "y_embedding"; [1, T, D] is accepted as [T, D].

    Raises:
        ValueError: missing file, no such tensor, or a shape other than `shape` (one line).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"model.null_embedding={path}: no such file; give the tensor file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(file))
        else:
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or foreign file: name it in one line
        raise ValueError(
            f"model.null_embedding={path}: unreadable ({type(err).__name__}: {err})"
        ) from err
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if isinstance(data, dict):
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        named = [k for k in tensors if k.endswith(NULL_EMBEDDING_KEY)]
        if len(named) == 1 or len(tensors) == 1:
            data = tensors[named[0] if len(named) == 1 else next(iter(tensors))]
        else:
            raise ValueError(
                f"model.null_embedding={path}: holds {len(tensors)} tensors and none (or several) "
                f"named *{NULL_EMBEDDING_KEY}; save the [T, D] tensor alone"
            )
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"model.null_embedding={path}: holds no tensor ({type(data).__name__})")
    emb = data[0] if data.dim() == 3 and data.shape[0] == 1 else data
    if tuple(emb.shape) != tuple(shape):
        raise ValueError(
            f"model.null_embedding={path}: shape {tuple(data.shape)}, this model needs "
            f"{tuple(shape)} (model.text_tokens x T5 width); give that checkpoint's y_embedding "
            "or set model.text_tokens to its length"
        )
    return emb.float()


class PixArtDenoiser(LatentDiffusionDenoiser):
    """PixArt: DiT with T5 cross-attention, KL VAE, epsilon with learned variance."""

    PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
    HONOURS = frozenset({"time_rule", "attn_processor", "text_tokens", "null_embedding"})
    TEXT_TOKENS = T5_TOKENS
    VAE_FLOAT16_OVERFLOWS = True

    def _token_count(self) -> int:
        return int(self.text_tokens)  # type: ignore[arg-type]

    def _check(self) -> None:
        self._require_patch_grid(int(self.network.config.patch_size))
        self.null_embedding: torch.Tensor | None = None  # [T, D]: the "" condition, if given
        if self.options.null_embedding is None:
            log.info(
                'PixArt: i^o / i^s against "" use T5("") as the unconditional input, not the '
                "learned y_embedding PixArt was trained to drop captions to; give "
                "model.null_embedding=<file> to use it"
            )
        else:
            width = int(self.text_encoder.config.d_model)
            self.null_embedding = load_null_embedding(
                self.options.null_embedding, (self.token_count, width)
            )
            log.info(
                'PixArt: the unconditional input "" is the learned null embedding from %s',
                self.options.null_embedding,
            )

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """{prompt_embeds [k, T, D], mask [k, T] (1 = token, 0 = padding)}; "" is the learned
        null embedding with a mask of ones when model.null_embedding is given."""
        ids, mask = tokenize(self.tokenizer, prompts, self.token_count, self.device)
        embeds = t5_hidden(self.text_encoder, ids, mask)  # [k, T, D]
        if self.null_embedding is not None:
            for i, p in enumerate(prompts):
                if p == "":
                    embeds[i] = self.null_embedding.to(embeds.device, embeds.dtype)
                    mask[i] = 1
        return {"prompt_embeds": embeds, "mask": mask}

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        assert isinstance(cond, dict)
        b = z.shape[0]
        added: dict[str, Any] = {"resolution": None, "aspect_ratio": None}
        if getattr(network, "use_additional_conditions", False):
            size = float(self.image_size)
            added = {
                "resolution": torch.tensor([[size, size]], device=z.device).expand(b, -1),
                "aspect_ratio": torch.ones(b, 1, device=z.device),
            }
        out = network(
            z,
            encoder_hidden_states=cond["prompt_embeds"],
            encoder_attention_mask=cond["mask"],
            timestep=t,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        channels = z.shape[1]
        if out.shape[1] == 2 * channels:  # learned variance: [eps, variance interpolation]
            out = out[:, :channels]
        return out

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
"""

from __future__ import annotations

from typing import Any

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import t5_hidden, tokenize

T5_TOKENS = 300


class PixArtDenoiser(LatentDiffusionDenoiser):
    """PixArt: DiT with T5 cross-attention, KL VAE, epsilon with learned variance."""

    PARTS = ("transformer", "vae", "text_encoder", "tokenizer")
    HONOURS = frozenset({"time_rule", "attn_processor", "text_tokens"})
    TEXT_TOKENS = T5_TOKENS
    VAE_FLOAT16_OVERFLOWS = True

    def _token_count(self) -> int:
        return int(self.text_tokens)  # type: ignore[arg-type]

    def _check(self) -> None:
        self._require_patch_grid(int(self.network.config.patch_size))

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """{prompt_embeds [k, T, D], mask [k, T] (1 = token, 0 = padding)}."""
        ids, mask = tokenize(self.tokenizer, prompts, self.token_count, self.device)
        return {"prompt_embeds": t5_hidden(self.text_encoder, ids, mask), "mask": mask}

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

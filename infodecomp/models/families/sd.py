"""Stable Diffusion 1.x / 2.x (any diffusers checkpoint of that family) as a Denoiser.

The family part only: a CLIP text encoder with its BPE tokenizer (77 tokens, last hidden state)
and a UNet2DConditionModel called as unet(z, t, encoder_hidden_states=...). Everything else
(VAE, timesteps, v-prediction, masks, attention capture) is the shared latent-diffusion base,
models.families.latent.LatentDiffusionDenoiser.
"""

from __future__ import annotations

from typing import Any

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import (
    LatentDiffusionDenoiser,
    ModelFolderError,
    resolve_model_path,
)
from infodecomp.models.families.text_encoders import clip_last, tokenize

__all__ = ["ModelFolderError", "StableDiffusionDenoiser", "resolve_model_path"]


class StableDiffusionDenoiser(LatentDiffusionDenoiser):
    """Stable Diffusion: UNet + KL VAE + CLIP text encoder. Build it with `from_pretrained`."""

    PARTS = ("unet", "vae", "text_encoder", "tokenizer")

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """CLIP last hidden states [k, 77, D]; prompts past 77 tokens are truncated, with a warning."""
        ids, _ = tokenize(self.tokenizer, prompts, self.token_count, self.device)  # [k, 77]
        return clip_last(self.text_encoder, ids)  # [k, 77, D]

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        return network(z, t, encoder_hidden_states=cond, return_dict=False)[0]

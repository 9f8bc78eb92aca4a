"""Stable Diffusion XL as a Denoiser (the family part; the rest is models.latent).

Conditioning, as SDXL was trained: two CLIP text encoders, each tokenised to 77 tokens, their
penultimate hidden states concatenated along the feature axis ([k, 77, 768 + 1280]); the
projected pooled output of the second encoder ([k, 1280]); and six micro-conditioning "time
ids" (original height and width, crop top and left, target height and width) = (S, S, 0, 0, S,
S) for the S x S image the model is shown. With `force_zeros_for_empty_prompt` (SDXL base) the
unconditional input is all zeros, not the encoding of "": "" encodes to zero embeddings and a
zero pooled vector. The UNet predicts epsilon on the scaled-linear DDPM schedule, so the channel
is the base class's. The VAE (scaling 0.13025) overflows in float16: with run.dtype=float16 it
runs in float32 (VAE_FLOAT16_OVERFLOWS).
"""

from __future__ import annotations

from typing import Any

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import clip_hidden, tokenize


class SDXLDenoiser(LatentDiffusionDenoiser):
    """SDXL: UNet with text-time conditioning, KL VAE, CLIP-L and CLIP-G (with projection)."""

    PARTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    VAE_FLOAT16_OVERFLOWS = True

    def _check(self) -> None:
        self.force_zeros = bool(self.pipeline_config.get("force_zeros_for_empty_prompt", True))
        expected = self.network.add_embedding.linear_1.in_features
        pooled = self.text_encoder_2.config.projection_dim
        got = self.network.config.addition_time_embed_dim * 6 + pooled
        if expected != got:
            raise ValueError(
                f"SDXL UNet expects {expected} added-condition features but 6 time ids and a "
                f"{pooled}-d pooled vector give {got}; the text_encoder_2 does not belong to "
                "this UNet"
            )

    @property
    def time_ids(self) -> torch.Tensor:
        """(original H, W, crop top, left, target H, W) of the square image shown: [6]."""
        s = float(self.image_size)
        return torch.tensor([s, s, 0.0, 0.0, s, s])

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """{prompt_embeds [k, 77, D1 + D2], text_embeds [k, P], time_ids [k, 6]}."""
        ids1, _ = tokenize(self.tokenizer, prompts, self.token_count, self.device)
        ids2, _ = tokenize(self.tokenizer_2, prompts, self.token_count, self.device)
        h1, _ = clip_hidden(self.text_encoder, ids1)  # [k, 77, D1]
        h2, pooled = clip_hidden(self.text_encoder_2, ids2)  # [k, 77, D2], [k, P]
        embeds = torch.cat([h1, h2.to(h1.dtype)], dim=-1)  # [k, 77, D1 + D2]
        if self.force_zeros:
            empty = torch.tensor([p == "" for p in prompts], device=embeds.device)
            embeds = embeds.masked_fill(empty[:, None, None], 0.0)
            pooled = pooled.masked_fill(empty[:, None], 0.0)
        time_ids = self.time_ids.to(embeds.device)[None].expand(len(prompts), -1)
        return {"prompt_embeds": embeds, "text_embeds": pooled, "time_ids": time_ids.clone()}

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        assert isinstance(cond, dict)
        added = {"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}
        return network(
            z, t, encoder_hidden_states=cond["prompt_embeds"], added_cond_kwargs=added
        ).sample

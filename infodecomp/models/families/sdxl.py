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

from pathlib import Path
from typing import Any, ClassVar

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import clip_hidden, model_index, tokenize
from infodecomp.models.presets import AdapterOptions


class SDXLDenoiser(LatentDiffusionDenoiser):
    """SDXL: UNet with text-time conditioning, KL VAE, CLIP-L and CLIP-G (with projection)."""

    REQUIRED_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "model_index.json": ("model_index.json",),
        "unet": ("unet/config.json",),
        "vae": ("vae/config.json",),
        "text_encoder": ("text_encoder/config.json",),
        "text_encoder_2": ("text_encoder_2/config.json",),
        "tokenizer": ("tokenizer/vocab.json", "tokenizer/tokenizer.json"),
        "tokenizer_2": ("tokenizer_2/vocab.json", "tokenizer_2/tokenizer.json"),
        "scheduler": ("scheduler/scheduler_config.json",),
    }
    COMPONENTS: ClassVar[dict[str, str]] = {
        "unet": "diffusers:UNet2DConditionModel",
        "vae": "diffusers:AutoencoderKL",
        "text_encoder": "transformers:CLIPTextModel",
        "text_encoder_2": "transformers:CLIPTextModelWithProjection",
        "tokenizer": "transformers:CLIPTokenizer",
        "tokenizer_2": "transformers:CLIPTokenizer",
    }
    VAE_FLOAT16_OVERFLOWS: ClassVar[bool] = True

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        text_encoder_2: Any,
        tokenizer: Any,
        tokenizer_2: Any,
        schedule: Any,
        *,
        force_zeros_for_empty_prompt: bool = True,
        device: torch.device,
        dtype: torch.dtype,
        options: AdapterOptions | None = None,
        seed: int = 0,
        vae_batch: int = 8,
        **option_overrides: Any,
    ) -> None:
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.force_zeros = bool(force_zeros_for_empty_prompt)
        super().__init__(
            unet,
            vae,
            schedule,
            device=device,
            dtype=dtype,
            options=options,
            token_count=int(tokenizer.model_max_length),
            encoders=(text_encoder, text_encoder_2),
            seed=seed,
            vae_batch=vae_batch,
            **option_overrides,
        )
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        eager = self.options.attn_processor == "eager"
        self.network.set_attn_processor(AttnProcessor() if eager else AttnProcessor2_0())
        expected = unet.add_embedding.linear_1.in_features
        got = unet.config.addition_time_embed_dim * 6 + text_encoder_2.config.projection_dim
        if expected != got:
            raise ValueError(
                f"SDXL UNet expects {expected} added-condition features but 6 time ids and a "
                f"{text_encoder_2.config.projection_dim}-d pooled vector give {got}; the "
                "text_encoder_2 does not belong to this UNet"
            )

    @classmethod
    def _load_components(
        cls, src: str | Path, dtype: torch.dtype, revision: str | None
    ) -> dict[str, Any]:
        index = model_index(src, revision)
        return {
            **super()._load_components(src, dtype, revision),
            "force_zeros_for_empty_prompt": bool(index.get("force_zeros_for_empty_prompt", True)),
        }

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

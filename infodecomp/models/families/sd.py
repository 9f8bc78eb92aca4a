"""Stable Diffusion 1.x / 2.x (any diffusers checkpoint of that family) as a Denoiser.

The family part only: a CLIP text encoder with its BPE tokenizer (77 tokens, last hidden state)
and a UNet2DConditionModel called as unet(z, t, encoder_hidden_states=...). Everything else
(VAE, timesteps, v-prediction, masks, attention capture) is the shared latent-diffusion base,
models.latent.LatentDiffusionDenoiser.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import (
    LatentDiffusionDenoiser,
    ModelFolderError,
    resolve_model_path,
)
from infodecomp.models.presets import AdapterOptions

__all__ = ["ModelFolderError", "StableDiffusionDenoiser", "resolve_model_path"]


class StableDiffusionDenoiser(LatentDiffusionDenoiser):
    """Stable Diffusion: UNet + KL VAE + CLIP text encoder. Build it with `from_pretrained`."""

    REQUIRED_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "model_index.json": ("model_index.json",),
        "unet": ("unet/config.json",),
        "vae": ("vae/config.json",),
        "text_encoder": ("text_encoder/config.json",),
        "tokenizer": ("tokenizer/vocab.json", "tokenizer/tokenizer.json"),
        "scheduler": ("scheduler/scheduler_config.json",),
    }
    COMPONENTS: ClassVar[dict[str, str]] = {
        "unet": "diffusers:UNet2DConditionModel",
        "vae": "diffusers:AutoencoderKL",
        "text_encoder": "transformers:CLIPTextModel",
        "tokenizer": "transformers:CLIPTokenizer",
    }

    def __init__(
        self,
        unet: Any,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        schedule: Any,
        *,
        device: torch.device,
        dtype: torch.dtype,
        options: AdapterOptions | None = None,
        seed: int = 0,
        vae_batch: int = 8,
        **option_overrides: Any,
    ) -> None:
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        super().__init__(
            unet,
            vae,
            schedule,
            device=device,
            dtype=dtype,
            options=options,
            token_count=int(tokenizer.model_max_length),
            encoders=(text_encoder,),
            seed=seed,
            vae_batch=vae_batch,
            **option_overrides,
        )
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        eager = self.options.attn_processor == "eager"
        self.network.set_attn_processor(AttnProcessor() if eager else AttnProcessor2_0())

    @property
    def unet(self) -> Any:
        """The denoising network (a diffusers UNet2DConditionModel)."""
        return self.network

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """CLIP last hidden states [k, 77, D]; prompts past 77 tokens are truncated, with a warning."""
        pad = dict(padding="max_length", max_length=self.token_count, truncation=True)
        ids = self.tokenizer(prompts, return_tensors="pt", **pad).input_ids  # [k, 77]
        for p in prompts:  # CLIP drops what does not fit; say so rather than hide it
            if len(self.tokenizer.tokenize(p)) + 2 > self.token_count:
                warnings.warn(
                    f"prompt truncated to {self.token_count} tokens: {p!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return self.text_encoder(ids.to(self.device))[0]  # [k, 77, D]

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        return network(z, t, encoder_hidden_states=cond, return_dict=False)[0]

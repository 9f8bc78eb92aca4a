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

from typing import Any, ClassVar

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import t5_hidden, tokenize
from infodecomp.models.presets import AdapterOptions

T5_TOKENS = 300


class PixArtDenoiser(LatentDiffusionDenoiser):
    """PixArt: DiT with T5 cross-attention, KL VAE, epsilon with learned variance."""

    REQUIRED_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {
        "model_index.json": ("model_index.json",),
        "transformer": ("transformer/config.json",),
        "vae": ("vae/config.json",),
        "text_encoder": ("text_encoder/config.json",),
        "tokenizer": ("tokenizer/tokenizer.json", "tokenizer/spiece.model", "tokenizer/vocab.json"),
        "scheduler": ("scheduler/scheduler_config.json",),
    }
    COMPONENTS: ClassVar[dict[str, str]] = {
        "transformer": "diffusers:PixArtTransformer2DModel",
        "vae": "diffusers:AutoencoderKL",
        "text_encoder": "transformers:T5EncoderModel",
        "tokenizer": "tokenizer",
    }
    TAKES_TEXT_TOKENS: ClassVar[bool] = True
    VAE_FLOAT16_OVERFLOWS: ClassVar[bool] = True

    def __init__(
        self,
        transformer: Any,
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
        opts = options or AdapterOptions()
        t5_tokens = int(option_overrides.get("text_tokens") or opts.text_tokens or T5_TOKENS)
        super().__init__(
            transformer,
            vae,
            schedule,
            device=device,
            dtype=dtype,
            options=options,
            token_count=t5_tokens,
            encoders=(text_encoder,),
            seed=seed,
            vae_batch=vae_batch,
            **option_overrides,
        )
        from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

        eager = self.options.attn_processor == "eager"
        self.network.set_attn_processor(AttnProcessor() if eager else AttnProcessor2_0())
        self._require_patch_grid(int(transformer.config.patch_size))

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

"""Flux.1 (dev, schnell) as a Denoiser (the family part; the rest is models.latent/flow).

Channel: rectified flow as SD 3 (models.flow.FlowMatchingMixin); the Flux pipeline hands the
transformer t itself (its timesteps / 1000), so `_denoise` divides the 1000 t of the shared
schedule by 1000. The resolution-dependent shift (`use_dynamic_shifting`, mu) only reshapes the
sampling grid and does not enter eps_hat.

Latents: 16 channels, (latent - shift_factor) * scaling_factor, packed for the transformer into
2 x 2 patches ([B, 16, h, w] -> [B, h/2 * w/2, 64]) with position ids (0, row, column) per patch
and zero ids for the text tokens; the output is unpacked back, so the engine and the pixel maps
see the plain [16, h, w] latent grid.

Conditioning: T5's last hidden state (`model.text_tokens`: 512 for dev, 256 for schnell) and
CLIP-L's pooled output. "" is encoded like any prompt.

Guidance. FLUX.1-dev is guidance-distilled: a guidance embedding g tells it to predict what
classifier-free guidance at scale g would, roughly eps_u + g (eps_c - eps_u). The information
estimates need the plain conditional prediction, which is g = 1, so `model.guidance` defaults
to 1.0 (the pipeline's sampling default is 3.5: set model.guidance=3.5 to score with it).
FLUX.1-schnell has no guidance embedding (guidance_embeds false): no guidance is passed. Both
are distilled models, so their predictions are approximations of a denoiser's.

Attention: joint attention in the double- and single-stream blocks (models.joint_attention,
layout "flux"); a word's map averages its T5 token positions.
"""

from __future__ import annotations

from typing import Any

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.attention.concept import ConceptAttentionMixin, flux_flow_time
from infodecomp.models.attention.joint import capture_joint_attention
from infodecomp.models.dynamics.flow import FlowMatchingMixin
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import clip_hidden, t5_hidden, tokenize
from infodecomp.models.families.tokens import word_token_indices

T5_TOKENS = 512  # the Flux pipeline's max_sequence_length (schnell's preset sets 256)
SCORING_GUIDANCE = 1.0


def pack(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h/2 * w/2, 4 C]: 2 x 2 patches, row-major, channels then (dy, dx)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, 4 * c)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack`: [B, h/2 * w/2, 4 C] -> [B, C, h, w]."""
    b, _, d = tokens.shape
    return (
        tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, h, w)
    )


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Position ids [h/2 * w/2, 3] of the packed patches: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device, dtype)


class FluxDenoiser(FlowMatchingMixin, ConceptAttentionMixin, LatentDiffusionDenoiser):
    """Flux.1: joint/single-stream transformer on packed latents, CLIP-L pooled + T5."""

    CONCEPT_LAYOUT = "flux"

    PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    HONOURS = frozenset({"text_tokens", "guidance"})
    TEXT_TOKENS = T5_TOKENS
    DEFAULT_LATENT_SIZE = 128  # 1024 px: the pipeline's default_sample_size

    def _token_count(self) -> int:  # the attention's text keys: T5 tokens
        return int(self.text_tokens)  # type: ignore[arg-type]

    def _check(self) -> None:
        self.guided = bool(self.network.config.guidance_embeds)
        self.guidance = float(self.options.guidance or SCORING_GUIDANCE) if self.guided else None
        if self.options.guidance is not None and not self.guided:
            raise ValueError(
                f"model.guidance={self.options.guidance} is set but this Flux transformer has no "
                "guidance embedding (FLUX.1-schnell); leave model.guidance unset"
            )
        if self.latent_size[0] % 2:
            raise ValueError(
                f"model.image_size={self.image_size} gives an odd {self.latent_size[0]}-latent "
                f"grid; Flux packs 2 x 2 patches: use a multiple of {2 * self.vae_scale_factor}"
            )

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """{prompt_embeds [k, T5, D_T5], pooled [k, D_CLIP]}."""
        clip_tokens = int(self.tokenizer.model_max_length)
        ids1, _ = tokenize(self.tokenizer, prompts, clip_tokens, self.device)
        _, pooled = clip_hidden(self.text_encoder, ids1)  # CLIPTextModel: pooler_output
        ids2, _ = tokenize(self.tokenizer_2, prompts, self.token_count, self.device)
        return {"prompt_embeds": t5_hidden(self.text_encoder_2, ids2), "pooled": pooled}

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        assert isinstance(cond, dict)
        b, _, h, w = z.shape
        embeds = cond["prompt_embeds"]
        guidance = None
        if self.guided:
            guidance = torch.full((b,), float(self.guidance), device=z.device, dtype=torch.float32)
        out = network(
            hidden_states=pack(z),
            timestep=(t / 1000.0).to(z.dtype),
            guidance=guidance,
            pooled_projections=cond["pooled"],
            encoder_hidden_states=embeds,
            txt_ids=torch.zeros(embeds.shape[1], 3, device=z.device, dtype=z.dtype),
            img_ids=image_ids(h, w, z.device, z.dtype),
            return_dict=False,
        )[0]  # [B, h/2 * w/2, 4 C]
        return unpack(out, h, w)

    # --- attention ---------------------------------------------------------------------------

    def _capture(self, skip_lowest: bool, **recorder_options: Any) -> Any:
        """Image->text attention inside the joint attention of eps_hat calls (all blocks)."""
        # every layer shares one patch grid, so skip_lowest has nothing to leave out
        return capture_joint_attention(
            self.network, "flux", self.token_count, self.latent_size, **recorder_options
        )

    def _word_indices(self, caption: str, word: str, occurrence: int | None) -> list[int]:
        return word_token_indices(self.tokenizer_2, caption, word, occurrence, self.token_count)

    # --- ConceptAttention (models.attention.concept) ------------------------------------------

    def _concept_tokens(self, concepts: list[str]) -> torch.Tensor:
        """[C, D_T5]: each concept encoded alone by T5, its first token's hidden state."""
        return self.encode_conditions(concepts)["prompt_embeds"][:, 0]

    def concept_flow_time(self) -> float:
        h, w = self.latent_size
        return flux_flow_time(self.guided, (h // 2) * (w // 2))

    def concept_grid(self) -> tuple[int, int]:
        return self.latent_size[0] // 2, self.latent_size[1] // 2

"""Stable Diffusion 3 / 3.5 as a Denoiser (the family part; the rest is models.latent/flow).

Channel: rectified flow, z_t = (1 - t) x + t eps, velocity target v = eps - x, the transformer
shown timestep 1000 t (models.flow.FlowMatchingMixin; formulas in models/dynamics/conversions.py). The
scheduler's `shift` (3.0) only reshapes the sampling grid and does not enter eps_hat.

Conditioning, as the SD 3 pipeline builds it: CLIP-L and CLIP-G (both with projection) at 77
tokens, penultimate hidden states concatenated along features and zero-padded to T5's width,
then T5's last hidden state (`model.text_tokens`, default 256) appended along the sequence:
prompt_embeds [k, 77 + 256, 4096]; pooled_projections [k, 768 + 1280] = both CLIP projections.
"" is encoded like any prompt (the SD 3 pipeline's unconditional input). A pipeline saved
without T5 (text_encoder_3 = None) gets zeros in the T5 slots, as the pipeline does.
Latents: 16 channels, (latent - shift_factor) * scaling_factor (base class).

Attention: joint attention (models.joint_attention, layout "sd3"); a word's map averages its
CLIP-L token positions and its T5 positions (offset 77) among the text keys.
"""

from __future__ import annotations

from typing import Any

import torch

from infodecomp.estimators.protocol import Conditions
from infodecomp.models.attention.concept import ConceptAttentionMixin, sd3_flow_time
from infodecomp.models.attention.joint import capture_joint_attention
from infodecomp.models.dynamics.flow import FlowMatchingMixin
from infodecomp.models.families.latent import LatentDiffusionDenoiser
from infodecomp.models.families.text_encoders import clip_hidden, t5_hidden, tokenize
from infodecomp.models.families.tokens import word_token_indices

T5_TOKENS = 256  # the SD 3 pipeline's max_sequence_length


class SD3Denoiser(FlowMatchingMixin, ConceptAttentionMixin, LatentDiffusionDenoiser):
    """SD 3.x: MMDiT transformer, 16-channel VAE, CLIP-L + CLIP-G + T5 (rectified flow)."""

    CONCEPT_LAYOUT = "sd3"

    PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    OPTIONAL_PARTS = ("text_encoder_3", "tokenizer_3")  # pipelines may be saved without T5
    HONOURS = frozenset({"text_tokens"})
    TEXT_TOKENS = T5_TOKENS

    def _token_count(self) -> int:
        self.clip_tokens, self.t5_tokens = int(self.tokenizer.model_max_length), self.text_tokens
        return self.clip_tokens + int(self.t5_tokens)  # type: ignore[arg-type]

    def _check(self) -> None:
        self._require_patch_grid(int(self.network.config.patch_size))

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """{prompt_embeds [k, 77 + T5, D_T5], pooled [k, P_L + P_G]}."""
        ids1, _ = tokenize(self.tokenizer, prompts, self.clip_tokens, self.device)
        ids2, _ = tokenize(self.tokenizer_2, prompts, self.clip_tokens, self.device)
        h1, p1 = clip_hidden(self.text_encoder, ids1)  # [k, 77, D_L], [k, P_L]
        h2, p2 = clip_hidden(self.text_encoder_2, ids2)  # [k, 77, D_G], [k, P_G]
        width = int(self.network.config.joint_attention_dim)
        if self.text_encoder_3 is not None:
            ids3, _ = tokenize(self.tokenizer_3, prompts, self.t5_tokens, self.device)
            t5 = t5_hidden(self.text_encoder_3, ids3)  # [k, T5, D_T5]
        else:
            t5 = torch.zeros(
                len(prompts), self.t5_tokens, width, device=self.device, dtype=h1.dtype
            )
        clip = torch.cat([h1, h2.to(h1.dtype)], dim=-1)  # [k, 77, D_L + D_G]
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        embeds = torch.cat([clip, t5.to(clip.dtype)], dim=-2)  # [k, 77 + T5, D_T5]
        return {"prompt_embeds": embeds, "pooled": torch.cat([p1, p2.to(p1.dtype)], dim=-1)}

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        assert isinstance(cond, dict)
        return network(
            hidden_states=z,
            timestep=t,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled"],
            return_dict=False,
        )[0]

    # --- attention ---------------------------------------------------------------------------

    def _capture(self, skip_lowest: bool, **recorder_options: Any) -> Any:
        """Image->text attention inside the joint attention of eps_hat calls (all layers)."""
        # every layer shares one patch grid, so skip_lowest has nothing to leave out
        return capture_joint_attention(
            self.network, "sd3", self.token_count, self.latent_size, **recorder_options
        )

    def _word_indices(self, caption: str, word: str, occurrence: int | None) -> list[int]:
        clip = word_token_indices(self.tokenizer, caption, word, occurrence, self.clip_tokens)
        if self.text_encoder_3 is None:
            return clip
        t5 = word_token_indices(self.tokenizer_3, caption, word, occurrence, self.t5_tokens)
        return clip + [self.clip_tokens + i for i in t5]

    # --- ConceptAttention (models.attention.concept) ------------------------------------------

    def _concept_tokens(self, concepts: list[str]) -> torch.Tensor:
        """[C, D]: the concepts joined by spaces, encoded as one prompt; each concept's first
        CLIP position (after the start token)."""
        lengths = [len(self.tokenizer(c, add_special_tokens=False).input_ids) for c in concepts]
        starts = [1 + sum(lengths[:i]) for i in range(len(concepts))]
        if starts[-1] + lengths[-1] >= self.clip_tokens:
            raise ValueError(
                f"concepts {concepts} take {sum(lengths)} CLIP tokens: more than the "
                f"{self.clip_tokens - 2} of one prompt; use fewer concepts"
            )
        embeds = self.encode_conditions([" ".join(concepts)])["prompt_embeds"][0]
        return embeds[starts]

    def concept_flow_time(self) -> float:
        return sd3_flow_time(self.schedule.num_train_timesteps, self.schedule.shift)

    def concept_grid(self) -> tuple[int, int]:
        p = int(self.network.config.patch_size)
        return self.latent_size[0] // p, self.latent_size[1] // p

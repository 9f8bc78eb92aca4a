"""Attention capture inside joint (MMDiT) attention: SD 3.x and Flux.1.

In joint attention the image and text tokens form one sequence and every query attends to all
keys through one softmax. The attention of an image query to a text token is that softmax's
entry in the text key's column; the recorder keeps exactly these entries (not renormalised
over the text keys), averages them over heads, places the image queries on their patch grid and
hands them to the UNet path's aggregation (models.attention.CrossAttentionRecorder: upsampled to
the latent grid, clamped at zero, summed over calls, averaged over layers).

Layouts (what each processor call sees):
- "sd3": JointTransformerBlock.attn with hidden_states = image tokens and encoder_hidden_states =
  text tokens; keys are [image, text]; queries and keys go through norm_q / norm_k (image) and
  norm_added_q / norm_added_k (text) when the model has them (SD 3.5). SD 3.5 Medium's second,
  image-only attention (attn2, no text) is not recorded.
- "flux": double-stream blocks as above but with the order [text, image] and rotary position
  embeddings on the joint sequence; single-stream blocks get hidden_states = [text, image]
  already concatenated (the first `text_tokens` rows are text).

The recording processor first calls the processor that was installed (so the network's outputs
are bit-identical) and then recomputes queries and keys from the same modules to get the
probabilities, in float32, in query chunks (the softmax normaliser runs over all keys). The
processors are restored on exit, also when the body raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from infodecomp.models.attention.capture import CrossAttentionRecorder, recording_processors

LAYOUTS = ("sd3", "flux")
CHUNK_BYTES = 1 << 28  # float32 score block per query chunk (256 MiB)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, S, H * d] -> [B, H, S, d]."""
    b, s, _ = x.shape
    return x.view(b, s, heads, -1).transpose(1, 2)


def _norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    return x if module is None else module(x)


def text_probabilities(
    q_img: torch.Tensor, keys: torch.Tensor, text: slice, scale: float
) -> torch.Tensor:
    """Softmax attention of image queries over all keys, text columns only.

    Args:
        q_img: [B, H, N, d] image queries.
        keys: [B, H, M, d] every key of the joint sequence.
        text: which of the M keys are text tokens.
        scale: the softmax temperature (1 / sqrt(d)).

    Returns:
        [B, N, T] float32, averaged over heads.
    """
    b, h, n, _ = q_img.shape
    m = keys.shape[2]
    k = keys.float()
    step = max(1, CHUNK_BYTES // max(1, b * h * m * 4))
    parts = []
    for start in range(0, n, step):
        q = q_img[:, :, start : start + step].float()  # [B, H, n', d]
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale  # [B, H, n', M]
        lse = torch.logsumexp(scores, dim=-1, keepdim=True)
        parts.append((scores[..., text] - lse).exp().mean(1))  # [B, n', T]
    return torch.cat(parts, dim=1)


def _projections(attn: Any, hidden: torch.Tensor, context: torch.Tensor | None):
    """(q, k, added q, added k) as [B, S, H * d] (added: None without a context)."""
    if getattr(attn, "fused_projections", False) and hasattr(attn, "to_qkv"):
        q, k, _ = attn.to_qkv(hidden).chunk(3, dim=-1)
        aq = ak = None
        if context is not None and hasattr(attn, "to_added_qkv"):
            aq, ak, _ = attn.to_added_qkv(context).chunk(3, dim=-1)
        return q, k, aq, ak
    q, k = attn.to_q(hidden), attn.to_k(hidden)
    aq = ak = None
    if context is not None:
        aq, ak = attn.add_q_proj(context), attn.add_k_proj(context)
    return q, k, aq, ak


class JointRecordingProcessor:
    """Wraps a joint-attention processor: same output, plus image->text probabilities recorded."""

    def __init__(
        self, inner: Any, name: str, recorder: CrossAttentionRecorder, layout: str
    ) -> None:
        self.inner, self.name, self.recorder, self.layout = inner, name, recorder, layout

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        if image_rotary_emb is None:
            out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask)
        else:
            out = self.inner(
                attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb
            )
        with torch.no_grad():
            probs = self.probabilities(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        if probs is not None:
            self.recorder.add(self.name, probs, probs.shape[0])
        return out

    def probabilities(
        self,
        attn: Any,
        hidden: torch.Tensor,
        context: torch.Tensor | None,
        rotary: Any = None,
    ) -> torch.Tensor | None:
        """[B, N_image, T] head-averaged attention of image queries to text keys, or None when the
        call has no text keys (SD 3.5's image-only attn2)."""
        heads = attn.heads
        t_len = self.recorder.token_count
        if self.layout == "sd3":
            if context is None:
                return None
            q, k, aq, ak = _projections(attn, hidden, context)
            q = _norm(attn.norm_q, _heads(q, heads))  # [B, H, N, d]
            k = _norm(attn.norm_k, _heads(k, heads))
            ak = _norm(getattr(attn, "norm_added_k", None), _heads(ak, heads))  # [B, H, T, d]
            keys = torch.cat([k, ak], dim=2)  # [image, text]
            n = q.shape[2]
            return text_probabilities(q, keys, slice(n, n + ak.shape[2]), q.shape[-1] ** -0.5)
        # flux: queries/keys as [B, S, H, d]; norms act on the last axis
        q, k, aq, ak = _projections(attn, hidden, context)
        q = _norm(attn.norm_q, q.unflatten(-1, (heads, -1)))
        k = _norm(attn.norm_k, k.unflatten(-1, (heads, -1)))
        if context is not None:  # double stream: [text, image]
            aq = _norm(attn.norm_added_q, aq.unflatten(-1, (heads, -1)))
            ak = _norm(attn.norm_added_k, ak.unflatten(-1, (heads, -1)))
            q, k = torch.cat([aq, q], dim=1), torch.cat([ak, k], dim=1)
            t_len = context.shape[1]
        if rotary is not None:
            from diffusers.models.embeddings import apply_rotary_emb

            q = apply_rotary_emb(q, rotary, sequence_dim=1)
            k = apply_rotary_emb(k, rotary, sequence_dim=1)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, H, S, d]
        return text_probabilities(q[:, :, t_len:], k, slice(0, t_len), q.shape[-1] ** -0.5)


@contextmanager
def capture_joint_attention(
    network: Any,
    layout: str,
    text_tokens: int,
    target_size: tuple[int, int],
    **recorder_options: Any,
) -> Iterator[CrossAttentionRecorder]:
    """Records image->text attention of every joint-attention call made inside the context.

    Args:
        network: an SD3Transformer2DModel or FluxTransformer2DModel (not a torch.compile wrapper).
        layout: "sd3" or "flux" (see the module doc).
        text_tokens: length of the text part of the joint sequence.
        target_size: the latent grid (h, w) the maps are upsampled to.
        recorder_options: further CrossAttentionRecorder settings, passed through (the
            aggregation options of the UNet path apply unchanged).

    Yields:
        The recorder; `recorder.maps()` gives [B, T, h, w] after the calls (all layers share one
        patch grid, so every layer is kept).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"joint attention layout {layout!r} is not one of: {', '.join(LAYOUTS)}")
    originals = dict(network.attn_processors)
    if not originals:
        raise ValueError(f"{type(network).__name__} has no attention processors to record")
    recorder = CrossAttentionRecorder(
        text_tokens, target_size, **{"skip_lowest": False, **recorder_options}
    )
    swapped = {
        k: JointRecordingProcessor(v, k[: -len(".processor")], recorder, layout)
        for k, v in originals.items()
    }

    with recording_processors(network, swapped, recorder):
        yield recorder

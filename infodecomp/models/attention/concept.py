"""ConceptAttention (Helbling et al., ICML 2025, arXiv 2502.04320) for joint-attention networks.

The method, as its public code computes it (the Flux code behind the paper's segmentation
numbers and the SD 3 code; read, restated here, not copied):

1. Concept tokens. Flux: every concept is encoded alone by the T5 encoder (the pipeline's own
   padding) and its first token's last hidden state is kept; SD 3: the concepts joined by
   spaces are encoded as one prompt (CLIP-L + CLIP-G penultimate states, zero-padded to T5's
   width, as every SD 3 prompt) and each concept's own CLIP positions are kept (the public code
   takes rows 1..n, the same rows when every concept is one CLIP token; here a concept of several
   tokens keeps its first). The tokens go through the network's context embedder.
2. A concept stream runs beside the image and text streams through the joint blocks, with the
   text stream's weights (norm1_context, the added q/k/v projections and their norms, to_add_out,
   norm2_context, ff_context). Flux: the double-stream blocks only, modulated by a time embedding
   of its own whose pooled text vector is zero (the public code zeroes it); rotary positions of
   concept tokens are those of id 0. SD 3: every joint block, modulated by the image's time
   embedding.
3. Attention is one-way: a concept query attends to the concept keys and the image keys (self +
   cross attention) with the concept and image values; image and text queries never see a
   concept key. The image stream is the network's own: the image output is that of the image
   queries over [text, image] keys, and the network's output stays bit-identical (the concept
   stream is computed in forward pre-hooks from the blocks' inputs and never fed back).
4. Output space: the attention outputs o_x (image tokens) and o_c (concepts), heads concatenated,
   before the output projections (to_out / to_add_out). In a recorded layer the map is
   softmax over concepts of o_x . o_c (SD 3: o_c scaled to unit length first, as its code does),
   one value per (concept, image patch).
5. Layers and noise level (the public image-encoding defaults): Flux: the last 4 double-stream
   blocks (15-18 of 19), one network call at flow time t of index 2 of a 4-step schedule
   (schnell: t = 0.5; a guidance-distilled model such as dev: that t after the
   resolution-dependent shift); SD 3: every joint block, one call at the scheduler's 4-step
   timestep index -2 (flow time 0.602 for shift 3). The maps are averaged over the layers (and
   over the samples when several noise draws are asked for).

Deviations (documented, deliberate): the image stream keeps the network's own conditioning (the
caption's pooled vector and the adapter's guidance, model.guidance = 1 for FLUX.1-dev), where the
public Flux segmentation code also gave the image stream the zero pooled vector and both streams
guidance 0 (schnell, the model of its experiments, has no guidance input); the public SD 3 code takes its image vectors
from the concept call (image queries over image + concept keys), here they are the network's own
(image + text keys, as the paper and the Flux code); the public diffusers Flux wrapper takes the
vectors after the output projections and normalises over patches, here the paper's definition
(before the projections, softmax over concepts) holds for both families.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

LAYOUTS = ("sd3", "flux")
FLUX_LAST_BLOCKS = 4  # the public Flux default: double-stream blocks 15..18 of 19
SCHEDULE_STEPS, SCHEDULE_INDEX = 4, 2  # one call at index 2 of a 4-step schedule (both codes)
BLOCK_ARGS = ("hidden_states", "encoder_hidden_states", "temb", "image_rotary_emb")
CONCEPT_AXIS = -2  # softmax axis of a [B, C, N] layer map: over the concepts
# the background concepts the public segmentation experiments add to every image's classes
BACKGROUND_CONCEPTS = ("background", "floor", "grass", "tree", "sky")


def default_layers(layout: str, n_blocks: int) -> tuple[int, ...]:
    """The published layer set: Flux the last FLUX_LAST_BLOCKS double-stream blocks, SD 3 all."""
    if layout == "flux":
        return tuple(range(max(0, n_blocks - FLUX_LAST_BLOCKS), n_blocks))
    return tuple(range(n_blocks))


def flux_flow_time(guided: bool, image_tokens: int) -> float:
    """Flow time of the public Flux encode: index 2 of linspace(1, 0, 5); shifted for a
    guidance-distilled model with mu linear in the image token count (0.5 at 256, 1.15 at 4096)."""
    t = 1.0 - SCHEDULE_INDEX / SCHEDULE_STEPS
    if not guided:
        return t
    mu = 0.5 + (image_tokens - 256) * (1.15 - 0.5) / (4096 - 256)
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def sd3_flow_time(num_train_timesteps: int, shift: float) -> float:
    """Flow time of the public SD 3 encode: the diffusers flow scheduler's sigma at timestep
    index -2 of a 4-step schedule (static shift)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    sched.set_timesteps(SCHEDULE_STEPS)
    return float(sched.timesteps[-2]) / num_train_timesteps


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention in float32: q [B, Sq, H, d], k / v [B, Sk, H, d] -> [B, Sq, H * d]."""
    q, k, v = (x.float().transpose(1, 2) for x in (q, k, v))  # [B, H, S, d]
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


def layer_map(o_x: torch.Tensor, o_c: torch.Tensor, unit_concepts: bool) -> torch.Tensor:
    """One layer's saliency [B, C, N]: softmax over concepts of o_x . o_c (o_x [B, N, D],
    o_c [B, C, D]; concepts scaled to unit length first when `unit_concepts`)."""
    if unit_concepts:
        o_c = o_c / (o_c.norm(dim=-1, keepdim=True) + 1e-8)
    scores = torch.einsum("bcd,bnd->bcn", o_c.float(), o_x.float())
    return scores.softmax(CONCEPT_AXIS)


def image_context(
    text: tuple[torch.Tensor, torch.Tensor], concepts: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values) an image query sees besides the image's own: the text's only. Concepts
    never enter the image stream (one-way attention)."""
    return text


def saliency_vectors(
    o_x: torch.Tensor, o_c: torch.Tensor, v_x: torch.Tensor, v_c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The space the maps are read in: the attention outputs (o_x [B, N, H d], o_c [B, C, H d]),
    not the value vectors v_x, v_c [B, S, H, d] (the paper's value-space ablation)."""
    return o_x, o_c


def _qkv(attn: Any, x: torch.Tensor, added: bool) -> tuple[torch.Tensor, ...]:
    """(q, k, v) [B, S, H, d] of one stream, q / k normalised as the network does."""
    names = ("add_q_proj", "add_k_proj", "add_v_proj") if added else ("to_q", "to_k", "to_v")
    q, k, v = (getattr(attn, n)(x).unflatten(-1, (attn.heads, -1)) for n in names)
    nq, nk = ("norm_added_q", "norm_added_k") if added else ("norm_q", "norm_k")
    if getattr(attn, nq, None) is not None:
        q = getattr(attn, nq)(q)
    if getattr(attn, nk, None) is not None:
        k = getattr(attn, nk)(k)
    return q, k, v


def _rope(x: torch.Tensor, freqs: Any) -> torch.Tensor:
    if freqs is None:
        return x
    from diffusers.models.embeddings import apply_rotary_emb

    return apply_rotary_emb(x, freqs, sequence_dim=1)


def _rows(freqs: Any, rows: slice) -> Any:
    return None if freqs is None else tuple(f[rows] for f in freqs)


def _modulate(norm: Any, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """(normed x, (gate_msa, shift_mlp, scale_mlp, gate_mlp) or None for a pre-only block)."""
    out = norm(x, emb=temb) if not _continuous(norm) else norm(x, temb)
    if isinstance(out, torch.Tensor):
        return out, None
    return out[0], tuple(out[1:5])


def _continuous(norm: Any) -> bool:
    return type(norm).__name__ == "AdaLayerNormContinuous"


class ConceptRecorder:
    """Accumulates ConceptAttention maps over network calls (filled by capture_concept_attention).

    Attributes:
        layers: the recorded block indices.
        calls: network calls seen; `vectors` keeps, for the last call, block -> (o_x, o_c).
    """

    def __init__(self, layout: str, layers: Sequence[int], grid: tuple[int, int]) -> None:
        self.layout, self.layers, self.grid = layout, tuple(layers), grid
        self.calls = 0
        self.vectors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._sum: torch.Tensor | None = None
        self._rows = 0

    def add_call(self) -> None:
        """Folds the last call's recorded layers into the running mean."""
        if not self.vectors:
            return
        parts = [
            layer_map(o_x, o_c, unit_concepts=self.layout == "sd3")
            for o_x, o_c in self.vectors.values()
        ]
        m = torch.stack(parts).mean(0)  # [B, C, N]
        self._sum = m.sum(0) if self._sum is None else self._sum + m.sum(0)
        self._rows += m.shape[0]
        self.vectors = {}

    def maps(self) -> torch.Tensor:
        """Mean map over every row of every call [C, gh, gw] (float32, rows sum to 1 over C)."""
        self.add_call()
        if self._sum is None:
            raise RuntimeError("no concept attention was recorded; call the network inside")
        return (self._sum / self._rows).view(-1, *self.grid)


class ConceptStream:
    """The concept tokens' residual stream through one network call (see the module doc)."""

    def __init__(
        self,
        network: Any,
        layout: str,
        tokens: torch.Tensor,
        recorder: ConceptRecorder,
        blocks: Sequence[Any],
    ) -> None:
        self.network, self.layout, self.recorder = network, layout, recorder
        self.tokens = tokens  # [C, D_text] before the context embedder
        self.index = {id(b): i for i, b in enumerate(blocks)}
        self.state: torch.Tensor | None = None  # [B, C, D] the concept stream
        self.temb: torch.Tensor | None = None  # flux: the concept stream's time embedding
        self.freqs: Any = None  # flux: rotary (cos, sin) of [concepts, image]

    def start(self, module: Any, args: tuple, kwargs: dict) -> None:
        """Network pre-hook: the concept stream's input (and, for Flux, its own embeddings)."""
        self.recorder.add_call()
        self.recorder.calls += 1
        net = self.network
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        b = hidden.shape[0]
        c = net.context_embedder(self.tokens.to(hidden.device, net.dtype))  # [C, D]
        self.state = c.unsqueeze(0).expand(b, -1, -1)
        if self.layout != "flux":
            return
        dtype = net.x_embedder.weight.dtype
        t = kwargs["timestep"].to(dtype) * 1000
        pooled = torch.zeros_like(kwargs["pooled_projections"])  # the public code zeroes it
        guidance = kwargs.get("guidance")
        if guidance is None:
            self.temb = net.time_text_embed(t, pooled)
        else:
            self.temb = net.time_text_embed(t, guidance.to(dtype) * 1000, pooled)
        img_ids = kwargs["img_ids"]
        img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
        ids = torch.cat([img_ids.new_zeros(self.tokens.shape[0], img_ids.shape[-1]), img_ids])
        self.freqs = net.pos_embed(ids)

    def block(self, module: Any, args: tuple, kwargs: dict) -> None:
        """Block pre-hook: this block's image output and concept output from the block's inputs;
        the concept stream moves on (the block itself runs untouched afterwards)."""
        if self.state is None:
            return
        kw = {**dict(zip(BLOCK_ARGS, args, strict=False)), **kwargs}  # positional: checkpointing
        with torch.no_grad():
            self._step(module, self.index[id(module)], kw)

    def _step(self, blk: Any, index: int, kw: dict) -> None:
        hidden, text, temb = kw["hidden_states"], kw["encoder_hidden_states"], kw["temb"]
        x, _ = _modulate(blk.norm1, hidden, temb)
        t, _ = _modulate(blk.norm1_context, text, temb)
        ctemb = self.temb if self.layout == "flux" else temb
        c, mod = _modulate(blk.norm1_context, self.state, ctemb)
        attn = blk.attn
        qx, kx, vx = _qkv(attn, x, added=False)
        qt, kt, vt = _qkv(attn, t, added=True)
        qc, kc, vc = _qkv(attn, c, added=True)
        n_t, n_c = qt.shape[1], qc.shape[1]
        if self.layout == "flux":  # rotary over [text, image] and [concepts, image]
            freqs = kw.get("image_rotary_emb")
            qt, kt = _rope(qt, _rows(freqs, slice(0, n_t))), _rope(kt, _rows(freqs, slice(0, n_t)))
            img_f = _rows(freqs, slice(n_t, None))
            qx, kx = _rope(qx, img_f), _rope(kx, img_f)
            con_f = _rows(self.freqs, slice(0, n_c))
            qc, kc = _rope(qc, con_f), _rope(kc, con_f)
        o_c = attend(qc, torch.cat([kc, kx], 1), torch.cat([vc, vx], 1))  # [B, C, H d]
        if index in self.recorder.layers:
            ko, vo = image_context((kt, vt), (kc, vc))
            o_x = attend(qx, torch.cat([ko, kx], 1), torch.cat([vo, vx], 1))  # [B, N, H d]
            self.recorder.vectors[index] = saliency_vectors(o_x, o_c, vx, vc)
        if mod is None or getattr(attn, "to_add_out", None) is None:
            self.state = None  # SD 3's last block: the text (and concept) stream ends here
            return
        gate_msa, shift, scale, gate_mlp = mod
        s = self.state + gate_msa.unsqueeze(1) * attn.to_add_out(o_c.to(self.state.dtype))
        h = blk.norm2_context(s) * (1 + scale[:, None]) + shift[:, None]
        self.state = s + gate_mlp.unsqueeze(1) * blk.ff_context(h)


def joint_blocks(network: Any, layout: str) -> list[Any]:
    """The blocks a concept stream passes: Flux's double-stream blocks, SD 3's joint blocks."""
    if layout not in LAYOUTS:
        raise ValueError(f"concept attention layout {layout!r} is not one of: {', '.join(LAYOUTS)}")
    return list(network.transformer_blocks)


@contextmanager
def capture_concept_attention(
    network: Any,
    layout: str,
    tokens: torch.Tensor,
    grid: tuple[int, int],
    layers: Sequence[int] | None = None,
) -> Iterator[ConceptRecorder]:
    """Computes ConceptAttention maps during the network calls made inside the context.

    Args:
        network: an SD3Transformer2DModel or FluxTransformer2DModel (not a torch.compile
            wrapper), called with keyword arguments as the diffusers pipelines call it.
        layout: "sd3" or "flux".
        tokens: [C, D_text] concept token embeddings (before the context embedder).
        grid: the image patch grid (gh, gw) of the network's image tokens.
        layers: block indices whose maps are averaged; default `default_layers`.

    Yields:
        The recorder; `recorder.maps()` gives [C, gh, gw] (mean over layers and rows). The
        hooks are removed on exit, also when the body raises; the network's outputs are those
        it computes without the context.
    """
    blocks = joint_blocks(network, layout)
    chosen = default_layers(layout, len(blocks)) if layers is None else tuple(layers)
    bad = [i for i in chosen if not 0 <= i < len(blocks)]
    if bad or not chosen:
        raise ValueError(
            f"concept attention layers {list(chosen)} must be a non-empty subset of 0..{len(blocks) - 1}"
        )
    recorder = ConceptRecorder(layout, chosen, grid)
    stream = ConceptStream(network, layout, tokens, recorder, blocks)
    handles = [network.register_forward_pre_hook(stream.start, with_kwargs=True)]
    handles += [b.register_forward_pre_hook(stream.block, with_kwargs=True) for b in blocks]
    try:
        yield recorder
    finally:
        for h in handles:
            h.remove()


def draw_noise(shape: tuple[int, ...], seed: int, key: str) -> torch.Tensor:
    """Standard normal noise [shape] float32 drawn from (seed, key) alone."""
    import hashlib

    digest = hashlib.blake2b(repr((int(seed), str(key), "concept")).encode(), digest_size=8)
    gen = torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") % (2**63))
    return torch.randn(shape, generator=gen)


class ConceptAttentionMixin:
    """`concept_maps` for a joint-attention LatentDiffusionDenoiser family. The family sets
    CONCEPT_LAYOUT and gives `_concept_tokens` (concepts -> [C, D_text]), `concept_flow_time`
    (the published noise level) and `concept_grid` (the image patch grid)."""

    CONCEPT_LAYOUT = ""
    network: Any
    device: torch.device
    _tracing: bool

    def _concept_tokens(self, concepts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def concept_flow_time(self) -> float:
        raise NotImplementedError

    def concept_grid(self) -> tuple[int, int]:
        raise NotImplementedError

    @torch.no_grad()
    def concept_maps(
        self,
        latent: torch.Tensor,
        caption: str,
        concepts: list[str],
        *,
        key: str,
        seed: int = 0,
        flow_time: float | None = None,
        layers: Sequence[int] | None = None,
        samples: int = 1,
    ) -> torch.Tensor:
        """ConceptAttention maps [K, gh, gw] (CPU, float32) of one latent [C, h, w].

        `samples` noise draws (from (seed, key)) at flow time `flow_time` (default: the
        published one) are run as one batch of network calls (one evaluation each); the maps are
        averaged over them. Concept 0 is usually the word being localised.
        """
        from infodecomp.estimators.channel import noisy_channel
        from infodecomp.estimators.protocol import repeat_rows
        from infodecomp.models.dynamics.conversions import logsnr_of_flow_time

        if not concepts:
            raise ValueError("concept_maps needs at least one concept")
        t = self.concept_flow_time() if flow_time is None else float(flow_time)
        lv = logsnr_of_flow_time(torch.full((samples,), t, dtype=torch.float64)).float()
        x = latent.float().cpu()
        eps = draw_noise((samples, *x.shape), seed, key)  # [S, C, h, w]
        z = noisy_channel(x.expand_as(eps), lv, eps)
        cond = repeat_rows(self.encode_conditions([caption]), samples)  # type: ignore[attr-defined]
        tokens = self._concept_tokens(list(concepts))
        grid = self.concept_grid()
        with capture_concept_attention(
            self.network, self.CONCEPT_LAYOUT, tokens, grid, layers
        ) as rec:
            self._tracing = True  # the plain network (hooks do not reach a compiled wrapper)
            try:
                self.eps_hat(z, lv, cond)  # type: ignore[attr-defined]
            finally:
                self._tracing = False
        return rec.maps().cpu()

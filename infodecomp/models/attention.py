"""Cross-attention capture on a diffusers UNet with DAAM's aggregation (Tang et al., 2023).

Inside `capture_cross_attention(unet, ...)` every cross-attention module (the `attn2` of each
transformer block) runs through a recording processor. It delegates the attention output to the
processor that was installed before (so the UNet's outputs are unchanged, bit for bit) and in
addition computes the softmax attention probabilities of each pixel to each text token. Per
layer and call these are averaged over heads, reshaped to the layer's spatial grid, upsampled
bicubic to the latent grid and clamped at zero (bicubic overshoots); maps are summed over all
UNet calls in the context and averaged over layers, leaving out the layers at the lowest
resolution (DAAM leaves out the 8 x 8 mid block of Stable Diffusion). Rows of the batch are
kept apart. DAAM averages over (layer, head) pairs; averaging heads within a layer first gives
each layer equal weight, which differs when layers have different head counts (SD 2.x).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from infodecomp.estimators.channel import noisy_channel
from infodecomp.estimators.protocol import repeat_rows
from infodecomp.models.ode import ddim_generate, ddim_invert, ddim_logsnrs

CROSS_SUFFIX = "attn2.processor"


def _layer_grid(tokens: int, size: tuple[int, int]) -> tuple[int, int]:
    """Spatial grid of a layer with `tokens` pixels in a UNet whose input grid is `size`."""
    h, w = size
    while h * w > tokens:
        h, w = (h + 1) // 2, (w + 1) // 2  # diffusers downsamplers pad, so odd sizes round up
    if h * w != tokens:
        raise ValueError(
            f"cannot place {tokens} attention pixels on a grid reached from latent size {size}"
        )
    return h, w


class CrossAttentionRecorder:
    """Accumulates DAAM-aggregated cross-attention maps; filled by `capture_cross_attention`.

    Attributes:
        calls: number of UNet forward calls made inside the context.
    """

    def __init__(
        self, token_count: int, target_size: tuple[int, int], skip_lowest: bool = True
    ) -> None:
        self.token_count = token_count
        self.target_size = (int(target_size[0]), int(target_size[1]))
        self.skip_lowest = skip_lowest
        self.calls = 0
        self._sums: dict[tuple[int, int], torch.Tensor] = {}  # grid -> [B, T, h, w] float32
        self._layers: dict[tuple[int, int], set[str]] = {}  # grid -> layer names seen

    def add(self, name: str, probs: torch.Tensor, batch: int) -> None:
        """Adds one layer call: probs [B * heads, pixels, T] of softmax attention."""
        heads = probs.shape[0] // batch
        grid = _layer_grid(probs.shape[1], self.target_size)
        m = probs.float().view(batch, heads, *probs.shape[1:]).mean(1)  # [B, pixels, T]
        m = m.transpose(1, 2).reshape(batch, probs.shape[2], *grid)  # [B, T, gh, gw]
        if grid != self.target_size:
            m = F.interpolate(m, size=self.target_size, mode="bicubic", align_corners=False)
        m = m.clamp_(min=0)  # [B, T, h, w]
        if grid in self._sums:
            if self._sums[grid].shape[0] != batch:
                raise ValueError(
                    f"batch size changed from {self._sums[grid].shape[0]} to {batch} inside one "
                    "capture; open one capture per batch size"
                )
            self._sums[grid] += m
        else:
            self._sums[grid] = m.clone()
        self._layers.setdefault(grid, set()).add(name)

    @property
    def grids(self) -> list[tuple[int, int]]:
        """Spatial grids of the recorded layers, finest first."""
        return sorted(self._sums, key=lambda g: -g[0] * g[1])

    def kept_grids(self) -> list[tuple[int, int]]:
        """The grids that enter the maps (all but the coarsest when skip_lowest and several exist)."""
        grids = self.grids
        if self.skip_lowest and len(grids) > 1:
            grids = grids[:-1]
        return grids

    def maps(self) -> torch.Tensor:
        """Aggregated maps [B, T, h, w] float32, non-negative: summed over calls, mean over layers."""
        if not self._sums:
            raise RuntimeError(
                "no cross-attention was recorded; call the UNet inside the capture context"
            )
        kept = self.kept_grids()
        total = sum(self._sums[g] for g in kept)
        n_layers = sum(len(self._layers[g]) for g in kept)
        return total / n_layers


class RecordingProcessor:
    """Wraps an attention processor: same output, plus the attention probabilities recorded."""

    def __init__(self, inner: Any, name: str, recorder: CrossAttentionRecorder) -> None:
        self.inner = inner
        self.name = name
        self.recorder = recorder

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        if (
            encoder_hidden_states is not None
            and encoder_hidden_states.shape[1] == self.recorder.token_count
        ):
            with torch.no_grad():
                self._record(attn, hidden_states, encoder_hidden_states, attention_mask)
        return out

    def _record(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        context: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> None:
        x = hidden_states
        if x.ndim == 4:
            b, c, h, w = x.shape
            x = x.view(b, c, h * w).transpose(1, 2)  # [B, HW, C]
        if attn.group_norm is not None:
            x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch = x.shape[0]
        query = attn.head_to_batch_dim(attn.to_q(x))  # [B * heads, HW, d]
        key = attn.head_to_batch_dim(attn.to_k(context))  # [B * heads, T, d]
        if attn.norm_q is not None or attn.norm_k is not None:
            raise NotImplementedError("attention capture does not support q/k normalisation layers")
        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[1], batch)
        scores = (
            torch.bmm(query.float(), key.float().transpose(1, 2)) * attn.scale
        )  # [B * heads, HW, T]
        if mask is not None:
            scores = scores + mask.float()
        self.recorder.add(self.name, scores.softmax(-1), batch)


@contextmanager
def capture_cross_attention(
    unet: Any,
    token_count: int = 77,
    target_size: tuple[int, int] = (64, 64),
    skip_lowest: bool = True,
) -> Iterator[CrossAttentionRecorder]:
    """Records DAAM cross-attention maps of every UNet call made inside the context.

    Args:
        unet: a diffusers UNet2DConditionModel (not a torch.compile wrapper).
        token_count: length of the prompt encoding (77 for CLIP).
        target_size: the latent grid (h, w) the maps are upsampled to.
        skip_lowest: leave out the layers at the coarsest resolution (DAAM's choice).

    Yields:
        The recorder; `recorder.maps()` gives [B, T, h, w] after the calls.

    The original processors are restored on exit, also when the body raises.
    """
    originals = dict(unet.attn_processors)
    cross = [k for k in originals if k.endswith(CROSS_SUFFIX)]
    if not cross:
        raise ValueError(
            "the UNet has no cross-attention modules (no attention processors ending in 'attn2.processor')"
        )
    recorder = CrossAttentionRecorder(token_count, target_size, skip_lowest)
    swapped = {
        k: (RecordingProcessor(v, k[: -len(".processor")], recorder) if k in cross else v)
        for k, v in originals.items()
    }

    def count_call(module: Any, args: Any) -> None:
        recorder.calls += 1

    handle = unet.register_forward_pre_hook(count_call)
    unet.set_attn_processor(swapped)
    try:
        yield recorder
    finally:
        handle.remove()
        unet.set_attn_processor(dict(originals))


@torch.no_grad()
def attention_information_maps(
    denoiser: Any,
    latent: torch.Tensor,
    prompt: str,
    logsnr: torch.Tensor,
    eps: torch.Tensor,
    max_batch: int = 64,
) -> torch.Tensor:
    """ "Attention+Information": attention summed over single UNet calls on noised real latents.

    Call i sees z_i = noisy_channel(latent, logsnr_i, eps_i) (paper section 4, importance-sampled
    logsnr). `denoiser` is a StableDiffusionDenoiser (it needs `trace`).

    Args:
        latent: the image latent [C, h, w].
        prompt: the caption.
        logsnr: [S] noise levels.
        eps: [S, C, h, w] noise draws.
        max_batch: UNet rows per call.

    Returns:
        [T, h, w] float32 on CPU.
    """
    cond = denoiser.encode_conditions([prompt])  # [1, T, D]
    x = latent.to(denoiser.device, torch.float32)  # [C, h, w]
    total = None
    for start in range(0, len(logsnr), max_batch):
        lv = logsnr[start : start + max_batch].to(denoiser.device)  # [b]
        e = eps[start : start + max_batch].to(denoiser.device, torch.float32)  # [b, C, h, w]
        z = noisy_channel(x.expand_as(e), lv, e)  # [b, C, h, w]
        with denoiser.trace() as rec:
            denoiser.eps_hat(z, lv, repeat_rows(cond, len(lv)))
        part = rec.maps().sum(0)  # [T, h, w]
        total = part if total is None else total + part
    if total is None:
        raise ValueError("attention_information_maps needs at least one logsnr value")
    return total.cpu()


@torch.no_grad()
def daam_maps(denoiser: Any, latent: torch.Tensor, prompt: str, n_steps: int = 50) -> torch.Tensor:
    """DAAM on a real image: DDIM inversion of the latent [C, h, w] under the prompt, then DDIM
    reconstruction with the prompt; attention traced over the n_steps reconstruction calls.

    Returns:
        [T, h, w] float32 on CPU.
    """
    cond = denoiser.encode_conditions([prompt])  # [1, T, D]
    levels = ddim_logsnrs(denoiser.schedule, n_steps)  # [n] from least to most noisy
    x = latent[None].to(denoiser.device, torch.float32)  # [1, C, h, w]
    z_top = ddim_invert(denoiser, x, cond, levels)  # [1, C, h, w]
    with denoiser.trace() as rec:
        ddim_generate(denoiser, z_top, cond, levels)
    return rec.maps()[0].cpu()

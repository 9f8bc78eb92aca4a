"""Cross-attention capture on a diffusers UNet, aggregated as DAAM does or as a per-layer mean.

Inside `capture_cross_attention(unet, ...)` every cross-attention module (the `attn2` of each
transformer block) runs through a recording processor. It delegates the attention output to the
processor that was installed before (so the UNet's outputs are unchanged, bit for bit) and in
addition computes the softmax attention probabilities of each pixel to each text token. Rows of
the batch are kept apart unless `pool_rows` sums them. Two aggregations (`AGGREGATIONS`):

`daam` -- the aggregation of DAAM (Tang et al., 2023; the `daam` package, version 0.2.0, and
the earlier release the published localisation code ran, which aggregates the same way), the
baseline of the paper's Table 3. In order:
  1. per layer, head and token, the probabilities on the layer's own grid are summed over all
     UNet calls (the denoising steps) made inside the context;
  2. each (layer, head) sum is resized bicubic (align_corners=False) to the latent grid and
     clamped at zero (bicubic undershoots), i.e. the clamp acts per head, after the sum over
     steps;
  3. the mean over all (layer, head) pairs is taken. That is the heads summed within each layer
     and the layers averaged, up to one constant factor (the mean number of heads per layer), so
     a layer weighs in proportion to its head count: on SD 2.1 base the 64 / 32 / 16 levels with
     5 / 10 / 20 heads carry 1/7, 2/7 and 4/7 of the map;
  4. layers: those of the down and up blocks, the mid block left out (as is any layer whose grid
     is 1/8 of the latent side, DAAM's other rule; on Stable Diffusion only the mid block is).
  A word's map is then expanded bicubic to the image size before thresholding
  (`expand_attention_map`).

`layer-mean` -- infodecomp's earlier aggregation, kept bit for bit: per layer and call the heads
are averaged, the map resized bicubic to the latent grid and clamped at zero, maps are summed
over calls and averaged over layers (each layer weighs the same), the coarsest grid left out; a
word's map is expanded bilinearly to the image size.

Where the `daam` option still differs from running the daam package:
- Word -> tokens: infodecomp's rule (`models.tokens.word_token_indices`: a run of tokens that
  starts at a word boundary) is kept. DAAM matches the word's pieces anywhere in the caption,
  with end-of-word markers stripped, so it also hits a word whose pieces occur inside another
  word ("tie" in "necktie"); on the published COCO-IT manifest the rules differ on 3 of 6,927
  rows ("ski" also matching the first piece of "skiers").
- Conditional rows: DAAM drops the first half of the (batch x heads) rows, meant as the
  unconditional half of a classifier-free-guidance batch. infodecomp runs no guidance and keeps
  every head of every row. (The published localisation code ran DAAM with guidance scale 1,
  a batch of one, so that filter dropped the first floor(heads / 2) heads of every layer there;
  infodecomp does not reproduce that.)
- Precision: probabilities are computed in float32 from the module's query and key
  projections; the published runs traced under float16 autocast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from infodecomp.estimators.channel import noisy_channel
from infodecomp.estimators.protocol import repeat_rows
from infodecomp.models.dynamics.ode import ddim_generate, ddim_invert, ddim_logsnrs

CROSS_SUFFIX = "attn2.processor"
AGGREGATIONS = ("daam", "layer-mean")
MID_BLOCK = "mid_block"  # attribute of diffusers' UNet2DConditionModel that DAAM leaves out


def check_aggregation(aggregation: str) -> str:
    """Returns `aggregation` if it is one of AGGREGATIONS, else raises a one-line ValueError."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"attention aggregation '{aggregation}' is not one of: {', '.join(AGGREGATIONS)}"
        )
    return aggregation


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
    """Accumulates cross-attention maps; filled by `capture_cross_attention`.

    Args:
        token_count: length of the prompt encoding; calls with another context length are ignored.
        target_size: the latent grid (h, w) the maps are resized to.
        skip_lowest: leave out the layers the aggregation leaves out (`layer-mean`: the coarsest
            grid; `daam`: the mid block and layers at 1/8 of the latent side); False keeps all.
        aggregation: "daam" or "layer-mean" (module docstring).
        pool_rows: sum the batch rows as they arrive (one map for many single-image calls, as
            one DAAM trace over many UNet calls); the batch size may then change between calls.

    Attributes:
        calls: number of UNet forward calls made inside the context.
    """

    def __init__(
        self,
        token_count: int,
        target_size: tuple[int, int],
        skip_lowest: bool = True,
        aggregation: str = "daam",
        pool_rows: bool = False,
    ) -> None:
        self.token_count = token_count
        self.target_size = (int(target_size[0]), int(target_size[1]))
        self.skip_lowest = skip_lowest
        self.aggregation = check_aggregation(aggregation)
        self.pool_rows = pool_rows
        self.calls = 0
        # layer-mean: grid -> [B, T, h, w] float32, summed over calls and layers of that grid
        self._sums: dict[tuple[int, int], torch.Tensor] = {}
        self._layers: dict[tuple[int, int], set[str]] = {}  # grid -> layer names seen
        # daam: layer -> [B, k, T, gh, gw] summed over calls on the layer's own grid; k = heads,
        # or 1 (heads already summed) for layers on the target grid, which need no resizing
        self._heads: dict[str, torch.Tensor] = {}
        self._n_heads: dict[str, int] = {}
        self._grid: dict[str, tuple[int, int]] = {}  # layer -> its grid (both aggregations)

    def add(self, name: str, probs: torch.Tensor, batch: int) -> None:
        """Adds one layer call: probs [B * heads, pixels, T] of softmax attention."""
        grid = _layer_grid(probs.shape[1], self.target_size)
        self._grid[name] = grid
        if self.aggregation == "daam":
            self._add_daam(name, probs, batch, grid)
            return
        heads = probs.shape[0] // batch
        m = probs.float().view(batch, heads, *probs.shape[1:]).mean(1)  # [B, pixels, T]
        m = m.transpose(1, 2).reshape(batch, probs.shape[2], *grid)  # [B, T, gh, gw]
        if grid != self.target_size:
            m = F.interpolate(m, size=self.target_size, mode="bicubic", align_corners=False)
        m = m.clamp_(min=0)  # [B, T, h, w]
        if self.pool_rows:
            m = m.sum(0, keepdim=True)  # [1, T, h, w]
        if grid in self._sums:
            self._check_rows(self._sums[grid].shape[0], m.shape[0])
            self._sums[grid] += m
        else:
            self._sums[grid] = m.clone()
        self._layers.setdefault(grid, set()).add(name)

    def _add_daam(self, name: str, probs: torch.Tensor, batch: int, grid: tuple[int, int]) -> None:
        heads = probs.shape[0] // batch
        tokens = probs.shape[2]
        m = probs.float().view(batch, heads, -1, tokens).transpose(2, 3)  # [B, heads, T, pixels]
        m = m.reshape(batch, heads, tokens, *grid)  # [B, heads, T, gh, gw]
        if grid == self.target_size:
            # no resizing, and probabilities are >= 0, so the clamp after the sum over steps
            # changes nothing: the heads can be summed now (saves memory on the finest layers)
            m = m.sum(1, keepdim=True)  # [B, 1, T, h, w]
        if self.pool_rows:
            m = m.sum(0, keepdim=True)
        if name in self._heads:
            self._check_rows(self._heads[name].shape[0], m.shape[0])
            self._heads[name] += m
        else:
            self._heads[name] = m.clone()
            self._n_heads[name] = heads

    @staticmethod
    def _check_rows(before: int, now: int) -> None:
        if before != now:
            raise ValueError(
                f"batch size changed from {before} to {now} inside one capture; open one capture "
                "per batch size (or pool_rows=True to sum the rows)"
            )

    @property
    def grids(self) -> list[tuple[int, int]]:
        """Spatial grids of the recorded layers, finest first."""
        return sorted(set(self._grid.values()), key=lambda g: -g[0] * g[1])

    def kept_layers(self) -> list[str]:
        """Names of the recorded layers that enter the maps, in the order first seen."""
        if self.aggregation == "layer-mean":
            kept = set(self.kept_grids())
            return [n for n, g in self._grid.items() if g in kept]
        if not self.skip_lowest:
            return list(self._heads)
        h, w = self.target_size
        return [
            n
            for n in self._heads
            if n.split(".")[0] != MID_BLOCK
            and (8 * self._grid[n][0], 8 * self._grid[n][1]) != (h, w)
        ]

    def kept_grids(self) -> list[tuple[int, int]]:
        """The grids of the layers that enter the maps, finest first (layer-mean: all but the
        coarsest when skip_lowest and several exist)."""
        if self.aggregation == "daam":
            kept = {self._grid[n] for n in self.kept_layers()}
            return [g for g in self.grids if g in kept]
        grids = self.grids
        if self.skip_lowest and len(grids) > 1:
            grids = grids[:-1]
        return grids

    def maps(self) -> torch.Tensor:
        """Aggregated maps [B, T, h, w] float32, non-negative (B = 1 with pool_rows)."""
        if not self._grid:
            raise RuntimeError(
                "no cross-attention was recorded; call the UNet inside the capture context"
            )
        if self.aggregation == "daam":
            return self._daam_maps()
        kept = self.kept_grids()
        total = sum(self._sums[g] for g in kept)
        n_layers = sum(len(self._layers[g]) for g in kept)
        return total / n_layers

    def _daam_maps(self) -> torch.Tensor:
        kept = self.kept_layers()
        if not kept:
            raise RuntimeError(
                f"no cross-attention layer is left after leaving out the {MID_BLOCK} and layers at "
                "1/8 of the latent side; capture with skip_lowest=False to keep them"
            )
        total, count = None, 0
        for name in kept:
            s = self._heads[name]  # [B, k, T, gh, gw]
            b, k, tokens = s.shape[:3]
            x = s.reshape(b * k, tokens, *s.shape[3:])  # one bicubic resize per (row, head)
            if self._grid[name] != self.target_size:
                x = F.interpolate(x, size=self.target_size, mode="bicubic", align_corners=False)
                x = x.clamp_(min=0)  # per head, after the sum over calls
            part = x.view(b, k, tokens, *self.target_size).sum(1)  # [B, T, h, w]
            total = part if total is None else total + part
            count += self._n_heads[name]
        return total / count  # mean over (layer, head) pairs


def expand_attention_map(
    heat: torch.Tensor, size: int | tuple[int, int], aggregation: str
) -> torch.Tensor:
    """A word's attention map [h, w] on the image grid `size`, before thresholding.

    `daam`: bicubic (align_corners=False), as DAAM expands a word map to the image; the result
    may undershoot below zero, which the min-max normalisation of the IoU absorbs. `layer-mean`:
    bilinear (`preprocess.upsample_map`). Returned as float32, unchanged when already that size.
    """
    from infodecomp.models.families.preprocess import upsample_map

    check_aggregation(aggregation)
    target = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if aggregation == "layer-mean":
        return upsample_map(heat, target)
    if tuple(heat.shape[-2:]) == target:
        return heat.float()
    return F.interpolate(heat.float()[None, None], target, mode="bicubic", align_corners=False)[
        0, 0
    ]


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
    aggregation: str = "daam",
    pool_rows: bool = False,
) -> Iterator[CrossAttentionRecorder]:
    """Records cross-attention maps of every UNet call made inside the context.

    Args:
        unet: a diffusers UNet2DConditionModel (not a torch.compile wrapper).
        token_count: length of the prompt encoding (77 for CLIP).
        target_size: the latent grid (h, w) the maps are resized to.
        skip_lowest: leave out the layers the aggregation leaves out (see CrossAttentionRecorder).
        aggregation: "daam" (DAAM's aggregation) or "layer-mean" (module docstring).
        pool_rows: sum the batch rows into one map (see CrossAttentionRecorder).

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
    recorder = CrossAttentionRecorder(token_count, target_size, skip_lowest, aggregation, pool_rows)
    swapped = {
        k: (RecordingProcessor(v, k[: -len(".processor")], recorder) if k in cross else v)
        for k, v in originals.items()
    }

    with recording_processors(unet, swapped, recorder):
        yield recorder


@contextmanager
def recording_processors(
    network: Any, swapped: dict[str, Any], recorder: CrossAttentionRecorder
) -> Iterator[None]:
    """Installs `swapped` attention processors and counts the network's calls in `recorder`;
    the original processors come back on exit, also when the body raises."""
    originals = dict(network.attn_processors)

    def count_call(module: Any, args: Any) -> None:
        recorder.calls += 1

    handle = network.register_forward_pre_hook(count_call)
    network.set_attn_processor(swapped)
    try:
        yield
    finally:
        handle.remove()
        network.set_attn_processor(originals)


@torch.no_grad()
def attention_information_maps(
    denoiser: Any,
    latent: torch.Tensor,
    prompt: str,
    logsnr: torch.Tensor,
    eps: torch.Tensor,
    max_batch: int = 64,
    aggregation: str = "daam",
) -> torch.Tensor:
    """ "Attention+Information": attention summed over single UNet calls on noised real latents.

    Call i sees z_i = noisy_channel(latent, logsnr_i, eps_i) (paper section 4, importance-sampled
    logsnr). `denoiser` is a StableDiffusionDenoiser (it needs `trace`). With `daam` all calls
    form one trace (the rows pooled before the per-head clamp), as the published code traced
    them; with `layer-mean` each chunk's maps are summed over its rows.

    Args:
        latent: the image latent [C, h, w].
        prompt: the caption.
        logsnr: [S] noise levels.
        eps: [S, C, h, w] noise draws.
        max_batch: UNet rows per call.
        aggregation: "daam" or "layer-mean".

    Returns:
        [T, h, w] float32 on CPU.
    """
    check_aggregation(aggregation)
    if len(logsnr) == 0:
        raise ValueError("attention_information_maps needs at least one logsnr value")
    cond = denoiser.encode_conditions([prompt])  # [1, T, D]
    x = latent.to(denoiser.device, torch.float32)  # [C, h, w]

    def run_chunk(start: int) -> None:
        lv = logsnr[start : start + max_batch].to(denoiser.device)  # [b]
        e = eps[start : start + max_batch].to(denoiser.device, torch.float32)  # [b, C, h, w]
        z = noisy_channel(x.expand_as(e), lv, e)  # [b, C, h, w]
        denoiser.eps_hat(z, lv, repeat_rows(cond, len(lv)))

    if aggregation == "daam":
        with denoiser.trace(aggregation="daam", pool_rows=True) as rec:
            for start in range(0, len(logsnr), max_batch):
                run_chunk(start)
        return rec.maps()[0].cpu()
    total = None
    for start in range(0, len(logsnr), max_batch):
        with denoiser.trace(aggregation="layer-mean") as rec:
            run_chunk(start)
        part = rec.maps().sum(0)  # [T, h, w]
        total = part if total is None else total + part
    return total.cpu()


@torch.no_grad()
def daam_maps(
    denoiser: Any,
    latent: torch.Tensor,
    prompt: str,
    n_steps: int = 50,
    aggregation: str = "daam",
) -> torch.Tensor:
    """The DAAM baseline on a real image, with the protocol of the published localisation code.

    1. Deterministic DDIM inversion of the latent [C, h, w] under the prompt (no guidance) over
       diffusers' n_steps DDIM timesteps ("leading" spacing with the config's steps_offset; SD:
       1, 21, ..., 981). As the published code (diffusers' DDIMScheduler), the latent starts at
       the scheduler's final level: abar_0 when the config sets set_alpha_to_one = false (all
       Stable Diffusion checkpoints), clean only when it is true (`schedule.ddim_clean_logsnr`).
    2. DDIM reconstruction with the prompt from the top level; attention is traced over these
       n_steps UNet calls only, and aggregated as `aggregation` says.

    Deviation from the published code: the image reaches the VAE in [-1, 1] (the VAE's range);
    the published DAAM baseline fed [0, 1] pixels, which the VAE reads as the image at half contrast
    around a brightened mean, so its latents (and the inversion, reconstruction and attention
    that follow) were those of a washed-out image. The published code also resized bilinearly to 512 x 512 and
    traced under float16 autocast; here the adapter's resize and dtype apply.

    Returns:
        [T, h, w] float32 on CPU.
    """
    check_aggregation(aggregation)
    cond = denoiser.encode_conditions([prompt])  # [1, T, D]
    levels = ddim_logsnrs(denoiser.schedule, n_steps)  # [n] from least to most noisy
    x = latent[None].to(denoiser.device, torch.float32)  # [1, C, h, w]
    z_top = ddim_invert(
        denoiser, x, cond, levels, clean=denoiser.schedule.ddim_clean_logsnr
    )  # [1, C, h, w]
    with denoiser.trace(aggregation=aggregation) as rec:
        ddim_generate(denoiser, z_top, cond, levels)
    return rec.maps()[0].cpu()

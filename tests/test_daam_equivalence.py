"""`attention=daam` equals DAAM's aggregation, pinned on a random-weight UNet with SD 2.1 geometry.

The daam package pins an old diffusers and cannot be a test dependency, so this file re-states
what DAAM (version 0.2.0) computes, step by step, and checks infodecomp against it:

- trace: every cross-attention module of the UNet's down and up blocks (the mid block is not
  located) computes its softmax probabilities [batch x heads, pixels, tokens]; rows in the second
  half of that first axis (the conditional rows of a guidance batch) are kept, one map per head
  and token on the layer's own grid, summed over all UNet calls per (layer, head); a layer whose
  grid side is 1/8 of the latent side is skipped;
- global map: each (layer, head) sum is resized bicubic to the latent grid and clamped at zero,
  then the mean over all (layer, head) pairs is taken;
- word map: the mean over the word's token rows (tokens matched with end-of-word markers
  stripped, anywhere in the caption; start token offset 1), resized bicubic to the image size and
  min-max normalised before thresholding;
- real images (the published localisation code): DDIM inversion under the caption from the
  scheduler's final level (abar_0, set_alpha_to_one = false), then DDIM reconstruction, traced.

The UNet is SD 2.1 base in miniature: three cross-attention down blocks and one plain one, two
transformer blocks per down block and three per up block (15 located layers), cross-attention at
three resolutions (16 / 8 / 4 on a 16 x 16 latent) with 1 / 2 / 4 heads (SD 2.1: 5 / 10 / 20),
a mid block at 1/8 of the latent side. Its query projections are scaled up so that the attention
is peaked and bicubic resizing undershoots, which is where the clamp position matters.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infodecomp.experiments.maps import to_image_grid
from infodecomp.models.attention.capture import capture_cross_attention
from infodecomp.models.dynamics.schedule import DiscreteSchedule
from infodecomp.models.families.sd import StableDiffusionDenoiser
from infodecomp.models.tiny.sd import SCHEDULER_CONFIG
from infodecomp.reporting.metrics import iou_curve, min_max_normalise

CAPTION = "a man with a necktie and a tie next to a red bicycle"
LATENT = 16  # latent side; DAAM hard-codes 64 (SD at 512 px), scaled down here with the UNet
TOKENS = 77
MINI_SD21 = {
    "sample_size": LATENT,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (32, 64, 128, 128),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "attention_head_dim": (1, 2, 4, 4),  # diffusers reads it as heads: 1 : 2 : 4, head dim 32
    "cross_attention_dim": 32,  # tiny-sd's text encoder width
    "norm_num_groups": 8,
    "use_linear_projection": True,
}


def _mini_sd21_unet():
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MINI_SD21).eval().requires_grad_(False)
    unet.set_attn_processor(AttnProcessor2_0())
    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            module.to_q.weight.mul_(6.0)  # peaked attention (random weights are near uniform)
    return unet


# --- DAAM, re-stated ----------------------------------------------------------------------------


def located_cross_attention(unet) -> list:
    """DAAM's locator: attn2 of every transformer block of the up, then the down blocks whose
    class is a cross-attention block; the mid block is not located."""
    modules = []
    for block in [*unet.up_blocks, *unet.down_blocks]:
        if "CrossAttn" in type(block).__name__:
            for transformer in block.attentions:
                modules += [tb.attn2 for tb in transformer.transformer_blocks]
    return modules


class DaamTrace:
    """DAAM's trace over a UNet: hooks its located cross-attention modules, sums per-head maps.

    `heat` holds DAAM's literal rows (the second half of batch x heads); `heat_all_heads` the
    same with every head of the last batch row kept (what infodecomp keeps for a conditional
    row when no guidance batch is used).
    """

    def __init__(self, unet, latent_side: int = LATENT) -> None:
        self.unet = unet
        self.latent_hw = latent_side * latent_side
        self.heat: dict[tuple[int, int, int], torch.Tensor] = {}
        self.heat_all_heads: dict[tuple[int, int, int], torch.Tensor] = {}

    def __enter__(self) -> DaamTrace:
        self.modules = located_cross_attention(self.unet)
        self.saved = [m.processor for m in self.modules]
        for idx, module in enumerate(self.modules):
            module.set_processor(self._processor(idx))
        return self

    def __exit__(self, *exc) -> None:
        for module, processor in zip(self.modules, self.saved, strict=True):
            module.set_processor(processor)

    def _processor(self, layer_idx: int):
        def call(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *a, **kw):
            batch, length, _ = hidden_states.shape
            mask = attn.prepare_attention_mask(attention_mask, length, batch)
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(context))
            value = attn.head_to_batch_dim(attn.to_v(context))
            probs = attn.get_attention_scores(query, key, mask)  # [B * heads, pixels, tokens]
            factor = int(math.sqrt(self.latent_hw // probs.shape[1]))
            if probs.shape[-1] == TOKENS and factor != 8:
                side = int(math.sqrt(probs.shape[1]))
                maps = probs.permute(2, 0, 1).reshape(TOKENS, probs.shape[0], side, side)
                heads = probs.shape[0] // batch
                for store, rows in (
                    (self.heat, maps[:, maps.shape[1] // 2 :]),  # DAAM: drop the unconditional half
                    (self.heat_all_heads, maps[:, -heads:]),
                ):
                    for head in range(rows.shape[1]):
                        k = (factor, layer_idx, head)
                        store[k] = store.get(k, 0.0) + rows[:, head].float()  # [T, h, w]
            out = attn.batch_to_head_dim(torch.bmm(probs, value))
            return attn.to_out[1](attn.to_out[0](out))

        return call

    def global_maps(self, all_heads: bool = False) -> torch.Tensor:
        """[T, side, side]: per (layer, head) bicubic to the latent grid, clamp, mean."""
        side = int(math.sqrt(self.latent_hw))
        heat = self.heat_all_heads if all_heads else self.heat
        merged = [
            F.interpolate(m.unsqueeze(1), size=(side, side), mode="bicubic").clamp_(min=0)
            for m in heat.values()
        ]
        return torch.stack(merged, 0).mean(0)[:, 0]


def daam_token_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """DAAM's word -> token rule: the word's pieces anywhere, end-of-word markers stripped."""
    tokens = [t.replace("</w>", "") for t in tokenizer.tokenize(prompt.lower())]
    search = [t.replace("</w>", "") for t in tokenizer.tokenize(word.lower())]
    starts = [i for i in range(len(tokens)) if tokens[i : i + len(search)] == search]
    return [s + j + 1 for s in starts for j in range(len(search))]


def daam_expand(word_map: torch.Tensor, size: int) -> torch.Tensor:
    """DAAM's expansion of a word map to the image: bicubic, then min-max normalised."""
    im = F.interpolate(word_map[None, None].float(), size=(size, size), mode="bicubic")
    return ((im - im.min()) / (im.max() - im.min() + 1e-8))[0, 0]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_sd21(tiny_sd: StableDiffusionDenoiser) -> StableDiffusionDenoiser:
    """The adapter over the miniature SD 2.1 UNet (tiny-sd's VAE, text encoder and tokenizer)."""
    unet = _mini_sd21_unet()
    located = located_cross_attention(unet)
    assert len(located) == 15 and sorted({m.heads for m in located}) == [1, 2, 4]
    return StableDiffusionDenoiser(
        unet=unet,
        vae=tiny_sd.vae,
        text_encoder=tiny_sd.text_encoder,
        tokenizer=tiny_sd.tokenizer,
        schedule=DiscreteSchedule.from_config(SCHEDULER_CONFIG),
        device=torch.device("cpu"),
        dtype=torch.float32,
    )


def _close(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    return bool(torch.allclose(ours, ref, rtol=1e-4, atol=1e-6))


# --- tests --------------------------------------------------------------------------------------


def test_daam_aggregation_on_the_same_unet_calls(mini_sd21: StableDiffusionDenoiser) -> None:
    """Guidance-style batches [unconditional, conditional]: DAAM keeps the conditional row's
    heads; infodecomp keeps rows apart, so its row 1 must equal DAAM's map."""
    unet, den = mini_sd21.unet, mini_sd21
    cond = den.encode_conditions(["", CAPTION])  # [2, 77, 32]
    gen = torch.Generator().manual_seed(3)
    calls = [(torch.randn(1, 4, LATENT, LATENT, generator=gen), t) for t in (981, 601, 201, 1)]
    with DaamTrace(unet) as daam, torch.no_grad():
        with capture_cross_attention(unet, TOKENS, (LATENT, LATENT), aggregation="daam") as rec:
            for z, t in calls:
                unet(z.expand(2, -1, -1, -1), t, encoder_hidden_states=cond)
        ours = rec.maps()[1]  # [77, 16, 16]
        ref = daam.global_maps()
        # the clamp acts: some per-head sums undershoot below zero once resized
        side = (LATENT, LATENT)
        assert any(
            (F.interpolate(m.unsqueeze(1), size=side, mode="bicubic") < -1e-4).any()
            for m in daam.heat.values()
        )
    assert ours.shape == ref.shape == (TOKENS, LATENT, LATENT)
    assert _close(ours, ref), float((ours - ref).abs().max())
    # the layer-mean aggregation is a different map on this geometry (heads 1 : 2 : 4)
    with capture_cross_attention(unet, TOKENS, side, aggregation="layer-mean") as lm:
        with torch.no_grad():
            for z, t in calls:
                unet(z.expand(2, -1, -1, -1), t, encoder_hidden_states=cond)
    assert not torch.allclose(lm.maps()[1], ref, rtol=1e-2, atol=1e-3)

    # word map, expansion to the image and the IoU curve: as DAAM's, on a word both rules agree on
    word = "bicycle"
    idx = daam_token_indices(den.tokenizer, CAPTION, word)
    ours_word = den.word_map(ours, CAPTION, word)
    assert torch.allclose(ours_word, ref[idx].mean(0), rtol=1e-4, atol=1e-6)
    mask = torch.zeros(LATENT * 4, LATENT * 4, dtype=torch.bool)
    mask[8:40, 20:60] = True
    grid, gt = to_image_grid(den, ours_word, mask, attention="daam")
    assert grid.shape == (den.image_size, den.image_size)
    expected = daam_expand(ref[idx].mean(0), den.image_size).numpy()
    assert np.allclose(min_max_normalise(grid), expected, atol=1e-5)
    assert np.allclose(iou_curve(grid, gt), iou_curve(expected, gt), atol=0.02)
    bilinear, _ = to_image_grid(den, ours_word, mask, attention="layer-mean")
    assert not np.allclose(min_max_normalise(bilinear), expected, atol=1e-3)


def test_daam_baseline_protocol_on_a_real_latent(mini_sd21: StableDiffusionDenoiser) -> None:
    """The published localisation protocol, re-stated from its formulas: DDIM inversion under the
    caption (no guidance) from abar_0, then DDIM reconstruction traced by DAAM."""
    den, unet, n = mini_sd21, mini_sd21.unet, 5
    latent = torch.randn(4, LATENT, LATENT, generator=torch.Generator().manual_seed(4))
    ours = den.daam_maps(latent, CAPTION, n_steps=n, aggregation="daam")

    c = SCHEDULER_CONFIG
    betas = torch.linspace(c["beta_start"] ** 0.5, c["beta_end"] ** 0.5, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas**2, 0).tolist()
    ratio = 1000 // n
    timesteps = [k * ratio + c["steps_offset"] for k in range(n)]  # 1, 201, ..., 801
    final = abar[0]  # set_alpha_to_one = false

    def ddim(x, a_src, a_dst, eps):  # the published code's step, as written there
        return a_dst**0.5 * ((a_src**-0.5 - a_dst**-0.5) * x + ((1 / a_dst - 1) ** 0.5 - (1 / a_src - 1) ** 0.5) * eps) + x  # fmt: skip

    cond = den.encode_conditions([CAPTION])
    z = latent[None]
    with torch.no_grad():
        for t in timesteps:  # inversion: the first step starts at abar_0, not at the clean level
            eps = unet(z, t, encoder_hidden_states=cond).sample
            z = ddim(z, abar[t - ratio] if t - ratio >= 0 else final, abar[t], eps)
        with DaamTrace(unet) as daam:
            for t in reversed(timesteps):
                eps = unet(z, t, encoder_hidden_states=cond).sample
                z = ddim(z, abar[t], abar[t - ratio] if t - ratio >= 0 else final, eps)
    ref = daam.global_maps(all_heads=True)
    assert _close(ours, ref), float((ours - ref).abs().max())
    # DAAM's literal row filter on a batch of one (the published runs: guidance scale 1) keeps
    # only the last ceil(heads / 2) heads of each layer; infodecomp keeps them all
    assert not torch.allclose(ours, daam.global_maps(), rtol=1e-2, atol=1e-3)


def test_word_rule_is_infodecomps_not_daams(tiny_sd: StableDiffusionDenoiser) -> None:
    """Documented difference: DAAM also takes a word's pieces inside another word."""
    caption = "a man with a necktie and a tie"
    assert daam_token_indices(tiny_sd.tokenizer, caption, "tie") == [6, 9]  # neck|tie, tie
    maps = torch.arange(77.0)[:, None, None].expand(77, 2, 2)
    assert torch.equal(tiny_sd.word_map(maps, caption, "tie"), maps[9])  # the word itself only

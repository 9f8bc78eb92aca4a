"""Cross-attention capture (DAAM aggregation) and the adapter's attention maps on tiny-sd."""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.models.attention import CROSS_SUFFIX, capture_cross_attention
from infodecomp.models.sd import StableDiffusionDenoiser

CAPTION = "a red circle above a blue square"


def _unet_inputs(den: StableDiffusionDenoiser, batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch, 4, 16, 16, generator=gen)
    t = torch.tensor([100.0, 700.0][:batch])
    cond = den.encode_conditions([CAPTION, ""][:batch])
    return z, t, cond


def test_capture_shapes_sums_and_unchanged_outputs(tiny_sd: StableDiffusionDenoiser) -> None:
    unet = tiny_sd.unet
    z, t, cond = _unet_inputs(tiny_sd)
    ref = unet(z, t, encoder_hidden_states=cond).sample
    with capture_cross_attention(unet, 77, (16, 16)) as rec:
        out1 = unet(z, t, encoder_hidden_states=cond).sample
        out2 = unet(z, t, encoder_hidden_states=cond).sample
    assert torch.equal(out1, ref) and torch.equal(out2, ref)  # recording does not touch outputs
    assert rec.calls == 2
    # tiny-sd: cross-attention at 16 x 16 (kept) and 8 x 8 (down, mid and up; left out)
    assert rec.grids == [(16, 16), (8, 8)] and rec.kept_grids() == [(16, 16)]
    maps = rec.maps()
    assert maps.shape == (2, 77, 16, 16) and maps.dtype == torch.float32 and maps.min() >= 0
    # kept layers need no resampling, so each pixel's probabilities sum to 1 per call
    assert torch.allclose(maps.sum(1), torch.full((2, 16, 16), 2.0), atol=1e-4)
    assert not torch.allclose(maps[0], maps[1])  # rows are kept apart


def test_all_layers_with_bicubic_upsampling(tiny_sd: StableDiffusionDenoiser) -> None:
    z, t, cond = _unet_inputs(tiny_sd, 1)
    with capture_cross_attention(tiny_sd.unet, 77, (16, 16), skip_lowest=False) as rec:
        tiny_sd.unet(z, t, encoder_hidden_states=cond)
    maps = rec.maps()
    assert maps.min() >= 0
    # bicubic overshoot is clamped at 0, so the per-pixel sum is 1 only approximately
    assert torch.allclose(maps.sum(1), torch.ones(1, 16, 16), atol=0.05)


def test_processors_restored_after_exit_and_exception(tiny_sd: StableDiffusionDenoiser) -> None:
    unet = tiny_sd.unet
    before = dict(unet.attn_processors)
    with capture_cross_attention(unet, 77, (16, 16)):
        inside = unet.attn_processors
        assert all(
            type(inside[k]).__name__ == "RecordingProcessor"
            for k in inside
            if k.endswith(CROSS_SUFFIX)
        )
        assert all(inside[k] is before[k] for k in inside if not k.endswith(CROSS_SUFFIX))
    assert all(unet.attn_processors[k] is v for k, v in before.items())
    with pytest.raises(RuntimeError, match="boom"), capture_cross_attention(unet, 77, (16, 16)):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is v for k, v in before.items())


def test_maps_without_calls_and_batch_change_are_errors(tiny_sd: StableDiffusionDenoiser) -> None:
    with capture_cross_attention(tiny_sd.unet, 77, (16, 16)) as rec:
        pass
    with pytest.raises(RuntimeError, match="no cross-attention was recorded"):
        rec.maps()
    z, t, cond = _unet_inputs(tiny_sd)
    with (
        pytest.raises(ValueError, match="batch size changed"),
        capture_cross_attention(tiny_sd.unet, 77, (16, 16)),
    ):
        tiny_sd.unet(z, t, encoder_hidden_states=cond)
        tiny_sd.unet(z[:1], t[:1], encoder_hidden_states=cond[:1])


def test_attention_information_maps(tiny_sd: StableDiffusionDenoiser) -> None:
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(4, 16, 16, generator=gen)
    logsnr, eps = torch.linspace(-4, 6, 5), torch.randn(5, 4, 16, 16, generator=gen)
    maps = tiny_sd.attention_maps(latent, CAPTION, logsnr, eps, max_batch=2)  # chunks 2, 2, 1
    assert maps.shape == (77, 16, 16) and maps.min() >= 0
    assert torch.allclose(maps.sum(0), torch.full((16, 16), 5.0), atol=1e-3)  # one unit per call
    whole = tiny_sd.attention_maps(latent, CAPTION, logsnr, eps, max_batch=64)
    assert torch.allclose(maps, whole, atol=1e-4)
    word = tiny_sd.word_map(maps, CAPTION, "circle")
    assert torch.allclose(word, maps[3])
    assert torch.allclose(tiny_sd.word_map(maps, CAPTION, "a"), maps[[1, 5]].mean(0))
    with pytest.raises(ValueError, match="'dog' does not occur"):
        tiny_sd.word_map(maps, CAPTION, "dog")


def test_daam_maps_on_a_real_latent(tiny_sd: StableDiffusionDenoiser) -> None:
    latent = torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(2))
    calls = []
    orig = tiny_sd.eps_hat

    def spy(z, logsnr, cond):
        calls.append((tiny_sd._tracing, float(logsnr[0])))
        return orig(z, logsnr, cond)

    tiny_sd.eps_hat = spy  # instance attribute shadows the method for this test only
    try:
        maps = tiny_sd.daam_maps(latent, CAPTION, n_steps=10)
    finally:
        del tiny_sd.eps_hat
    assert maps.shape == (77, 16, 16) and maps.min() >= 0
    assert torch.allclose(maps.sum(0), torch.full((16, 16), 10.0), atol=1e-3)  # 10 traced calls
    inv, gen = calls[:10], calls[10:]
    assert [c[0] for c in inv] == [False] * 10 and [c[0] for c in gen] == [True] * 10
    levels = [c[1] for c in inv]
    assert levels == sorted(levels, reverse=True) and [c[1] for c in gen] == levels[::-1]
    assert not tiny_sd._tracing and all(
        type(p).__name__ != "RecordingProcessor" for p in tiny_sd.unet.attn_processors.values()
    )


def test_recorded_probabilities_match_a_reference_softmax() -> None:
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from infodecomp.models.attention import CrossAttentionRecorder, RecordingProcessor

    torch.manual_seed(0)
    attn = Attention(
        query_dim=32, cross_attention_dim=24, heads=4, dim_head=8, processor=AttnProcessor2_0()
    ).eval()
    x, ctx = torch.randn(2, 6 * 4, 32), torch.randn(2, 77, 24)  # a 6 x 4 grid of pixels
    rec = CrossAttentionRecorder(77, (6, 4), skip_lowest=True)
    with torch.no_grad():
        out = RecordingProcessor(AttnProcessor2_0(), "layer", rec)(attn, x, ctx)
        ref_out = attn(x, ctx)
        q = attn.to_q(x).view(2, 24, 4, 8)
        k = attn.to_k(ctx).view(2, 77, 4, 8)
        probs = (
            torch.einsum("bphd,bthd->bhpt", q, k).div(math.sqrt(8)).softmax(-1).mean(1)
        )  # [2, 24, 77]
    assert torch.equal(out, ref_out)
    expected = probs.transpose(1, 2).reshape(2, 77, 6, 4)
    assert torch.allclose(rec.maps(), expected, atol=1e-6)

"""Cross-attention capture (both aggregations) and the adapter's attention maps on tiny-sd.

DAAM's aggregation is pinned against a re-statement of the daam package in
test_daam_equivalence.py; here: capture mechanics, the layer-mean arithmetic, and the adapter."""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.estimators.channel import noisy_channel
from infodecomp.models.attention.capture import CROSS_SUFFIX, capture_cross_attention
from infodecomp.models.families.sd import StableDiffusionDenoiser

CAPTION = "a red circle above a blue square"


def _unet_inputs(den: StableDiffusionDenoiser, batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(batch, 4, 16, 16, generator=gen)
    t = torch.tensor([100.0, 700.0][:batch])
    cond = den.encode_conditions([CAPTION, ""][:batch])
    return z, t, cond


@pytest.mark.parametrize("aggregation", ["daam", "layer-mean"])
def test_capture_shapes_sums_and_unchanged_outputs(
    tiny_sd: StableDiffusionDenoiser, aggregation: str
) -> None:
    unet = tiny_sd.unet
    z, t, cond = _unet_inputs(tiny_sd)
    ref = unet(z, t, encoder_hidden_states=cond).sample
    with capture_cross_attention(unet, 77, (16, 16), aggregation=aggregation) as rec:
        out1 = unet(z, t, encoder_hidden_states=cond).sample
        out2 = unet(z, t, encoder_hidden_states=cond).sample
    assert torch.equal(out1, ref) and torch.equal(out2, ref)  # recording does not touch outputs
    assert rec.calls == 2
    maps = rec.maps()
    assert maps.shape == (2, 77, 16, 16) and maps.dtype == torch.float32 and maps.min() >= 0
    assert not torch.allclose(maps[0], maps[1])  # rows are kept apart
    assert rec.grids == [(16, 16), (8, 8)]
    if aggregation == "layer-mean":
        # tiny-sd: cross-attention at 16 x 16 (kept) and 8 x 8 (down, mid and up; left out)
        assert rec.kept_grids() == [(16, 16)]
        # kept layers need no resampling, so each pixel's probabilities sum to 1 per call
        assert torch.allclose(maps.sum(1), torch.full((2, 16, 16), 2.0), atol=1e-4)
    else:
        # DAAM leaves out the mid block only (8 x 8 is 1/2 of the latent side, not 1/8)
        kept = rec.kept_layers()
        assert len(kept) == 6 and not any(n.startswith("mid_block") for n in kept)
        assert rec.kept_grids() == [(16, 16), (8, 8)]
        # bicubic resizing of the 8 x 8 sums and the clamp: about one unit per call
        assert torch.allclose(maps.sum(1), torch.full((2, 16, 16), 2.0), atol=0.1)


def test_all_layers_with_bicubic_upsampling(tiny_sd: StableDiffusionDenoiser) -> None:
    z, t, cond = _unet_inputs(tiny_sd, 1)
    with capture_cross_attention(
        tiny_sd.unet, 77, (16, 16), skip_lowest=False, aggregation="layer-mean"
    ) as rec:
        tiny_sd.unet(z, t, encoder_hidden_states=cond)
    maps = rec.maps()
    assert maps.min() >= 0
    # bicubic overshoot is clamped at 0, so the per-pixel sum is 1 only approximately
    assert torch.allclose(maps.sum(1), torch.ones(1, 16, 16), atol=0.05)


@pytest.mark.parametrize("aggregation", ["daam", "layer-mean"])
def test_processors_restored_after_exit_and_exception(
    tiny_sd: StableDiffusionDenoiser, aggregation: str
) -> None:
    unet = tiny_sd.unet
    before = dict(unet.attn_processors)
    with capture_cross_attention(unet, 77, (16, 16), aggregation=aggregation):
        inside = unet.attn_processors
        assert all(
            type(inside[k]).__name__ == "RecordingProcessor"
            for k in inside
            if k.endswith(CROSS_SUFFIX)
        )
        assert all(inside[k] is before[k] for k in inside if not k.endswith(CROSS_SUFFIX))
    assert all(unet.attn_processors[k] is v for k, v in before.items())
    with (
        pytest.raises(RuntimeError, match="boom"),
        capture_cross_attention(unet, 77, (16, 16), aggregation=aggregation),
    ):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is v for k, v in before.items())
    with pytest.raises(ValueError, match="not one of: daam, layer-mean"):
        capture_cross_attention(unet, 77, (16, 16), aggregation="mean").__enter__()
    assert all(unet.attn_processors[k] is v for k, v in before.items())


@pytest.mark.parametrize("aggregation", ["daam", "layer-mean"])
def test_maps_without_calls_and_batch_change_are_errors(
    tiny_sd: StableDiffusionDenoiser, aggregation: str
) -> None:
    with capture_cross_attention(tiny_sd.unet, 77, (16, 16), aggregation=aggregation) as rec:
        pass
    with pytest.raises(RuntimeError, match="no cross-attention was recorded"):
        rec.maps()
    z, t, cond = _unet_inputs(tiny_sd)
    with (
        pytest.raises(ValueError, match="batch size changed"),
        capture_cross_attention(tiny_sd.unet, 77, (16, 16), aggregation=aggregation),
    ):
        tiny_sd.unet(z, t, encoder_hidden_states=cond)
        tiny_sd.unet(z[:1], t[:1], encoder_hidden_states=cond[:1])
    # pooled rows: batch sizes may change, and the pool is the sum of the rows' own sums
    with capture_cross_attention(
        tiny_sd.unet, 77, (16, 16), aggregation=aggregation, pool_rows=True
    ) as pooled:
        tiny_sd.unet(z, t, encoder_hidden_states=cond)
        tiny_sd.unet(z[:1], t[:1], encoder_hidden_states=cond[:1])
    with capture_cross_attention(tiny_sd.unet, 77, (16, 16), aggregation=aggregation) as r0:
        tiny_sd.unet(z[:1], t[:1], encoder_hidden_states=cond[:1])
        tiny_sd.unet(z[:1], t[:1], encoder_hidden_states=cond[:1])
    with capture_cross_attention(tiny_sd.unet, 77, (16, 16), aggregation=aggregation) as r1:
        tiny_sd.unet(z[1:], t[1:], encoder_hidden_states=cond[1:])
    assert pooled.maps().shape == (1, 77, 16, 16)
    if aggregation == "layer-mean":  # clamp per call: rows and calls add up
        expected = r0.maps() + r1.maps()
    else:  # clamp after the sum: pooling is not the sum of the separately clamped maps
        expected = None
    if expected is not None:
        assert torch.allclose(pooled.maps(), expected, atol=1e-5)
    else:
        assert torch.allclose(pooled.maps().sum(1), torch.full((1, 16, 16), 3.0), atol=0.15)


def test_attention_information_maps(tiny_sd: StableDiffusionDenoiser) -> None:
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(4, 16, 16, generator=gen)
    logsnr, eps = torch.linspace(-4, 6, 5), torch.randn(5, 4, 16, 16, generator=gen)
    kw = dict(aggregation="layer-mean")
    maps = tiny_sd.attention_maps(latent, CAPTION, logsnr, eps, max_batch=2, **kw)  # 2, 2, 1
    assert maps.shape == (77, 16, 16) and maps.min() >= 0
    assert torch.allclose(maps.sum(0), torch.full((16, 16), 5.0), atol=1e-3)  # one unit per call
    whole = tiny_sd.attention_maps(latent, CAPTION, logsnr, eps, max_batch=64, **kw)
    assert torch.allclose(maps, whole, atol=1e-4)
    # daam: one trace over all calls, so the chunking does not matter either
    daam = tiny_sd.attention_maps(latent, CAPTION, logsnr, eps, max_batch=2)
    assert torch.allclose(daam, tiny_sd.attention_maps(latent, CAPTION, logsnr, eps), atol=1e-4)
    assert daam.min() >= 0 and not torch.allclose(daam, maps, atol=1e-3)
    with tiny_sd.trace(aggregation="daam") as rec:  # the same calls, rows kept apart
        z = noisy_channel(latent.expand_as(eps), logsnr, eps)
        tiny_sd.eps_hat(z, logsnr, tiny_sd.encode_conditions([CAPTION] * 5))
    assert torch.allclose(rec.maps().sum(0) / 5, daam / 5, atol=0.02)  # close, not equal
    with pytest.raises(ValueError, match="not one of: daam, layer-mean"):
        tiny_sd.attention_maps(latent, CAPTION, logsnr, eps, aggregation="DAAM")
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
        maps = tiny_sd.daam_maps(latent, CAPTION, n_steps=10, aggregation="layer-mean")
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

    from infodecomp.models.attention.capture import CrossAttentionRecorder, RecordingProcessor

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

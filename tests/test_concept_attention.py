"""ConceptAttention (models.attention.concept) against an independent restatement of the published
computation, on tiny-flux and tiny-sd3, with injected-fault controls.

The restatement below runs every stream of the joint blocks itself in plain torch over the
tiny pipeline's modules (image, text and concept streams; explicit softmax attention; Flux rotary
positions; SD 3.5's image-only attn2), reads the output-space vectors before the output
projections and forms the published saliency: softmax over concepts of o_x . o_c (SD 3: unit
concept vectors), averaged over the published layers. The library computes the concept stream in
forward pre-hooks beside the network's own call; both must agree to float32 rounding, the
network's output must stay bit-identical, and each injected fault must break the agreement.
"""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.experiments.config import ModelConfig
from infodecomp.models.attention import concept
from infodecomp.models.families.flux import image_ids, pack
from infodecomp.models.registry import load_model

CONCEPTS = ["square", "red", "background"]  # one CLIP token each (SD 3 rows 1..3)
CAPTION = "a red square on the left"
KEY, SEED = "item-1", 0
TOL = 1e-6  # maps are probabilities in [0, 1]; the agreement is float32 rounding (6e-8)
FAULT_GAP = 20 * TOL  # a fault moves them by >= 9e-5 (random tiny maps sit within 2e-2 of 1/3)


@pytest.fixture(scope="module")
def flux():
    return load_model(ModelConfig.of("tiny-flux"), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def sd3():
    return load_model(ModelConfig.of("tiny-sd3"), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def flux5(flux):
    """tiny-flux with 5 double-stream blocks (seeded random weights), so the published layer
    set (the last 4) is a proper subset."""
    from diffusers import FluxTransformer2DModel

    from infodecomp.models.tiny.families import CONFIGS

    cfg = {**CONFIGS["flux"]["transformer"], "num_layers": 5}
    state = torch.random.get_rng_state()
    torch.manual_seed(1)
    net = FluxTransformer2DModel(**cfg).eval()
    torch.random.set_rng_state(state)
    model = load_model(ModelConfig.of("tiny-flux"), torch.device("cpu"), torch.float32)
    model.network = net
    return model


# --- the restatement --------------------------------------------------------------------------


def _ada(norm, x, temb, n_chunks):
    """AdaLayerNormZero restated: (x modulated for attention, the other chunks)."""
    emb = norm.linear(norm.silu(temb)).chunk(n_chunks, dim=1)
    shift, scale = emb[0], emb[1]
    return norm.norm(x) * (1 + scale[:, None]) + shift[:, None], emb


def _heads(x, heads):
    return x.unflatten(-1, (heads, -1))  # [B, S, H, d]


def _softmax_attention(q, k, v):
    """Explicit softmax attention, q [B, Sq, H, d] -> [B, Sq, H d] (float32)."""
    q, k, v = (t.double().transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v).transpose(1, 2).flatten(2).float()


def _stream_qkv(attn, x, added):
    p = ("add_q_proj", "add_k_proj", "add_v_proj") if added else ("to_q", "to_k", "to_v")
    q, k, v = (_heads(getattr(attn, n)(x), attn.heads) for n in p)
    nq = attn.norm_added_q if added else attn.norm_q
    nk = attn.norm_added_k if added else attn.norm_k
    return (nq(q) if nq is not None else q), (nk(k) if nk is not None else k), v


def _ff(norm2, ff, x, emb, i_shift, i_scale, i_gate):
    h = norm2(x) * (1 + emb[i_scale][:, None]) + emb[i_shift][:, None]
    return emb[i_gate][:, None] * ff(h)


def _saliency(records, unit):
    maps = []
    for o_x, o_c in records:
        if unit:
            o_c = o_c / (o_c.norm(dim=-1, keepdim=True) + 1e-8)
        maps.append(torch.softmax(torch.einsum("bcd,bnd->bcn", o_c, o_x), dim=1))
    return torch.stack(maps).mean(0)[0]  # [C, N]


def flux_reference(model, x, t, tokens, layers):
    """Published Flux ConceptAttention on latent x [16, h, w] at flow time t."""
    from diffusers.models.embeddings import apply_rotary_emb

    net = model.network
    h, w = x.shape[-2:]
    eps = concept.draw_noise((1, *x.shape), SEED, KEY)
    z = (1 - t) * x[None] + t * eps  # the rectified-flow point the network sees
    cond = model.encode_conditions([CAPTION])
    tt = torch.tensor([t]) * 1000
    g = torch.tensor([model.guidance]) * 1000
    temb = net.time_text_embed(tt, g, cond["pooled"])
    ctemb = net.time_text_embed(tt, g, torch.zeros_like(cond["pooled"]))
    img = net.x_embedder(pack(z))
    txt = net.context_embedder(cond["prompt_embeds"])
    con = net.context_embedder(tokens)[None]
    ids = image_ids(h, w, img.device, img.dtype)
    f_ti = net.pos_embed(torch.cat([torch.zeros(txt.shape[1], 3), ids]))
    f_ci = net.pos_embed(torch.cat([torch.zeros(con.shape[1], 3), ids]))
    records = []
    for i, blk in enumerate(net.transformer_blocks):
        attn = blk.attn
        xi, ei = _ada(blk.norm1, img, temb, 6)
        xt, et = _ada(blk.norm1_context, txt, temb, 6)
        xc, ec = _ada(blk.norm1_context, con, ctemb, 6)
        qi, ki, vi = _stream_qkv(attn, xi, False)
        qt, kt, vt = _stream_qkv(attn, xt, True)
        qc, kc, vc = _stream_qkv(attn, xc, True)
        q_ti = apply_rotary_emb(torch.cat([qt, qi], 1), f_ti, sequence_dim=1)
        k_ti = apply_rotary_emb(torch.cat([kt, ki], 1), f_ti, sequence_dim=1)
        q_ci = apply_rotary_emb(torch.cat([qc, qi], 1), f_ci, sequence_dim=1)
        k_ci = apply_rotary_emb(torch.cat([kc, ki], 1), f_ci, sequence_dim=1)
        o_ti = _softmax_attention(q_ti, k_ti, torch.cat([vt, vi], 1))
        o_t, o_x = o_ti[:, : txt.shape[1]], o_ti[:, txt.shape[1] :]
        o_c = _softmax_attention(q_ci, k_ci, torch.cat([vc, vi], 1))[:, : con.shape[1]]
        if i in layers:
            records.append((o_x, o_c))
        img = img + ei[2][:, None] * attn.to_out[0](o_x)
        img = img + _ff(blk.norm2, blk.ff, img, ei, 3, 4, 5)
        txt = txt + et[2][:, None] * attn.to_add_out(o_t)
        txt = txt + _ff(blk.norm2_context, blk.ff_context, txt, et, 3, 4, 5)
        con = con + ec[2][:, None] * attn.to_add_out(o_c)
        con = con + _ff(blk.norm2_context, blk.ff_context, con, ec, 3, 4, 5)
    return _saliency(records, unit=False).view(-1, h // 2, w // 2)


def _sd3_self_attention(attn, x):
    q, k, v = _stream_qkv(attn, x, False)
    return attn.to_out[0](_softmax_attention(q, k, v))


def sd3_reference(model, x, t, tokens, layers):
    """Published SD 3 ConceptAttention on latent x [16, h, w] at flow time t."""
    net = model.network
    p = net.config.patch_size
    eps = concept.draw_noise((1, *x.shape), SEED, KEY)
    z = (1 - t) * x[None] + t * eps
    cond = model.encode_conditions([CAPTION])
    temb = net.time_text_embed(torch.tensor([t]) * 1000, cond["pooled"])
    img = net.pos_embed(z)
    txt = net.context_embedder(cond["prompt_embeds"])
    con = net.context_embedder(tokens)[None]
    records = []
    for i, blk in enumerate(net.transformer_blocks):
        attn, last = blk.attn, blk.context_pre_only
        dual = blk.use_dual_attention
        xi, ei = _ada(blk.norm1, img, temb, 9 if dual else 6)
        if last:  # AdaLayerNormContinuous restated
            scale, shift = blk.norm1_context.linear(blk.norm1_context.silu(temb)).chunk(2, 1)
            xt = blk.norm1_context.norm(txt) * (1 + scale[:, None]) + shift[:, None]
            xc = blk.norm1_context.norm(con) * (1 + scale[:, None]) + shift[:, None]
        else:
            xt, et = _ada(blk.norm1_context, txt, temb, 6)
            xc, ec = _ada(blk.norm1_context, con, temb, 6)
        qi, ki, vi = _stream_qkv(attn, xi, False)
        qt, kt, vt = _stream_qkv(attn, xt, True)
        qc, kc, vc = _stream_qkv(attn, xc, True)
        o_it = _softmax_attention(
            torch.cat([qi, qt], 1), torch.cat([ki, kt], 1), torch.cat([vi, vt], 1)
        )
        n = img.shape[1]
        o_x, o_t = o_it[:, :n], o_it[:, n:]
        o_c = _softmax_attention(qc, torch.cat([ki, kc], 1), torch.cat([vi, vc], 1))
        if i in layers:
            records.append((o_x, o_c))
        if dual:  # SD 3.5's image-only attention, on the block input normalised
            x2 = blk.norm1.norm(img) * (1 + ei[7][:, None]) + ei[6][:, None]
            img = img + ei[8][:, None] * _sd3_self_attention(blk.attn2, x2)
        img = img + ei[2][:, None] * attn.to_out[0](o_x)
        img = img + _ff(blk.norm2, blk.ff, img, ei, 3, 4, 5)
        if not last:
            txt = txt + et[2][:, None] * attn.to_add_out(o_t)
            txt = txt + _ff(blk.norm2_context, blk.ff_context, txt, et, 3, 4, 5)
            con = con + ec[2][:, None] * attn.to_add_out(o_c)
            con = con + _ff(blk.norm2_context, blk.ff_context, con, ec, 3, 4, 5)
    h, w = x.shape[-2:]
    return _saliency(records, unit=True).view(-1, h // p, w // p)


# --- the checks ---------------------------------------------------------------------------------


def _tokens_flux(model):
    """Each concept alone through T5 (the pipeline's padding), first token's hidden state."""
    ids = model.tokenizer_2(
        CONCEPTS, padding="max_length", max_length=model.token_count, return_tensors="pt"
    ).input_ids
    return model.text_encoder_2(ids)[0][:, 0]


def _tokens_sd3(model):
    """The concepts joined as one SD 3 prompt; CLIP rows 1..n (one token per concept)."""
    for c in CONCEPTS:
        assert len(model.tokenizer(c, add_special_tokens=False).input_ids) == 1, c
    embeds = model.encode_conditions([" ".join(CONCEPTS)])["prompt_embeds"][0]
    return embeds[1 : len(CONCEPTS) + 1]


def published_flux_time(guided, tokens):
    """Index 2 of linspace(1, 0, 5) (t = 0.5), shifted for a guidance-distilled model."""
    if not guided:
        return 0.5
    mu = 0.5 + (tokens - 256) * 0.65 / 3840
    return math.exp(mu) / (math.exp(mu) + 1.0)


def published_sd3_time(shift, n_train=1000):
    """Index -2 of the flow scheduler's 4 steps: sigmas from the shifted training range."""
    lo = shift * (1 / n_train) / (1 + (shift - 1) / n_train)
    s = 1.0 + 2 * (lo - 1.0) / 3  # linspace(1, lo, 4)[2]
    return shift * s / (1 + (shift - 1) * s)


def _case(model, layout):
    torch.manual_seed(3)
    x = torch.randn(16, *model.latent_size)
    if layout == "flux":
        t = published_flux_time(model.guided, model.concept_grid()[0] * model.concept_grid()[1])
        tokens, ref = _tokens_flux(model), flux_reference
    else:
        t, tokens, ref = published_sd3_time(model.schedule.shift), _tokens_sd3(model), sd3_reference
    n = len(model.network.transformer_blocks)  # published: Flux the last 4 (15-18 of 19), SD 3 all
    layers = tuple(range(max(0, n - 4), n)) if layout == "flux" else tuple(range(n))
    return x, t, tokens, ref, layers


def _library(model, x, **kw):
    return model.concept_maps(x, CAPTION, CONCEPTS, key=KEY, seed=SEED, **kw)


@pytest.mark.parametrize("name", ["flux", "flux5", "sd3"])
def test_concept_maps_equal_the_published_computation(name, request):
    model = request.getfixturevalue(name)
    layout = model.CONCEPT_LAYOUT
    x, t, tokens, ref, layers = _case(model, layout)
    assert model.concept_flow_time() == pytest.approx(t, abs=1e-6)
    assert torch.allclose(model._concept_tokens(CONCEPTS), tokens, atol=1e-6)
    with torch.no_grad():
        want = ref(model, x, t, tokens, layers)
    got = _library(model, x)
    assert got.shape == want.shape == (len(CONCEPTS), *model.concept_grid())
    assert torch.allclose(got.sum(0), torch.ones_like(got[0]), atol=1e-5)  # over concepts
    assert (got - want).abs().max() < TOL
    if name == "flux5":
        assert layers == (1, 2, 3, 4)  # the last 4 double-stream blocks (published: 15..18 of 19)
    assert concept.default_layers(layout, len(model.network.transformer_blocks)) == layers


def test_published_defaults():
    assert concept.default_layers("flux", 19) == (15, 16, 17, 18)
    assert concept.default_layers("sd3", 24) == tuple(range(24))
    assert concept.flux_flow_time(False, 4096) == 0.5  # schnell
    assert concept.sd3_flow_time(1000, 3.0) == pytest.approx(published_sd3_time(3.0), abs=1e-6)


@pytest.mark.parametrize("name", ["flux", "sd3"])
def test_network_output_bit_identical(name, request):
    """The concept stream never reaches the network: eps_hat is the same bit for bit."""
    model = request.getfixturevalue(name)
    torch.manual_seed(5)
    z = torch.randn(2, 16, *model.latent_size)
    lv = torch.tensor([0.5, -1.0])
    cond = model.encode_conditions([CAPTION, ""])
    before = model.eps_hat(z, lv, cond)
    tokens = model._concept_tokens(CONCEPTS)
    with concept.capture_concept_attention(
        model.network, model.CONCEPT_LAYOUT, tokens, model.concept_grid()
    ) as rec:
        model._tracing = True
        try:
            during = model.eps_hat(z, lv, cond)
        finally:
            model._tracing = False
    assert torch.equal(before, during)
    assert rec.calls == 1 and rec.maps().shape == (len(CONCEPTS), *model.concept_grid())
    assert not any(b._forward_pre_hooks for b in model.network.transformer_blocks)  # removed


def _value_space(o_x, o_c, v_x, v_c):
    return v_x.flatten(2).float(), v_c.flatten(2).float()


def _wrong_layers(layout, n_blocks):
    """Flux: every double-stream block; SD 3: the first block only."""
    return tuple(range(n_blocks)) if layout == "flux" else (0,)


def _leak(text, concepts):
    return torch.cat([text[0], concepts[0]], 1), torch.cat([text[1], concepts[1]], 1)


FAULTS = {
    "value space": lambda mp: mp.setattr(concept, "saliency_vectors", _value_space),
    "softmax over patches": lambda mp: mp.setattr(concept, "CONCEPT_AXIS", -1),
    "concepts leak into the image stream": lambda mp: mp.setattr(concept, "image_context", _leak),
    "wrong layer set": lambda mp: mp.setattr(concept, "default_layers", _wrong_layers),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("name", ["flux5", "sd3"])
def test_injected_faults_are_caught(name, fault, request, monkeypatch):
    """Each fault injected into the library moves its maps far from the published computation
    (the equality test above would fail)."""
    model = request.getfixturevalue(name)
    x, t, tokens, ref, layers = _case(model, model.CONCEPT_LAYOUT)
    with torch.no_grad():
        want = ref(model, x, t, tokens, layers)
    FAULTS[fault](monkeypatch)
    got = _library(model, x)
    assert (got - want).abs().max() > FAULT_GAP, fault


# --- end to end ---------------------------------------------------------------------------------


def _localize_cfg(model: str, out, **fields):
    from infodecomp.experiments.config import LocalizeConfig

    cfg = LocalizeConfig(attention="concept", steps=[4], daam_steps=2)
    cfg.methods = ["cmi", "attention", "concept"]
    cfg.model = ModelConfig.of(model)
    cfg.data.name, cfg.data.size = "shapes-localize", 4
    cfg.run.limit, cfg.run.device, cfg.run.progress = 2, "cpu", False
    cfg.run.out_dir = str(out)
    for key, value in fields.items():
        setattr(cfg, key, value)
    return cfg


def test_localize_attention_concept_reaches_table3(tmp_path):
    """`localize model=tiny-flux attention=concept` and tiny-sd3: ConceptAttention rows beside
    the raw cross-attention (DAAM's aggregation) and CMI, in results, summary and Table 3."""
    import json

    import pandas as pd

    from infodecomp.experiments.commands import aggregate, localize
    from infodecomp.experiments.config import AggregateConfig

    runs = []
    for model in ("tiny-flux", "tiny-sd3"):
        out = localize.run(_localize_cfg(model, tmp_path / model))
        results = pd.read_csv(out / "results.csv")
        assert set(results["method"]) == {"cmi", "attention", "concept"}
        assert results[results["method"] == "concept"]["item_id"].nunique() == 2
        summary = json.loads((out / "summary.json").read_text())
        assert 0.0 <= summary["miou/concept"] <= 1.0
        assert len(list((out / "figures").glob("*-maps.png"))) == 2
        runs.append(str(out))
    agg = AggregateConfig(runs=runs)
    agg.run.out_dir = str(tmp_path / "agg")
    table = pd.read_csv(aggregate.run(agg) / "table3.csv")
    for model in ("tiny-flux", "tiny-sd3"):
        rows = table[table["setting"].str.startswith(model) & (table["words"] == "all")]
        assert {"ConceptAttention", "Attention (DAAM)", "CMI"} <= set(rows["method"])


@pytest.mark.parametrize("per_step", [8, 1])
def test_attention_concept_refused_without_joint_attention(tmp_path, per_step):
    """A UNet family has no joint attention: attention=concept stops the run in one line, also
    when every batch holds one item (a config error is never one item's fault: no item is
    skipped for it)."""
    from infodecomp.experiments.commands import localize
    from infodecomp.experiments.errors import ConfigError

    cfg = _localize_cfg("tiny-sd", tmp_path / "sd", steps=[2])
    cfg.run.items_per_step = per_step
    with pytest.raises(ConfigError, match="attention=concept needs a joint-attention model"):
        localize.run(cfg)
    assert (
        not (tmp_path / "sd" / "skipped.csv").exists()
        or "concept" not in (tmp_path / "sd" / "skipped.csv").read_text()
    )


def test_api_maps_concept(flux):
    from infodecomp import api

    torch.manual_seed(0)
    image = torch.rand(3, 32, 32) * 2 - 1
    r = api.maps(flux, image, CAPTION, "square", attention="concept", n_samples=4, daam_steps=2)
    assert {"cmi", "attention", "concept"} <= set(r.maps) and r["concept"].shape == (32, 32)
    with pytest.raises(ValueError, match="needs attention='concept'"):
        api.maps(flux, image, CAPTION, "square", methods=["concept"])

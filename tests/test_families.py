"""SDXL, SD 3.x, Flux.1 and PixArt-Sigma adapters on their tiny random-weight pipelines.

Each pipeline is built offline from config, written with save_pretrained and loaded through the
family's from_pretrained, as a hub checkpoint would be. The tests check each family's conventions
against the pipeline parts directly: conditioning, time variable and input scale, output channels,
joint-attention probabilities against the attention the processors really computed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from infodecomp.estimators.channel import noisy_channel
from infodecomp.models.attention.capture import CrossAttentionRecorder
from infodecomp.models.capabilities import (
    AttentionCapture,
    DaamInversion,
    ExactLikelihood,
    ImageModel,
    ProbabilityFlow,
    missing,
)
from infodecomp.models.dynamics import conversions as conv
from infodecomp.models.dynamics.flow import FlowSchedule
from infodecomp.models.dynamics.schedule import DiscreteSchedule
from infodecomp.models.families.flux import FluxDenoiser, image_ids, pack, unpack
from infodecomp.models.families.latent import hub_error_hint
from infodecomp.models.families.pixart import PixArtDenoiser
from infodecomp.models.families.sd3 import SD3Denoiser
from infodecomp.models.families.sdxl import SDXLDenoiser
from infodecomp.models.families.tokens import word_token_indices
from infodecomp.models.presets import PRESETS, AdapterOptions
from infodecomp.models.registry import FAMILIES
from infodecomp.models.tiny import families as tf

CLASSES = {"sdxl": SDXLDenoiser, "sd3": SD3Denoiser, "flux": FluxDenoiser, "pixart": PixArtDenoiser}
OPTIONS = {"sdxl": {}, "sd3": {"text_tokens": 32}, "flux": {"text_tokens": 32, "image_size": 32}}
OPTIONS["pixart"] = {"text_tokens": 32}
CAPTION = "a red circle above a blue square"


def load(family: str, folder: Path | None = None, **kw):
    path = folder or tf.tiny_path(family)
    return CLASSES[family].from_pretrained(
        path, device="cpu", dtype=kw.pop("dtype", "float32"), **{**OPTIONS[family], **kw}
    )


@pytest.fixture(scope="module")
def models() -> dict:
    return {f: load(f) for f in CLASSES}


def _inputs(model, n: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = model.encode_images([torch.rand(3, 32, 32, generator=gen) * 2 - 1])[0]
    eps = torch.randn((n, *x.shape), generator=gen)
    lv = torch.linspace(-3.0, 5.0, n)
    return noisy_channel(x.expand_as(eps), lv, eps), lv


# ------------------------------------------------------------------------ loading, capabilities


@pytest.mark.parametrize("family", list(CLASSES))
def test_loads_through_from_pretrained_with_every_capability(family: str, models) -> None:
    m = models[family]
    assert missing(m, ImageModel, AttentionCapture, DaamInversion, ProbabilityFlow) == []
    assert not isinstance(m, ExactLikelihood)
    flow = family in ("sd3", "flux")
    assert isinstance(m.schedule, FlowSchedule if flow else DiscreteSchedule)
    assert m.image_size == 32 and m.latent_size == (16, 16)
    x = m.encode_images([torch.zeros(3, 32, 32)])
    assert x.shape == (1, 16 if flow else 4, 16, 16)
    index = json.loads((tf.tiny_path(family) / "model_index.json").read_text())
    assert (
        index["_class_name"]
        == {
            "sdxl": "StableDiffusionXLPipeline",
            "sd3": "StableDiffusion3Pipeline",
            "flux": "FluxPipeline",
            "pixart": "PixArtSigmaPipeline",
        }[family]
    )
    z, lv = _inputs(m)
    cond = m.encode_conditions([CAPTION, "", CAPTION])
    e = m.eps_hat(z, lv, cond)
    assert e.shape == z.shape and e.dtype == torch.float32 and torch.isfinite(e).all()


def test_build_is_deterministic(tmp_path: Path) -> None:
    fresh = tf.build_tiny("sdxl", tmp_path / "sdxl")
    cached = tf.tiny_path("sdxl")
    weights = sorted(p.relative_to(fresh) for p in fresh.rglob("*.safetensors"))
    assert len(weights) == 4  # unet, vae, two text encoders
    for rel in weights:
        assert (fresh / rel).read_bytes() == (cached / rel).read_bytes(), rel
    with pytest.raises(ValueError, match="no tiny pipeline for family 'nope'"):
        tf.build_tiny("nope", tmp_path / "x")


# --------------------------------------------------------------------------------- conditioning


def test_sdxl_conditioning_is_penultimate_concat_pooled_time_ids_and_zero_uncond(models) -> None:
    m = models["sdxl"]
    c = m.encode_conditions([CAPTION, ""])
    assert c["prompt_embeds"].shape == (2, 77, 64) and c["text_embeds"].shape == (2, 32)
    assert c["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2
    ids1 = m.tokenizer(
        [CAPTION], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    ids2 = m.tokenizer_2(
        [CAPTION], padding="max_length", max_length=77, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        o1 = m.text_encoder(ids1, output_hidden_states=True)
        o2 = m.text_encoder_2(ids2, output_hidden_states=True)
    want = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], -1)
    assert torch.allclose(c["prompt_embeds"][:1], want, atol=1e-5)
    last = torch.cat([o1.hidden_states[-1], o2.hidden_states[-1]], -1)
    assert not torch.allclose(c["prompt_embeds"][:1], last, atol=1e-2)  # penultimate, not last
    assert torch.allclose(c["text_embeds"][:1], o2.text_embeds, atol=1e-5)  # 2nd, projected
    assert m.force_zeros and not c["prompt_embeds"][1].any() and not c["text_embeds"][1].any()
    assert m.tokenizer_2.pad_token == "!"  # SDXL's second tokenizer pads with "!"


def test_sdxl_without_force_zeros_encodes_the_empty_prompt(tmp_path: Path) -> None:
    folder = tmp_path / "sdxl"
    shutil.copytree(tf.tiny_path("sdxl"), folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["force_zeros_for_empty_prompt"] = False
    (folder / "model_index.json").write_text(json.dumps(index))
    m = load("sdxl", folder)
    assert not m.force_zeros and m.encode_conditions([""])["prompt_embeds"].any()


def test_sd3_conditioning_pads_clip_and_appends_t5(models) -> None:
    m = models["sd3"]
    c = m.encode_conditions([CAPTION, ""])
    assert c["prompt_embeds"].shape == (2, 77 + 32, 32) and c["pooled"].shape == (2, 32)
    clip = c["prompt_embeds"][:, :77]
    assert clip[..., :24].abs().sum() > 0 and not clip[..., 24:].any()  # 16 + 8, padded to 32
    ids3 = m.tokenizer_3([CAPTION], padding="max_length", max_length=32, return_tensors="pt")
    with torch.no_grad():
        t5 = m.text_encoder_3(ids3.input_ids)[0]
    assert torch.allclose(c["prompt_embeds"][:1, 77:], t5, atol=1e-5)
    assert c["prompt_embeds"][1].any()  # "" is encoded, not zeroed
    assert m._word_indices(CAPTION, "red", None) == [2, 77 + 2]


def test_flux_packing_ids_and_guidance(models, monkeypatch: pytest.MonkeyPatch) -> None:
    z = torch.randn(2, 16, 6, 8)
    packed = pack(z)
    assert packed.shape == (2, 12, 64) and torch.equal(unpack(packed, 6, 8), z)
    assert torch.equal(packed[0, 0].view(16, 2, 2), z[0, :, :2, :2])  # channels, then (dy, dx)
    ids = image_ids(6, 8, torch.device("cpu"), torch.float32)
    assert ids.shape == (12, 3) and ids[5].tolist() == [0.0, 1.0, 1.0]
    m = models["flux"]
    assert m.guided and m.guidance == 1.0  # scoring guidance: the plain conditional prediction
    seen = {}
    original = m.network.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(m.network, "forward", spy)
    zz, lv = _inputs(m, 2)
    m.eps_hat(zz, lv, m.encode_conditions([CAPTION, ""]))
    assert seen["guidance"].tolist() == [1.0, 1.0]
    t, _ = conv.flow_time(lv)
    assert torch.allclose(seen["timestep"].double(), t, atol=1e-6)  # Flux is shown t itself
    assert seen["txt_ids"].shape == (32, 3) and not seen["txt_ids"].any()
    assert m._word_indices(CAPTION, "red", None) == [2]


def test_flux_guidance_option_and_schnell(tmp_path: Path) -> None:
    assert load("flux", guidance=3.5).guidance == 3.5
    folder = tmp_path / "schnell"
    shutil.copytree(tf.tiny_path("flux"), folder)
    cfg_path = folder / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["guidance_embeds"] = False
    cfg_path.write_text(json.dumps(cfg))
    m = load("flux", folder)
    assert not m.guided and m.guidance is None
    z, lv = _inputs(m, 2)
    assert torch.isfinite(m.eps_hat(z, lv, m.encode_conditions([CAPTION, ""]))).all()
    with pytest.raises(ValueError, match="has no guidance embedding"):
        load("flux", folder, guidance=3.5)


def test_pixart_mask_and_learned_variance(models, monkeypatch: pytest.MonkeyPatch) -> None:
    m = models["pixart"]
    c = m.encode_conditions([CAPTION, ""])
    assert c["prompt_embeds"].shape == (2, 32, 32) and c["mask"].dtype == torch.long
    assert c["mask"][0].sum() == len(m.tokenizer(CAPTION).input_ids) and c["mask"][1].sum() == 2
    raw = {}
    hook = m.network.register_forward_hook(lambda mod, args, out: raw.update(out=out[0]))
    z, lv = _inputs(m, 2)
    e = m.eps_hat(z, lv, c)
    hook.remove()
    assert raw["out"].shape[1] == 8 and e.shape[1] == 4
    assert torch.equal(e, raw["out"][:, :4].float())  # the first half of the channels is eps
    assert m._word_indices(CAPTION, "red", None) == [2]


# ------------------------------------------------------------------------------ the flow channel


def test_sd3_network_sees_the_flow_channel(models) -> None:
    """The transformer is shown z_flow = |(1 - t, t)| z at timestep 1000 t and its velocity is
    converted with eps = z_flow + (1 - t) v (the functions the exact wrappers prove)."""
    m = models["sd3"]
    seen = {}

    def hook(mod, args, kwargs, out):
        seen.update(kwargs, out=out[0])

    h = m.network.register_forward_hook(hook, with_kwargs=True)
    z, lv = _inputs(m)
    e = m.eps_hat(z, lv, m.encode_conditions([CAPTION] * 3))
    h.remove()
    t, one_minus_t = conv.flow_time(lv)
    scale = torch.hypot(one_minus_t, t).view(-1, 1, 1, 1)
    assert torch.allclose(seen["hidden_states"].double(), scale * z.double(), atol=1e-6)
    assert torch.allclose(seen["timestep"].double(), 1000 * t, atol=1e-4)
    want = scale * z.double() + one_minus_t.view(-1, 1, 1, 1) * seen["out"].double()
    assert torch.allclose(e.double(), want, atol=1e-5)


def test_schedule_shift_does_not_change_eps_hat(tmp_path: Path) -> None:
    z = y = None
    outs = []
    for shift in (3.0, 1.0):
        folder = tmp_path / f"shift{shift}"
        shutil.copytree(tf.tiny_path("sd3"), folder)
        path = folder / "scheduler" / "scheduler_config.json"
        cfg = json.loads(path.read_text())
        cfg["shift"] = shift
        path.write_text(json.dumps(cfg))
        m = load("sd3", folder)
        assert m.schedule.shift == shift
        if z is None:
            z, lv = _inputs(m)
            y = [CAPTION] * 3
        outs.append(m.eps_hat(z, lv, m.encode_conditions(y)))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("family,outside", [("sd3", 15.0), ("sdxl", 9.0), ("pixart", -12.0)])
def test_warns_outside_the_trained_range(family: str, outside: float) -> None:
    m = load(family)
    z, _ = _inputs(m, 1)
    with pytest.warns(RuntimeWarning, match="trained"):
        m.eps_hat(z, torch.tensor([outside]), m.encode_conditions([CAPTION]))


# ------------------------------------------------------------------------------------ attention


@pytest.mark.parametrize("family", list(CLASSES))
def test_capture_leaves_outputs_bit_identical_and_restores(family: str, models) -> None:
    m = models[family]
    z, lv = _inputs(m)
    cond = m.encode_conditions([CAPTION, "", CAPTION])
    before = dict(m.network.attn_processors)
    plain = m.eps_hat(z, lv, cond)
    with m.trace() as rec:
        traced = m.eps_hat(z, lv, cond)
    assert torch.equal(plain, traced)
    maps = rec.maps()
    assert maps.shape == (3, m.token_count, 16, 16) and (maps >= 0).all() and rec.calls == 1
    assert m.word_map(maps[0], CAPTION, "circle").shape == (16, 16)
    with pytest.raises(RuntimeError, match="boom"):
        with m.trace():
            raise RuntimeError("boom")
    after = dict(m.network.attn_processors)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def _reference_probs(family: str, m, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Image->text softmax probabilities from the q, k the processors really used."""
    refs: list[torch.Tensor] = []
    t_len = m.token_count
    if family == "sd3":
        import diffusers.models.attention_processor as ap

        real = ap.F.scaled_dot_product_attention

        def sdpa(q, k, v, *args, **kwargs):  # [B, H, S, d], image first
            if q.shape[2] == 64 + t_len:  # joint calls (SD 3.5's image-only attn2 has 64)
                p = (q.float() @ k.float().transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)
                refs.append(p[:, :, :64, 64:].mean(1))
            return real(q, k, v, *args, **kwargs)

        monkeypatch.setattr(ap.F, "scaled_dot_product_attention", sdpa)
    else:
        import diffusers.models.transformers.transformer_flux as fx

        real = fx.dispatch_attention_fn

        def dispatch(q, k, v, *args, **kwargs):  # [B, S, H, d], text first
            p = (q.float().transpose(1, 2) @ k.float().permute(0, 2, 3, 1)) * q.shape[-1] ** -0.5
            refs.append(p.softmax(-1)[:, :, t_len:, :t_len].mean(1))
            return real(q, k, v, *args, **kwargs)

        monkeypatch.setattr(fx, "dispatch_attention_fn", dispatch)
    return refs


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_joint_probabilities_are_the_processors_own(
    family: str, models, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = models[family]
    z, lv = _inputs(m, 2)
    cond = m.encode_conditions([CAPTION, ""])
    recorded: list[torch.Tensor] = []
    real_add = CrossAttentionRecorder.add

    def add(self, name, probs, batch):
        recorded.append(probs.clone())
        return real_add(self, name, probs, batch)

    monkeypatch.setattr(CrossAttentionRecorder, "add", add)
    refs = _reference_probs(family, m, monkeypatch)
    with m.trace():
        m.eps_hat(z, lv, cond)
    n_joint = {"sd3": 2, "flux": 2}[family]  # sd3: 2 joint blocks; flux: 1 double + 1 single
    assert len(recorded) == len(refs) == n_joint
    for got, want in zip(recorded, refs, strict=True):
        assert got.shape == want.shape == (2, 64, m.token_count)
        assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
        assert (got.sum(-1) < 1).all()  # text keys only: part of the softmax mass


def test_pixart_attention_ignores_padding(models) -> None:
    m = models["pixart"]
    z, lv = _inputs(m, 1)
    cond = m.encode_conditions([CAPTION])
    with m.trace() as rec:
        m.eps_hat(z, lv, cond)
    maps = rec.maps()[0]  # [T, h, w]
    n = int(cond["mask"][0].sum())
    assert maps[:n].sum() > 0 and maps[n:].max() < 1e-6


# ---------------------------------------------------------------------------- options, presets


def test_dtype_option_overrides_the_run_dtype_and_sdxl_vae_stays_float32() -> None:
    path = tf.tiny_path("sdxl")
    plain = SDXLDenoiser.from_pretrained(path, device="cpu", dtype="float32")
    assert plain.network.dtype == plain.vae.dtype == torch.float32
    bf = SDXLDenoiser.from_pretrained(
        path, AdapterOptions(dtype="bfloat16"), device="cpu", dtype="float32"
    )
    assert bf.network.dtype == torch.bfloat16 and bf.vae.dtype == torch.bfloat16
    z, lv = _inputs(bf, 1)
    assert bf.eps_hat(z, lv, bf.encode_conditions([CAPTION])).dtype == torch.float32
    half = SDXLDenoiser.from_pretrained(path, device="cpu", dtype="float16")
    assert half.network.dtype == torch.float16 and half.vae.dtype == torch.float32
    assert half.vae_dtype == torch.float32  # SDXL's VAE overflows in float16


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_offloaded_models_predict_the_same(
    offload: str, models, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offload paths (accelerate's streaming for "sequential") run here on the CPU as the
    execution device (the guard that refuses this on a real run is lifted) and change nothing."""
    import infodecomp.models.families.latent as latent

    monkeypatch.setattr(latent, "_offload_guard", lambda offload, device: None)
    m = load("sd3", offload=offload)
    ref = models["sd3"]
    z, lv = _inputs(ref, 2)
    want = ref.eps_hat(z, lv, ref.encode_conditions([CAPTION, ""]))
    got = m.eps_hat(z, lv, m.encode_conditions([CAPTION, ""]))
    assert torch.allclose(got, want, atol=1e-5)
    with m.trace() as rec:
        m.eps_hat(z, lv, m.encode_conditions([CAPTION, ""]))
    assert rec.maps().shape == (2, 109, 16, 16)
    assert m.decode_latents(z[:1]).shape == (1, 3, 32, 32)


def test_offload_needs_a_gpu_and_moves_parts_around_their_use(models) -> None:
    with pytest.raises(ValueError, match="model.offload=model keeps weights in CPU memory"):
        load("pixart", offload="model")
    m = models["pixart"]
    moves = []

    class Part:
        def to(self, device):
            moves.append(str(device))

    part = Part()
    m._offloaded = (part,)
    try:
        with m._visiting(part, m.vae):
            moves.append("body")
    finally:
        m._offloaded = ()
    assert moves == ["cpu", "body", "cpu"]  # to the (here: cpu) device, body, back to cpu


def test_presets_of_the_families() -> None:
    want = {
        "sdxl": ("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", False),
        "sd3.5-medium": ("sd3", "stabilityai/stable-diffusion-3.5-medium", True),
        "sd3.5-large": ("sd3", "stabilityai/stable-diffusion-3.5-large", True),
        "flux-dev": ("flux", "black-forest-labs/FLUX.1-dev", True),
        "flux-schnell": ("flux", "black-forest-labs/FLUX.1-schnell", False),
        "pixart-sigma": ("pixart", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", False),
    }
    for name, (family, source, gated) in want.items():
        p = PRESETS[name]
        assert (p.family, p.source, p.gated) == (family, source, gated), name
        assert p.options["dtype"] == "bfloat16" and family in FAMILIES
    assert PRESETS["flux-schnell"].options["text_tokens"] == 256
    for name in ("tiny-sdxl", "tiny-sd3", "tiny-flux", "tiny-pixart"):
        assert PRESETS[name].family in FAMILIES and PRESETS[name].source is None
    hint = hub_error_hint("black-forest-labs/FLUX.1-dev", None)
    assert (
        "gated" in hint
        and "HF_TOKEN" in hint
        and "huggingface.co/black-forest-labs/FLUX.1-dev" in hint
    )
    assert "gated" not in hub_error_hint("someone/else", None).split("(")[0]


def test_word_indices_in_sentencepiece_tokens() -> None:
    """T5 tokens mark a word's start with \u2581 and have no start token."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import T5TokenizerFast

    sp = SentencePieceUnigramTokenizer()
    corpus = ["a red circle above a blue square", "a dog, a cat and reddish armadillo"] * 20
    sp.train_from_iterator(
        corpus,
        vocab_size=60,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    sp.post_processor = TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", sp.token_to_id("</s>"))]
    )
    tok = T5TokenizerFast(
        tokenizer_object=sp, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0
    )
    caption = "a dog, a cat and reddish armadillo"
    pieces = tok.tokenize(caption)
    idx = word_token_indices(tok, caption, "dog", max_length=32)
    assert "".join(pieces[i] for i in idx).lstrip("\u2581") == "dog" and idx[0] == 1
    assert word_token_indices(tok, CAPTION, "red", max_length=32) == [1]
    with pytest.raises(ValueError, match="does not occur"):
        word_token_indices(tok, caption, "red", max_length=32)  # only inside "reddish"


# a non-default value of each option that only some families act on
FAMILY_SETTINGS = {"time_rule": "continuous", "attn_processor": "eager", "text_tokens": 16}
FAMILY_SETTINGS["guidance"] = 3.5


def _acts(family: str, option: str, ref) -> bool:
    """Whether setting `option` changes what the family computes (processors, text length or
    eps_hat at logsnr values off the DDPM grid)."""
    m = load(family, **{option: FAMILY_SETTINGS[option]})
    if option == "attn_processor":
        kinds = {type(p).__name__ for p in m.network.attn_processors.values()}
        return kinds == {"AttnProcessor"}
    if m.token_count != ref.token_count:
        return True
    z, lv = _inputs(ref, 2)
    lv = lv + 0.37  # off the timestep grid, where the time rules differ
    got = m.eps_hat(z, lv, m.encode_conditions([CAPTION, ""]))
    return not torch.allclose(got, ref.eps_hat(z, lv, ref.encode_conditions([CAPTION, ""])))


@pytest.mark.parametrize("family", list(CLASSES))
def test_family_options_act_or_are_refused_in_one_line(family: str, models) -> None:
    cls = CLASSES[family]
    for option in FAMILY_SETTINGS:
        if option in cls.HONOURS:
            assert _acts(family, option, models[family]), f"{family} ignores model.{option}"
            continue
        with pytest.raises(ValueError) as err:
            load(family, **{option: FAMILY_SETTINGS[option]})
        msg = str(err.value)
        assert "\n" not in msg and f"does not apply to {cls.__name__}" in msg, msg
        assert msg.startswith(f"model.{option}={FAMILY_SETTINGS[option]} ")
    assert {"time_rule", "attn_processor"} & SD3Denoiser.HONOURS == set()
    assert FluxDenoiser.HONOURS == {"text_tokens", "guidance"}


def test_the_option_check_catches_a_family_claiming_an_option_it_ignores(
    models, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SD 3 runs on rectified flow: the DDPM time rule cannot act on it
    monkeypatch.setattr(SD3Denoiser, "HONOURS", SD3Denoiser.HONOURS | {"time_rule"})
    assert not _acts("sd3", "time_rule", models["sd3"])
    assert _acts("sdxl", "time_rule", models["sdxl"])  # where it does act, the probe sees it


# ------------------------------------------------------------------ PixArt's learned null caption


def test_pixart_null_embedding_file_is_the_unconditional_row(
    models, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """model.null_embedding=<file> replaces T5("") by the learned y_embedding (mask of ones);
    a file of the wrong shape is refused in one line, and every PixArt model says which "" it
    uses."""
    from safetensors.torch import save_file

    base = models["pixart"]
    t, d = base.token_count, int(base.text_encoder.config.d_model)
    emb = torch.randn(t, d, generator=torch.Generator().manual_seed(3))
    save_file(
        {"y_embedder.y_embedding": emb, "other": torch.zeros(2)}, tmp_path / "null.safetensors"
    )
    with caplog.at_level("INFO", logger="infodecomp"):
        m = load("pixart", null_embedding=str(tmp_path / "null.safetensors"))
    assert "learned null embedding" in caplog.text
    c, c0 = m.encode_conditions([CAPTION, ""]), base.encode_conditions([CAPTION, ""])
    assert torch.equal(c["prompt_embeds"][1], emb) and c["mask"][1].tolist() == [1] * t
    assert torch.equal(c["prompt_embeds"][0], c0["prompt_embeds"][0])  # captions unchanged
    assert not torch.allclose(c["prompt_embeds"][1], c0["prompt_embeds"][1])
    z, lv = _inputs(m, 2)
    e, e0 = m.eps_hat(z, lv, c), base.eps_hat(z, lv, c0)
    assert torch.allclose(e[0], e0[0]) and not torch.allclose(e[1], e0[1], atol=1e-4)
    torch.save(emb[None], tmp_path / "null.pt")  # [1, T, D] from torch.save is accepted
    assert torch.equal(load("pixart", null_embedding=str(tmp_path / "null.pt")).null_embedding, emb)
    # injected fault: one token short -> refused, one line naming the file and both shapes
    torch.save(emb[:-1], tmp_path / "short.pt")
    with pytest.raises(ValueError, match=r"shape \(31, 32\), this model needs \(32, 32\)") as err:
        load("pixart", null_embedding=str(tmp_path / "short.pt"))
    assert "\n" not in str(err.value) and "short.pt" in str(err.value)
    with pytest.raises(ValueError, match="no such file"):
        load("pixart", null_embedding=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="does not apply to SDXLDenoiser"):
        load("sdxl", null_embedding=str(tmp_path / "null.pt"))
    caplog.clear()
    with caplog.at_level("INFO", logger="infodecomp"):
        load("pixart")
    assert 'use T5("") as the unconditional input' in caplog.text

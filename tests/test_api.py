"""The Python API: the same numbers as the commands, every input form, maps, curves, figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from infodecomp import api
from infodecomp.data.registry import load_dataset
from infodecomp.data.spec import DataSpec
from infodecomp.experiments.commands import aro
from infodecomp.experiments.config import AroConfig, EstimatorConfig, ModelConfig, RunConfig
from infodecomp.experiments.runner import RunContext
from infodecomp.models.oracles.exact import ShapesOracle


@pytest.fixture(scope="module")
def oracle() -> api.Model:
    return api.load("shapes-oracle", device="cpu")


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """A ShapesWorld image as an image model takes it: RGB in [-1, 1]."""
    return image.clamp(-1, 1)


def test_load_speaks_the_command_line_vocabulary(oracle: api.Model) -> None:
    assert isinstance(oracle.denoiser, ShapesOracle) and oracle.config == ModelConfig()
    assert oracle.capabilities == ("ProbabilityFlow", "ExactLikelihood")
    assert oracle.source == {
        "preset": "shapes-oracle",
        "family": "shapes-oracle",
        "source": None,
        "revision": None,
    }
    noisy = api.load(ModelConfig(sigma0=0.5), device="cpu")
    assert noisy.denoiser.sigma0 == 0.5 and api.load(sigma0=0.25).denoiser.sigma0 == 0.25
    with pytest.raises(TypeError, match="unknown options \\['timerule'\\]"):
        api.load("tiny-sd", timerule="nearest")
    with pytest.raises(ValueError, match="model.time_rule 'exact' is not one of"):
        api.load("tiny-sd", time_rule="exact")
    with pytest.raises(ValueError, match="dtype 'float8'"):
        api.load("shapes-oracle", dtype="float8")


def test_score_reproduces_the_aro_command(oracle: api.Model, tmp_path: Path) -> None:
    """keys=<item ids> gives the aro command's values to the last digit (one code path)."""
    cfg = AroConfig(
        data=DataSpec(name="shapes-order", size=3),
        estimator=EstimatorConfig(n_samples=12),
        run=RunConfig(device="cpu", items_per_step=2),
    )
    ds = load_dataset(cfg.data, None)
    ctx = RunContext(cfg, tmp_path, oracle.denoiser, ds, torch.device("cpu"), 0, 1)
    rows = pd.DataFrame(aro.process(ctx, ds.items, [it.image for it in ds.items]))
    with pytest.warns(UserWarning, match="exact ShapesWorld oracle a higher i.o is not"):
        df = api.score(
            oracle,
            [it.image for it in ds.items],
            [list(it.options) for it in ds.items],
            estimator=cfg.estimator,
            run=RunConfig(batch_size=7, items_per_step=1),  # other batching, same numbers
            keys=[it.item_id for it in ds.items],
        )
    assert df.attrs["caveat"] == api.scoring.IO_CAVEAT  # the CLI's note, carried by the API
    assert list(df.columns) == list(api.SCORE_COLUMNS)
    assert len(df) == 3 * 4 and (df["n_samples"] == 12).all()
    for name in ("io", "is", "mmse"):
        cli = rows[rows["estimator"] == name]
        assert df[name].to_numpy() == pytest.approx(cli["value"].to_numpy(), rel=1e-12)
        assert df[f"{name}_se"].to_numpy() == pytest.approx(cli["stderr"].to_numpy(), rel=1e-12)
    # the oracle ranks the true caption (option 0 of an order item) first by i^s
    best = df.loc[df.groupby("image")["is"].idxmax(), "caption"].tolist()
    assert best == [it.options[0] for it in ds.items]


def test_score_inputs_and_seeding(tiny_sd, tmp_path: Path) -> None:
    ds = load_dataset(DataSpec(name="shapes-relation", size=2), None)
    a, b = (_rgb(it.image) for it in ds.items)
    path = tmp_path / "a.png"
    pil = Image.fromarray(((a + 1) * 127.5).round().byte().permute(1, 2, 0).numpy())
    pil.save(path)
    captions = list(ds.items[0].options)
    df = api.score(tiny_sd, [path, pil, b, a], captions, n_samples=6, seed=3)
    assert df["image"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert df["name"].tolist()[:2] == [str(path)] * 2 and df["name"].iloc[2] == ""
    assert df["caption"].tolist() == captions * 4
    assert "caveat" not in df.attrs  # the i^o caveat is for the exact ShapesWorld oracle only
    assert np.isfinite(df[["io", "io_se", "is", "is_se", "mmse", "mmse_se"]].to_numpy()).all()
    assert (df["io"] >= 0).all()
    # a file and the same PIL image are one image: same encoding, same draws, same numbers
    assert df.iloc[0:2][["io", "is"]].to_numpy() == pytest.approx(
        df.iloc[2:4][["io", "is"]].to_numpy()
    )
    # draws follow the image, not its position or batch
    alone = api.score(tiny_sd, b, captions, n_samples=6, seed=3)
    assert alone[["io", "is", "mmse"]].to_numpy() == pytest.approx(
        df.iloc[4:6][["io", "is", "mmse"]].to_numpy(), rel=1e-4
    )
    other_seed = api.score(tiny_sd, b, captions, n_samples=6, seed=4)
    assert not np.allclose(other_seed["io"], alone["io"])
    per_image = api.score(tiny_sd, torch.stack([a, b]), [captions, captions[:1]], n_samples=6)
    assert per_image["image"].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="2 caption lists for 1 images"):
        api.score(tiny_sd, a, [captions, captions])
    with pytest.raises(ValueError, match="must differ"):
        api.score(tiny_sd, a, ["a cat", "a cat"])
    with pytest.raises(TypeError, match="data-space tensors"):
        api.score(api.load("shapes-oracle"), pil, captions)


def test_from_pipeline_wraps_a_loaded_pipeline(tiny_sd_dir: Path, tiny_sd) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd_dir, safety_checker=None, requires_safety_checker=False
    )
    model = api.from_pipeline(pipe)
    assert model.denoiser.unet is pipe.unet and model.dtype == "float32"
    assert "AttentionCapture" in model.capabilities and model.source["preset"] == "local"
    image = _rgb(load_dataset(DataSpec(name="shapes-relation", size=1), None).items[0].image)
    ours = api.score(model, image, ["a red circle", "a blue square"], n_samples=5)
    loaded = api.score(tiny_sd, image, ["a red circle", "a blue square"], n_samples=5)
    assert ours[["io", "is", "mmse"]].to_numpy() == pytest.approx(
        loaded[["io", "is", "mmse"]].to_numpy(), rel=1e-5
    )
    with pytest.raises(TypeError, match="lacks text_encoder"):
        api.from_pipeline(type("Pipe", (), {"unet": pipe.unet, "vae": pipe.vae})())


def test_maps_on_the_oracle(oracle: api.Model, tmp_path: Path) -> None:
    item = load_dataset(DataSpec(name="shapes-localize", size=1), None).items[0]
    m = api.maps(oracle, item.image, item.caption, item.word, n_samples=16)
    assert list(m.maps) == ["mi", "cmi"] and m.context == item.context
    assert (
        set(m.skipped) == {"attention", "attn_info"}
        and "AttentionCapture" in m.skipped["attn_info"]
    )
    for method in ("mi", "cmi"):
        assert m[method].shape == (16, 16)
        # the pixel decomposition adds up to the total (nats)
        assert m[method].sum() == pytest.approx(m.totals[method][0], rel=1e-5)
    with pytest.raises(KeyError, match="does not implement"):
        m["attention"]
    with pytest.raises(ValueError, match="does not implement AttentionCapture"):
        api.maps(oracle, item.image, item.caption, item.word, methods=["attention"])
    whole = api.maps(oracle, item.image, item.caption, n_samples=16)
    assert list(whole.maps) == ["mi"] and whole.word is None
    assert whole.labels["mi"] == f"MI '{item.caption}'"
    fig = m.plot()
    limits = {
        ax.get_title(): ax.images[-1].get_clim()
        for ax in fig.axes
        if ax.images and ax.get_title() != "image"
    }
    assert len(set(limits.values())) == 1  # MI and CMI on one colour scale
    assert all(
        ax.images[-1].get_cmap().name == "viridis" for ax in fig.axes if ax.get_title() in limits
    )
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert bars == ["nats / pixel", "nats / pixel"]
    path = m.save(tmp_path / "maps.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (1440, 525)  # image + MI + CMI panels


def test_maps_with_attention_at_image_resolution(tiny_sd, tmp_path: Path) -> None:
    item = load_dataset(DataSpec(name="shapes-localize", size=1), None).items[0]
    image = _rgb(item.image)
    m = api.maps(tiny_sd, image, item.caption, item.word, n_samples=4, daam_steps=2)
    assert list(m.maps) == ["mi", "cmi", "attention", "attn_info"] and not m.skipped
    assert all(v.shape == (32, 32) and np.isfinite(v).all() for v in m.maps.values())
    assert m.image.shape == (32, 32, 3) and "'" + item.word + "'" in m.labels["attention"]
    fig = m.overlay(np.full((64, 48, 3), 0.5), methods=["cmi", "attention"])
    assert len([ax for ax in fig.axes if ax.images]) == 3  # image + two maps
    only = api.maps(tiny_sd, image, item.caption, item.word, n_samples=4, methods=["cmi"])
    assert list(only.maps) == ["cmi"]
    assert only["cmi"] == pytest.approx(m["cmi"])  # same draws, same map
    with pytest.raises(ValueError, match="not a whole word"):
        api.maps(tiny_sd, image, item.caption, "zebra")


def test_mmse_curves(oracle: api.Model, tmp_path: Path) -> None:
    item = load_dataset(DataSpec(name="shapes-localize", size=1), None).items[0]
    c = api.mmse_curves(oracle, item.image, [item.caption, item.context], n_samples=40)
    assert list(c.curves) == [f"'{item.caption}'", f"'{item.context}'", "'' (unconditional)"]
    frame = c.frame()
    assert len(frame) == 120 and set(frame["caption"]) == {item.caption, item.context, ""}
    x, y = c.curves[f"'{item.caption}'"]
    assert np.all(np.diff(x) >= 0) and (y > 0).all()
    ax = c.plot(title="t").axes[0]
    assert len(ax.lines) == 3 and len({line.get_linestyle() for line in ax.lines}) == 3
    assert c.save(tmp_path / "mmse.png").stat().st_size > 0


def test_delete_word() -> None:
    assert (
        api.delete_word("a red circle above a red square", "red") == "a circle above a red square"
    )
    assert api.delete_word("a cat left of a dog", "left of") == "a cat a dog"
    with pytest.raises(ValueError, match="not a whole word"):
        api.delete_word("a reddish circle", "red")

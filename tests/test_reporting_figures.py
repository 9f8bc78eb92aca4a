"""Figures render to valid PNGs, with shared colour scales where asked."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infodecomp.reporting import figures
from infodecomp.reporting.figures import mmse_curves, panel, save


def heat_maps():
    yy, xx = np.mgrid[0:16, 0:16] / 15.0
    return {"MI": 2.0 * xx, "CMI": 0.5 * yy, "attention": 10.0 + 5.0 * xx * yy}


def test_panel_writes_png_with_shared_scale(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(64, 48, 3))
    fig = panel(image, heat_maps(), shared_scale=["MI", "CMI"], title="dog | a _ on a sofa")
    limits = {}
    for ax in fig.axes:
        title = ax.get_title()
        if ax.images and title not in ("", "image"):
            limits[title.split(" ")[0]] = ax.images[-1].get_clim()
    assert limits["MI"] == pytest.approx((0.0, 2.0))
    assert limits["CMI"] == limits["MI"]
    assert limits["attention"] == pytest.approx((10.0, 15.0))

    path = save(fig, tmp_path / "figs" / "panel.png")
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.size == (round(3.2 * 4 * figures.DPI), round(3.5 * figures.DPI))
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10  # something was drawn, not a blank canvas


def test_panel_input_errors():
    image = np.zeros((8, 8, 3))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        panel(image + 2, {}, [])
    with pytest.raises(ValueError, match="H x W x 3"):
        panel(np.zeros((8, 8)), {}, [])
    with pytest.raises(ValueError, match="not among the maps"):
        panel(image, {"MI": np.zeros((4, 4))}, ["CMI"])
    with pytest.raises(ValueError, match="NaN"):
        panel(image, {"MI": np.full((4, 4), np.nan)}, [])


def test_mmse_curves_png(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 7, size=300)
    curves = {
        "E‖ε − ε̂(z)‖²": (x, 1 / (1 + np.exp(x)) + 0.01 * rng.uniform(size=300)),
        "E‖ε − ε̂(z | y)‖²": (x, 0.8 / (1 + np.exp(x)) + 0.01),
    }
    fig = mmse_curves(curves, "MMSE curves")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    # the binned mean follows the data: decreasing in logsnr
    line_y = ax.lines[1].get_ydata()
    assert line_y[0] > line_y[-1]
    path = save(fig, tmp_path / "mmse.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (900, 600)
    with pytest.raises(ValueError, match="one non-zero length"):
        mmse_curves({"bad": (np.zeros(3), np.zeros(4))})
    assert mmse_curves({"zero": (x, np.zeros_like(x))}).axes[0].get_yscale() == "linear"

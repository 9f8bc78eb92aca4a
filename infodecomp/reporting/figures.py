"""Figures from numpy arrays: image + information heat maps, MMSE curves, accuracy against
logsnr samples (matplotlib, no pyplot).

Figures are built on ``matplotlib.figure.Figure`` directly, so no GUI backend or global pyplot
state is involved; PNGs are rendered by the Agg canvas. Colours are readable with the common
colour-vision deficiencies: heat maps use viridis (perceptually uniform, monotonic in
lightness, so also readable in greyscale), lines the Okabe-Ito palette, and lines also differ
in dash pattern (and marker), not in colour alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

HEAT_CMAP = "viridis"
# Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision
# deficiency.
LINE_COLOURS = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#000000",  # black
    "#F0E442",  # yellow
)
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 150


def line_style(i: int) -> dict:
    """Colour, dash pattern and marker of the i-th line of a plot (all three vary with i)."""
    return {
        "color": LINE_COLOURS[i % len(LINE_COLOURS)],
        "linestyle": LINE_STYLES[i % len(LINE_STYLES)],
        "marker": MARKERS[i % len(MARKERS)],
    }


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"panel: image must be H x W x 3, got shape {image.shape}.")
    if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
        raise ValueError(
            "panel: image values must be finite and in [0, 1]; divide uint8 images by 255."
        )
    return image


def _check_map(name: str, heat: np.ndarray) -> np.ndarray:
    heat = np.asarray(heat, dtype=np.float64)
    if heat.ndim != 2:
        raise ValueError(f"panel: map '{name}' must be H x W, got shape {heat.shape}.")
    if not np.all(np.isfinite(heat)):
        raise ValueError(f"panel: map '{name}' holds NaN or infinite values.")
    return heat


def panel(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    shared_scale: Sequence[str] = (),
    title: str | None = None,
    *,
    overlay: bool = True,
    alpha: float = 0.85,
    units: Mapping[str, str] | None = None,
    cmap: str = HEAT_CMAP,
) -> Figure:
    """The image followed by one heat map per entry of ``maps``, each with a colour bar.

    Maps of any resolution are stretched over the image (bilinear), e.g. a 64 x 64 latent-grid
    map over a 512 x 512 image. Maps named in ``shared_scale`` share one colour range (so MI and
    CMI can be compared by eye); every other map uses its own range.

    Args:
        image: H x W x 3 array in [0, 1].
        maps: name -> 2-D map (nats per pixel, attention weight, ...), drawn in this order.
        shared_scale: names of maps drawn on a common colour scale.
        title: figure title.
        overlay: draw each map semi-transparently over a grey copy of the image; if False, the
            maps are drawn on their own.
        alpha: opacity of the overlaid map at its maximum (lower values are more transparent).
        units: name -> colour-bar label (e.g. ``"nats / pixel"``) for the maps that have one.
        cmap: matplotlib colormap of the maps (default viridis, colour-blind safe).

    Returns:
        The figure.
    """
    image = _check_image(image)
    checked = {name: _check_map(name, m) for name, m in maps.items()}
    unknown = [n for n in shared_scale if n not in checked]
    if unknown:
        raise ValueError(
            f"panel: shared_scale names {unknown} are not among the maps {list(checked)}."
        )
    shared = [checked[n] for n in shared_scale]
    shared_lim = (min(m.min() for m in shared), max(m.max() for m in shared)) if shared else None

    n = 1 + len(checked)
    fig = Figure(figsize=(3.2 * n, 3.5 if title else 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, n))
    h, w = image.shape[:2]
    extent = (0, w, h, 0)
    axes[0].imshow(image, extent=extent)
    axes[0].set_title("image", fontsize=10)
    grey = np.repeat(image.mean(axis=2, keepdims=True), 3, axis=2)
    for ax, (name, heat) in zip(axes[1:], checked.items(), strict=True):
        lim = shared_lim if name in shared_scale else (heat.min(), heat.max())
        suffix = " (shared scale)" if name in shared_scale and len(shared_scale) > 1 else ""
        im = _draw_map(ax, heat, lim, grey if overlay else None, alpha, cmap, extent)
        ax.set_title(f"{name}{suffix}", fontsize=10)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        bar.solids.set_alpha(1.0)
        bar.ax.tick_params(labelsize=7)
        if units and units.get(name):
            bar.set_label(units[name], fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def _draw_map(ax, heat: np.ndarray, lim, grey: np.ndarray | None, alpha: float, cmap: str, extent):
    """Draws one heat map on `ax` in the colour range `lim`, over the grey image when `grey` is
    given (low values fade out there); returns the image artist for the colour bar."""
    vmin, vmax = lim
    if vmax <= vmin:  # a constant map: give the colour bar a visible range
        vmax = vmin + 1e-12
    opacity: float | np.ndarray = 1.0
    if grey is not None:
        ax.imshow(0.2 + 0.7 * grey, extent=extent)
        # low values fade out so the image shows through where the map says little
        level = np.clip((heat - vmin) / (vmax - vmin), 0.0, 1.0)
        opacity = alpha * (0.25 + 0.75 * level)
    return ax.imshow(
        heat,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        extent=extent,
        interpolation="bilinear",
        alpha=opacity,
    )


def _binned_mean(x: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(x.min(), x.max(), n_bins + 1)
    idx = np.clip(np.digitize(x, edges) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sums = np.bincount(idx, weights=y, minlength=n_bins)
    centres = (edges[:-1] + edges[1:]) / 2
    keep = counts > 0
    return centres[keep], sums[keep] / counts[keep]


def mmse_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    title: str | None = None,
    *,
    n_bins: int = 30,
    log_y: bool | None = None,
) -> Figure:
    """MMSE against logsnr: one scatter of the samples plus a binned mean line per label.

    Args:
        curves: label -> (logsnr samples, squared-error samples), two 1-D arrays of one length.
        title: axes title.
        n_bins: equal-width logsnr bins for the mean line.
        log_y: log scale for the error axis; by default when every value is positive.

    Returns:
        The figure.
    """
    if not curves:
        raise ValueError("mmse_curves: no curves given.")
    checked = {}
    for label, (x, y) in curves.items():
        x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
        if x.shape != y.shape or x.size == 0:
            raise ValueError(
                f"mmse_curves: '{label}' needs logsnr and mmse arrays of one "
                f"non-zero length, got {x.shape} and {y.shape}."
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError(f"mmse_curves: '{label}' holds NaN or infinite values.")
        checked[label] = (x, y)
    if log_y is None:
        log_y = all(np.all(y > 0) for _, y in checked.values())

    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (label, (x, y)) in enumerate(checked.items()):
        style = line_style(i)
        colour = style["color"]
        ax.scatter(x, y, s=6, alpha=0.25, color=colour, linewidths=0, rasterized=True)
        if x.size > 1 and x.max() > x.min():
            cx, cy = _binned_mean(x, y, min(n_bins, max(1, x.size // 2)))
            ax.plot(cx, cy, color=colour, linestyle=style["linestyle"], linewidth=2, label=label)
        else:
            ax.plot(x, y, style["marker"], color=colour, label=label)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("log SNR")
    ax.set_ylabel(r"MMSE  $\mathbb{E}\,\|\epsilon - \hat{\epsilon}\|^2$")
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return fig


def accuracy_curves(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    *,
    ylabel: str = "accuracy (%)",
    xlabel: str = "logsnr samples per image",
    title: str | None = None,
) -> Figure:
    """One panel per benchmark column, one line per method: accuracy against the number of
    logsnr samples (log x axis), on one y range across the panels so they can be compared.

    Args:
        curves: panel title -> line label -> (samples [n], accuracy [n]).
        ylabel, xlabel: axis labels.
        title: figure title.

    Returns:
        The figure.
    """
    panels = {k: v for k, v in curves.items() if v}
    if not panels:
        raise ValueError("accuracy_curves: no curves given.")
    n = len(panels)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    labels = list(dict.fromkeys(label for lines in panels.values() for label in lines))
    for ax, (name, lines) in zip(axes, panels.items(), strict=False):
        ticks: set[float] = set()
        for label, (x, y) in lines.items():
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            order = np.argsort(x)
            ax.plot(x[order], y[order], linewidth=1.8, markersize=5, label=label,
                    **line_style(labels.index(label)))  # fmt: skip
            ticks.update(float(v) for v in x)
        ax.set_xscale("log")
        # the sample counts themselves as plain-number ticks (no 4 x 10^0)
        ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3, linewidth=0.6)
        ax.spines[["top", "right"]].set_visible(False)
    for ax in axes[::cols]:
        ax.set_ylabel(ylabel)
    for ax in axes[n:]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    seen = dict(zip(names, handles, strict=True))
    for ax in axes[1:n]:
        h, nm = ax.get_legend_handles_labels()
        seen.update({k: v for k, v in zip(nm, h, strict=True) if k not in seen})
    fig.legend(list(seen.values()), list(seen), loc="outside lower center",
               ncols=min(4, len(seen)), frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=12)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG at 150 dpi (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png", facecolor="white")
    return path

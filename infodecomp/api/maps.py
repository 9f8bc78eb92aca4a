"""`maps`: where in an image a caption (MI) or one of its words (CMI) is informative, beside
the attention baselines, as an object that plots, overlays and saves itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from infodecomp.api.loading import (
    ImageLike,
    Model,
    as_images,
    as_model,
    check_for_model,
    content_key,
    settings,
)
from infodecomp.data.coco import normalize_space, whole_word
from infodecomp.data.records import WordItem
from infodecomp.estimators.protocol import encode_keyed
from infodecomp.estimators.queries import CMI, MI, option_queries
from infodecomp.experiments.common import engine_config
from infodecomp.experiments.config import (
    LOCALIZE_ATTENTION,
    EstimatorConfig,
    RunConfig,
    VisualizeConfig,
)
from infodecomp.experiments.maps import (
    display_image,
    has_daam,
    has_traced_attention,
    info_maps,
    raw_aggregation,
    to_image_grid,
    word_maps,
)
from infodecomp.models.capabilities import (
    AttentionCapture,
    ConceptAttentionMaps,
    DaamInversion,
    missing,
)
from infodecomp.reporting import figures

INFO_METHODS = ("mi", "cmi")  # information maps (nats per pixel), compared on one colour scale
ATTENTION_METHODS = ("attention", "attn_info", "concept")  # baselines (attention weight)
METHODS = ("mi", "cmi", "attention", "attn_info", "concept")
_VIS = VisualizeConfig()  # the command line's defaults (daam_steps, attention)


def delete_word(caption: str, word: str) -> str:
    """The caption with the first whole-word occurrence of `word` deleted (the CMI context)."""
    pattern = whole_word(word)
    if not pattern.search(caption):
        raise ValueError(f"word {word!r} is not a whole word of the caption {caption!r}")
    return normalize_space(pattern.sub("", caption, count=1))


def _display(image: Any) -> np.ndarray:
    """An image for drawing, H x W x 3 in [0, 1]: arrays (uint8 or [0, 1]), PIL images, files,
    or tensors [3, H, W] in [-1, 1]."""
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3:
        arr = image.astype(np.float64)
        return arr / 255.0 if image.dtype == np.uint8 else np.clip(arr, 0.0, 1.0)
    (im,), _ = as_images(image)
    if isinstance(im, torch.Tensor):
        return ((im.float() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0


@dataclass
class InfoMaps:
    """Pixel maps of one image and caption, at the image's resolution (as the model saw it).

    Methods (keys of `maps`):
    - "mi": pointwise MI map, i^o per pixel in nats: of the caption given nothing (no `word`),
      or of the word alone given nothing (with a `word`, as in Table 3's MI row).
    - "cmi": the word's CMI map i^o(x; word | context), context = the caption with the word
      deleted (paper eq. 11).
    - "attention": the DAAM baseline (cross-attention traced over DDIM inversion and
      reconstruction), aggregated as `attention` says.
    - "attn_info": Attention+Information (attention traced at the CMI map's logsnr draws).
    - "concept": ConceptAttention (`attention="concept"`, SD 3.x / Flux.1): the word's share of
      the concepts' softmax in the joint attention's output space (models.attention.concept).
    Information maps are nats per pixel of the model's data grid (for a latent model a latent
    pixel covers vae_factor^2 image pixels; its value is spread over them by bilinear
    resizing), and `totals` holds each one's sum with its standard error in nats. The
    attention maps are attention weights, comparable only within one map.

    Attributes:
        image: the image as the model saw it, H x W x 3 in [0, 1].
        caption, word, context: the texts (word / context None for a caption's MI map).
        maps: method -> map [H, W].
        labels: method -> display label (names the word).
        totals: information method -> (value, standard error) in nats.
        attention: the `attention` setting ("daam", "layer-mean", or "concept": ConceptAttention
            beside attention maps aggregated as DAAM's).
        skipped: method -> why the model gave no such map.
    """

    image: np.ndarray
    caption: str
    word: str | None
    context: str | None
    maps: dict[str, np.ndarray]
    labels: dict[str, str]
    totals: dict[str, tuple[float, float]]
    attention: str = "daam"
    skipped: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, method: str) -> np.ndarray:
        if method not in self.maps:
            why = self.skipped.get(method, f"one of {list(self.maps)}")
            raise KeyError(f"no '{method}' map: {why}")
        return self.maps[method]

    def __contains__(self, method: object) -> bool:
        return method in self.maps

    @staticmethod
    def units(method: str) -> str:
        """Colour-bar label of a method's map."""
        return "nats / pixel" if method in INFO_METHODS else "attention weight"

    def _named(self, methods: Any) -> tuple[dict[str, np.ndarray], list[str], dict[str, str]]:
        if methods is None:
            chosen = list(self.maps)
        else:
            chosen = [methods] if isinstance(methods, str) else list(methods)
        for m in chosen:
            self[m]  # noqa: B018  (a KeyError naming the method)
        named, units = {}, {}
        for m in chosen:
            label = self.labels[m]
            if m in self.totals:
                value, se = self.totals[m]
                label = f"{label}\n{value:.3g} ± {se:.2g} nats"
            named[label], units[label] = self.maps[m], self.units(m)
        shared = [lab for lab, m in zip(named, chosen, strict=True) if m in INFO_METHODS]
        return named, (shared if len(shared) > 1 else []), units

    def _title(self) -> str:
        return f"{self.caption}  [word: {self.word}]" if self.word else self.caption

    def plot(
        self,
        methods: str | list[str] | None = None,
        *,
        title: str | None = None,
        cmap: str = figures.HEAT_CMAP,
    ) -> Figure:
        """The image, then each map on its own with a colour bar; MI and CMI share one colour
        scale (so they can be compared by eye). Returns a matplotlib Figure (shown inline by
        Jupyter)."""
        named, shared, units = self._named(methods)
        return figures.panel(
            self.image, named, shared, title or self._title(), overlay=False, units=units, cmap=cmap
        )

    def overlay(
        self,
        image: Any = None,
        methods: str | list[str] | None = None,
        *,
        alpha: float = 0.85,
        title: str | None = None,
        cmap: str = figures.HEAT_CMAP,
    ) -> Figure:
        """Each map drawn semi-transparently over a grey copy of `image` (default: the image
        as the model saw it; any size, the maps are stretched over it), colour bars included."""
        base = self.image if image is None else _display(image)
        named, shared, units = self._named(methods)
        return figures.panel(
            base,
            named,
            shared,
            title or self._title(),
            overlay=True,
            alpha=alpha,
            units=units,
            cmap=cmap,
        )

    def save(
        self, path: str | Path, *, overlay: bool = True, methods: str | list[str] | None = None
    ) -> Path:
        """Writes the figure (`overlay()` or `plot()`) as a PNG; returns its path."""
        fig = self.overlay(methods=methods) if overlay else self.plot(methods)
        return figures.save(fig, path)


def maps(
    model: Model | Any,
    image: ImageLike,
    caption: str,
    word: str | None = None,
    *,
    context: str | None = None,
    methods: list[str] | tuple[str, ...] | None = None,
    attention: str = _VIS.attention,
    concepts: list[str] | None = None,
    daam_steps: int = _VIS.daam_steps,
    estimator: EstimatorConfig | None = None,
    run: RunConfig | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    key: str | None = None,
) -> InfoMaps:
    """Pixel-wise information maps of one image, from one call.

    Without `word`: the MI map of the caption. With `word`: the CMI map of the word given the
    rest of the caption, the MI map of the word alone, and, where the model has cross-attention
    (models.capabilities.AttentionCapture / DaamInversion), the DAAM and Attention+Information
    baselines, as `infodecomp localize` / `visualize` compute them (experiments.maps).

    Args:
        model: a `Model` from `load` / `from_pipeline`, or a bare denoiser.
        image: a PIL image, file path or tensor (see `score`).
        caption: the caption.
        word: a whole word (or words) of the caption, or None.
        context: the CMI context; default: the caption with the word deleted.
        methods: which of "mi", "cmi", "attention", "attn_info" to compute; default: every one
            the model supports. Asking for an attention map the model cannot give is an error.
        attention: aggregation of attention maps, "daam" (DAAM's, the paper's) or "layer-mean";
            "concept" adds ConceptAttention (joint-attention models) beside the raw
            cross-attention, aggregated as DAAM's.
        concepts: the concepts the word competes with under attention="concept" (default: the
            published background concepts: background, floor, grass, tree, sky).
        daam_steps: DDIM steps of the DAAM baseline.
        estimator, run, n_samples, seed: the command line's `estimator` / `run` configs and
            shortcuts (n_samples: logsnr samples of the maps; default 100).
        key: seeds the (logsnr, eps) draws; default: a hash of the image's encoding.

    Returns:
        An `InfoMaps` holding the maps at image resolution, with `plot()`, `overlay()` and
        `save()`.
    """
    m = as_model(model)
    wanted = _wanted_methods(attention, methods)
    est, rcfg = settings(estimator, run, n_samples=n_samples, seed=seed)
    (img,), _ = as_images(image)
    check_for_model(m, [img])
    den, k = m.denoiser, key or content_key(img)
    x = encode_keyed(den, [img], [content_key(img)], rcfg.seed)  # [1, C, h, w], pixel-keyed
    ecfg = engine_config(est, rcfg, pixel_maps=True)
    if word is None:
        if set(wanted) - {"mi"} and methods is not None:
            raise ValueError(f"methods {sorted(set(wanted) - {'mi'})} need a word")
        (e,) = info_maps(den, option_queries(x[:1], [[caption]], [k]), ecfg)
        heat, totals = {"mi": (e.io_map[0], None)}, {"mi": e.info_o(0)}
        labels, ctx, skipped = {"mi": f"MI '{caption}'"}, None, {}
    else:
        ctx = context if context is not None else delete_word(caption, word)
        skipped = _drop_unsupported(m, wanted, strict=methods is not None)
        item = WordItem(k, img, caption, word, ctx, ctx)
        options = _word_map_options(den, wanted, attention, daam_steps, concepts, rcfg.seed)
        (wm,) = word_maps(den, [item], x, ecfg, **options)
        heat, totals, labels = _word_heats(wm, word, attention)
    order = [mt for mt in wanted if mt in heat]
    grids = {mt: to_image_grid(den, heat[mt][0], None, attention=heat[mt][1])[0] for mt in order}
    return InfoMaps(
        image=display_image(den, img),
        caption=caption,
        word=word,
        context=ctx,
        maps=grids,
        labels={mt: labels[mt] for mt in order},
        totals={mt: totals[mt] for mt in order if mt in totals},
        attention=attention,
        skipped=skipped,
    )


def _wanted_methods(attention: str, methods: list[str] | tuple[str, ...] | None) -> list[str]:
    """The methods `maps` computes: `methods` checked, or every one; "concept" only under
    attention="concept" (asked for without it: an error)."""
    if attention not in LOCALIZE_ATTENTION:
        raise ValueError(f"attention={attention!r} is not one of: {', '.join(LOCALIZE_ATTENTION)}")
    wanted = list(METHODS if methods is None else methods)
    unknown = sorted(set(wanted) - set(METHODS))
    if unknown:
        raise ValueError(f"methods {unknown} unknown; choose from {list(METHODS)}")
    if "concept" in wanted and attention != "concept":
        if methods is not None:
            raise ValueError("the 'concept' map needs attention='concept'")
        wanted.remove("concept")
    return wanted


def _drop_unsupported(m: Model, wanted: list[str], strict: bool) -> dict[str, str]:
    """Removes from `wanted` the attention maps the model cannot give (an error when `strict`:
    the caller named them); returns method -> why, for those skipped."""
    needs = {
        "attention": (AttentionCapture, DaamInversion),
        "attn_info": (AttentionCapture,),
        "concept": (ConceptAttentionMaps,),
    }
    skipped = {}
    for method, protocols in needs.items():
        lacking = missing(m.denoiser, *protocols)
        if method in wanted and lacking:
            why = f"{m.name} does not implement {', '.join(lacking)}"
            if strict:
                raise ValueError(f"no '{method}' map: {why}")
            skipped[method] = why
            wanted.remove(method)
    return skipped


def _word_map_options(
    den: Any, wanted: list[str], attention: str, daam_steps: int, concepts, seed: int
) -> dict:
    """experiments.maps.word_maps's settings for the methods `maps` computes."""
    return {
        "daam": "attention" in wanted and has_daam(den),
        "traced": "attn_info" in wanted and has_traced_attention(den),
        "attention": attention if "concept" in wanted else raw_aggregation(attention),
        "daam_steps": daam_steps,
        "concepts": concepts,
        "seed": seed,
    }


def _word_heats(wm, word: str, attention: str) -> tuple[dict, dict, dict]:
    """(method -> (map, aggregation), method -> totals, method -> label) of one word's maps."""
    e = wm.estimate
    raw = raw_aggregation(attention)
    heat = {"mi": (e.io_map[MI], None), "cmi": (e.io_map[CMI], None)}
    totals = {"mi": e.info_o(MI), "cmi": e.info_o(CMI)}
    if wm.attention is not None:
        heat["attention"] = (wm.attention, raw)
    if wm.attn_info is not None:
        heat["attn_info"] = (wm.attn_info, raw)
    if wm.concept is not None:
        heat["concept"] = (wm.concept, None)
    labels = {
        "mi": f"MI '{word}'",
        "cmi": f"CMI '{word}' | context",
        "attention": f"Attention ({raw}) '{word}'",
        "attn_info": f"Attention+Information ({raw}) '{word}'",
        "concept": f"ConceptAttention '{word}'",
    }
    return heat, totals, labels

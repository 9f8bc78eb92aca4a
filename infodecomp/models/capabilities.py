"""What a model can do beyond the engine's Denoiser protocol, as runtime-checkable protocols.

Commands ask these protocols (`isinstance(model, AttentionCapture)`), never a model's name, so a
new model family gets every feature it implements and a clear skip for the rest. The engine's
own protocol, `Denoiser` (encode_images, encode_conditions, eps_hat), is in
infodecomp.estimators.protocol.

| protocol          | who implements it                 | used by                                  |
| ----------------- | --------------------------------- | ---------------------------------------- |
| ImageModel        | diffusers adapters (latent/pixel) | runner (RGB input), maps, intervene, visualize, validate |
| AttentionCapture  | adapters with cross-attention     | localize / visualize (attention baselines) |
| DaamInversion     | adapters with a DDIM schedule     | localize / intervene / visualize (DAAM)  |
| ProbabilityFlow   | every model the ODE can run on    | intervene (sigma range of the ODE)       |
| ExactLikelihood   | exact oracles                     | validate, runner (oracle/data noise check) |
| ExactInformation  | the ShapesWorld oracle            | validate, localize / intervene (exact references) |
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class ImageModel(Protocol):
    """Consumes RGB images (PIL, or [3, H, W] tensors in [-1, 1]) at `image_size` pixels.

    Its data space may be a latent grid smaller than the image: maps live there, and
    `upsample_map` / `mask_transform` bring maps and ground-truth masks onto one grid.
    """

    image_size: int

    def preview(self, image: Any) -> torch.Tensor:
        """The image as the model sees it (resized, cropped): [3, H, W] in [0, 1]."""
        ...

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Points of the data space [N, C, h, w] -> images [N, 3, H, W] in [0, 1]."""
        ...

    def mask_transform(self, mask: torch.Tensor, size: Any = None) -> torch.Tensor:
        """A ground-truth mask [H, W] through the image's geometry, at `size` (default: map grid)."""
        ...

    def upsample_map(self, heat: torch.Tensor, size: Any) -> torch.Tensor:
        """A map [h, w] on the data grid -> [size, size]."""
        ...


@runtime_checkable
class AttentionCapture(Protocol):
    """Text cross-attention that can be recorded without changing the outputs."""

    def trace(
        self, skip_lowest: bool = True, aggregation: str = "daam", pool_rows: bool = False
    ) -> AbstractContextManager[Any]:
        """Records attention of eps_hat calls inside the context; the recorder gives [B, T, h, w]
        aggregated by `aggregation` ("daam" or "layer-mean", see models.attention)."""
        ...

    def attention_maps(
        self,
        latent: torch.Tensor,
        prompt: str,
        logsnr: torch.Tensor,
        eps: torch.Tensor,
        max_batch: int = 64,
    ) -> torch.Tensor:
        """Attention+Information: attention summed over single calls at the given draws [T, h, w]."""
        ...

    def word_map(
        self, maps: torch.Tensor, caption: str, word: str, occurrence: int | None = None
    ) -> torch.Tensor:
        """Mean of token maps [T, h, w] over the word's tokens in the caption -> [h, w]."""
        ...


@runtime_checkable
class DaamInversion(Protocol):
    """DAAM on a real image: deterministic DDIM inversion then reconstruction, traced."""

    def daam_maps(
        self, latent: torch.Tensor, prompt: str, n_steps: int = 50, aggregation: str = "daam"
    ) -> torch.Tensor:
        """Token maps [T, h, w] of a data-space point [C, h, w]."""
        ...


@runtime_checkable
class ConceptAttentionMaps(Protocol):
    """ConceptAttention (models.attention.concept): concept tokens through the joint attention."""

    def concept_maps(
        self, latent: torch.Tensor, caption: str, concepts: list[str], *, key: str, seed: int = 0
    ) -> torch.Tensor:
        """Concept maps [K, gh, gw] (softmax over the K concepts) of a data-space point."""
        ...


@runtime_checkable
class ProbabilityFlow(Protocol):
    """The noise levels the probability-flow ODE may integrate over (VE sigma = exp(-logsnr/2))."""

    sigma_range: tuple[float, float]


@runtime_checkable
class ExactLikelihood(Protocol):
    """An exact oracle: closed-form log-densities of the data it is optimal for.

    `world` names the synthetic world whose data it is exact for ("shapes", "gaussian") and
    `noise` the pixel noise of that data; data drawn with another noise makes it inexact.
    """

    world: str
    noise: float

    def log_prob(self, x: torch.Tensor, condition: Any = None) -> torch.Tensor:
        """Exact log p(x | condition) per row (condition None or "" for log p(x))."""
        ...


@runtime_checkable
class ExactInformation(Protocol):
    """Exact pointwise information of one image between two captions, with its pixel map
    (models.oracles.InfoIntegral: totals and maps by logsnr range, with Monte Carlo errors)."""

    def exact_info(
        self, x: torch.Tensor, with_caption: str, without_caption: str, **kw: Any
    ) -> Any:
        """i^o(x; with | without), i^s and the pixel-wise i^o from the model's own posteriors."""
        ...


def needs_rgb(model: Any) -> bool:
    """True when data-set tensors must be handed over as RGB images: an image model, unless it
    was trained on a synthetic world's own pixels (`trained_world`; it takes them as they are)."""
    return isinstance(model, ImageModel) and getattr(model, "trained_world", None) is None


def missing(model: Any, *protocols: type) -> list[str]:
    """Names of the protocols `model` does not implement (for one-line skip messages)."""
    return [p.__name__ for p in protocols if not isinstance(model, p)]


__all__ = [
    "AttentionCapture",
    "ConceptAttentionMaps",
    "DaamInversion",
    "ExactInformation",
    "ExactLikelihood",
    "ImageModel",
    "ProbabilityFlow",
    "missing",
    "needs_rgb",
]

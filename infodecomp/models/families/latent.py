"""Latent diffusion models (a VAE around a text-conditioned denoising network) as Denoisers.

`LatentDiffusionDenoiser` holds what every latent text-to-image family shares: loading its parts
(classes read from model_index.json; models.families.pipeline), the dtype and the attention
processor applied once, the logsnr -> timestep lookup, the conversion to eps, prompt caching and
attention capture; VAE encode / decode and the geometry of images, masks and maps come from its
base `LatentImageModel` (models.families.image_model). A family is a
declaration (`PARTS`, `HONOURS`, `_encode_prompts`, `_denoise`; docs/extending.md); one on
another time variable overrides `_make_schedule`, `_timestep`, `_scale_input`, `_to_eps`
(rectified flow: models.dynamics.flow.FlowMatchingMixin, formulas in models/dynamics/conversions.py).

A DDPM network trained on x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps sees exactly the engine's
z = sqrt(sigmoid(logsnr)) x + sqrt(sigmoid(-logsnr)) eps when abar_t = sigmoid(logsnr); z is fed
as is and only the timestep is looked up from logsnr (models/dynamics/schedule.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from infodecomp.estimators.protocol import Conditions, conditions_to, select_rows
from infodecomp.models.attention.capture import (
    CrossAttentionRecorder,
    attention_information_maps,
    capture_cross_attention,
    daam_maps,
)
from infodecomp.models.device import resolve_device, resolve_dtype
from infodecomp.models.dynamics.schedule import DiscreteSchedule, v_to_eps
from infodecomp.models.families.image_model import LatentImageModel
from infodecomp.models.families.pipeline import (
    ModelFolderError,
    check_offload,
    hub_error_hint,
    part_classes,
    quiet_hub,
    refuse_options,
    required_files,
    resolve_model_path,
    scheduler_config,
    short_error,
)
from infodecomp.models.families.tokens import word_token_indices
from infodecomp.models.presets import AdapterOptions

__all__ = [
    "LatentDiffusionDenoiser",
    "ModelFolderError",
    "hub_error_hint",
    "quiet_hub",
    "resolve_model_path",
]

_offload_guard = check_offload  # tests exercise the offload paths on the CPU through this seam


class LatentDiffusionDenoiser(LatentImageModel):
    """Denoiser protocol (and ImageModel, AttentionCapture, DaamInversion, ProbabilityFlow
    capabilities) over a latent text-to-image model. Subclass per family; see the module doc.

    Conditions are prompts ("" is the unconditional); images are PIL images or [3, H, W] float
    tensors in [-1, 1]. eps_hat always returns float32.
    """

    # Pipeline parts the family reads (their classes come from model_index.json): the first is
    # the denoising network; "vae" (absent for pixel-space families, see models.pixel).
    PARTS: ClassVar[tuple[str, ...]] = ()
    # Parts loaded only when model_index.json names a class for them (SD 3's T5 encoder).
    OPTIONAL_PARTS: ClassVar[tuple[str, ...]] = ()
    # Adapter options the family acts on besides UNIVERSAL_OPTIONS; the others are refused when
    # set away from their default. The base implements "time_rule" (DDPM timesteps) and
    # "attn_processor" (diffusers' AttnProcessor / AttnProcessor2_0 on every attention module).
    HONOURS: ClassVar[frozenset[str]] = frozenset({"time_rule", "attn_processor"})
    # T5 tokens per prompt when the family honours model.text_tokens and it is unset.
    TEXT_TOKENS: ClassVar[int | None] = None
    # The VAE overflows in float16 (SDXL's): it then runs in float32, the rest in float16.
    VAE_FLOAT16_OVERFLOWS: ClassVar[bool] = False
    # Latent grid when the network config has no sample_size (Flux.1: 128, i.e. 1024 px).
    DEFAULT_LATENT_SIZE: ClassVar[int | None] = None

    def __init__(
        self,
        *,
        schedule: Any,
        device: torch.device,
        dtype: torch.dtype,
        options: AdapterOptions | None = None,
        seed: int = 0,
        vae_batch: int = 8,
        pipeline_config: dict[str, Any] | None = None,
        **parts_and_options: Any,
    ) -> None:
        """Builds the adapter from loaded parts (keywords named as in `PARTS`; `vae` may be
        left out by pixel-space families) and options (AdapterOptions fields override
        `options`). `pipeline_config`: the pipeline's model_index.json, for family settings."""
        opts, parts = self._split(options, parts_and_options)
        self.options, self.pipeline_config = opts, dict(pipeline_config or {})
        for name in (*self.PARTS, *self.OPTIONAL_PARTS):
            setattr(self, name, parts.get(name))
        network, vae = parts[self.PARTS[0]], parts.get("vae") or self._autoencoder(dtype)
        self.vae = vae
        encoders = tuple(
            m
            for k, m in parts.items()
            if isinstance(m, torch.nn.Module) and k not in (self.PARTS[0], "vae")
        )
        self.network, self.schedule = network, schedule
        self.device, self.dtype = device, dtype
        self.time_rule, self.latent, self.resize = opts.time_rule, opts.latent, opts.resize
        self.resample, self.mask_resample = opts.resample, opts.mask_resample
        self.seed, self.vae_batch = seed, vae_batch
        self.text_tokens = int(opts.text_tokens or self.TEXT_TOKENS or 0) or None
        self.token_count = int(self._token_count())
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        sample = getattr(network.config, "sample_size", None) or self.DEFAULT_LATENT_SIZE
        self.image_size = int(opts.image_size or sample * self.vae_scale_factor)
        if self.image_size % self.vae_scale_factor:
            raise ValueError(
                f"model.image_size={self.image_size} is not a multiple of the VAE factor "
                f"{self.vae_scale_factor}"
            )
        self.latent_size = (self.image_size // self.vae_scale_factor,) * 2
        self.offload = opts.offload
        _offload_guard(self.offload, device)
        self.channels_last = device.type == "cuda" and self.offload != "sequential"
        self.vae_dtype = (
            torch.float32 if (dtype == torch.float16 and self.VAE_FLOAT16_OVERFLOWS) else dtype
        )
        self._place(network, vae, encoders)
        self._network_call = torch.compile(network) if opts.compile else network
        self._tracing = False
        self._prompt_cache: dict[str, Conditions] = {}
        self._latent_cache: dict[Hashable, torch.Tensor] = {}
        self.prompt_encodes = 0
        self.image_encodes = 0
        self._check()

    def _split(
        self, options: AdapterOptions | None, parts_and_options: dict[str, Any]
    ) -> tuple[AdapterOptions, dict[str, Any]]:
        """(checked options, parts) from the constructor's keywords; a wrong part is a
        TypeError, an option the family does not act on a one-line ValueError."""
        names = {f.name for f in fields(AdapterOptions)}
        overrides = {k: v for k, v in parts_and_options.items() if k in names}
        parts = {k: v for k, v in parts_and_options.items() if k not in names}
        unknown = sorted(set(parts) - {*self.PARTS, *self.OPTIONAL_PARTS, "vae"})
        missing_parts = [p for p in self.PARTS if parts.get(p) is None and p != "vae"]
        if unknown or missing_parts:
            raise TypeError(
                f"{type(self).__name__} takes the parts {', '.join(self.PARTS)} (optional: "
                f"{', '.join(self.OPTIONAL_PARTS) or 'none'}); got unknown {unknown}, missing "
                f"{missing_parts}"
            )
        opts = replace(options or AdapterOptions(), **overrides).check()
        refuse_options(opts, self.HONOURS, type(self).__name__)
        return opts, parts

    def _place(self, network: Any, vae: Any, encoders: tuple[Any, ...]) -> None:
        """Every part in eval mode without gradients, in its dtype, on its device (under
        model.offload the encoders and the VAE live in CPU memory between uses); the attention
        processor set once when the family honours model.attn_processor."""
        device, dtype = self.device, self.dtype
        # "model" / "sequential" offload: encoders and VAE live in CPU memory between uses.
        self._encoders = encoders
        self._offloaded = (vae, *encoders) if self.offload != "none" else ()
        home = torch.device("cpu") if self.offload != "none" else device
        for m, want in ((vae, self.vae_dtype), *((e, dtype) for e in encoders)):
            m.to(device=home).eval().requires_grad_(False)
            if m.dtype != want:  # from_pretrained already loads in the dtype; cast only the rest
                m.to(dtype=want)
        network.eval().requires_grad_(False)
        if network.dtype != dtype:
            network.to(dtype=dtype)
        if "attn_processor" in self.HONOURS:
            from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

            eager = self.options.attn_processor == "eager"
            network.set_attn_processor(AttnProcessor() if eager else AttnProcessor2_0())
        if self.offload == "sequential":
            from accelerate import cpu_offload  # streams each submodule's weights to the device

            cpu_offload(network, execution_device=device)
        else:
            network.to(device=device)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)

    @contextmanager
    def _visiting(self, *modules: Any) -> Iterator[None]:
        """Under model.offload, moves offloaded modules to the device for the body, then back."""
        moving = [m for m in modules if any(m is o for o in self._offloaded)]
        for m in moving:
            m.to(self.device)
        try:
            yield
        finally:
            for m in moving:
                m.to("cpu")

    def _require_patch_grid(self, patch: int) -> None:
        """A transformer that cuts the latent grid into patch x patch tiles needs a grid that
        is a multiple of the patch: a one-line error naming image_size and the fix otherwise."""
        if self.latent_size[0] % patch:
            raise ValueError(
                f"model.image_size={self.image_size} gives a {self.latent_size[0]}-latent grid, "
                f"not a multiple of the patch size {patch}; use a multiple of "
                f"{patch * self.vae_scale_factor}"
            )

    # --- family hooks ------------------------------------------------------------------------

    def _token_count(self) -> int:
        """Length of the text encoding the attention sees (one CLIP encoder: its 77 tokens)."""
        return int(self.tokenizer.model_max_length)  # type: ignore[attr-defined]

    def _check(self) -> None:
        """Family checks once every part is in place (e.g. the patch grid); default: none."""

    @classmethod
    def _autoencoder(cls, dtype: torch.dtype) -> Any:
        """The VAE when `vae` is not among the parts (pixel-space mixins return the identity)."""
        raise TypeError(f"{cls.__name__} needs a vae part (or put PixelSpaceMixin first)")

    def _encode_prompts(self, prompts: list[str]) -> Conditions:
        """Text encoders on a batch of prompts -> encoding rows [k, ...] (every field)."""
        raise NotImplementedError

    def _denoise(
        self, network: Any, z: torch.Tensor, t: torch.Tensor, cond: Conditions
    ) -> torch.Tensor:
        """One call of the denoising network on model-dtype inputs; returns its raw output."""
        raise NotImplementedError

    @classmethod
    def _make_schedule(cls, config: dict[str, Any]) -> Any:
        """The logsnr view of the scheduler config (DDPM families: DiscreteSchedule)."""
        return DiscreteSchedule.from_config(config)

    # --- loading -----------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        options: AdapterOptions | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "float32",
        revision: str | None = None,
        seed: int = 0,
        **option_overrides: Any,
    ) -> LatentDiffusionDenoiser:
        """Loads a pipeline's parts from a preset name, hub id or local folder.

        Each part in `PARTS` (and each of `OPTIONAL_PARTS` the index names) is loaded with the
        class model_index.json gives it, from its subfolder, in the run's dtype.

        Args:
            path: a preset name, a hub id, or a folder written by `save_pretrained`.
            options: adapter options (infodecomp.models.presets.AdapterOptions); keyword
                arguments named like its fields override single options.
            device: "auto" (cuda > mps > cpu) or a torch device.
            dtype: weights dtype of every part; outputs stay float32.
            revision: hub revision (commit, tag or branch) of a hub id; ignored for folders.
            seed: the default seed of the VAE posterior samples (latent="sample");
                `encode_images(seed=...)` overrides it per call (the commands pass run.seed).
        """
        from infodecomp.models.families.text_encoders import load_part, model_index

        opts = replace(options or AdapterOptions(), **option_overrides).check()
        refuse_options(opts, cls.HONOURS, cls.__name__)
        src = resolve_model_path(path, *required_files(cls.PARTS))
        rev = None if isinstance(src, Path) else revision
        # model.dtype (the large presets: bfloat16) overrides the run's dtype
        tdtype, dev = resolve_dtype(opts.dtype or dtype), resolve_device(device)
        try:
            with quiet_hub():
                index = model_index(src, rev)
                classes = part_classes(index, cls.PARTS, cls.OPTIONAL_PARTS, src)
                parts = {n: load_part(src, n, spec, tdtype, rev) for n, spec in classes.items()}
                schedule = cls._make_schedule(scheduler_config(src, rev))
        except OSError as err:
            if isinstance(src, Path):
                raise
            raise OSError(f"{hub_error_hint(src, rev)} ({short_error(err)})") from err
        return cls(
            **parts,
            schedule=schedule,
            device=dev,
            dtype=tdtype,
            options=opts,
            seed=seed,
            pipeline_config=index,
        )

    # --- Denoiser protocol -------------------------------------------------------------------

    @torch.no_grad()
    def eps_hat(self, z: torch.Tensor, logsnr: torch.Tensor, cond: Conditions) -> torch.Tensor:
        """Predicted noise [B, C, h, w] float32 for z [B, C, h, w], logsnr [B], cond [B, ...].

        v-prediction models are converted with eps = a v + s z, (a, s) from the continuous
        logsnr that built z (exact for that z; see schedule.v_to_eps).
        """
        t = self._timestep(logsnr)  # [B]
        zin = self._scale_input(z.to(self.device), logsnr).to(self.dtype)  # [B, C, h, w]
        if self.channels_last:
            zin = zin.contiguous(memory_format=torch.channels_last)
        network = self.network if self._tracing else self._network_call
        out = self._denoise(network, zin, t, conditions_to(cond, self.device, self.dtype))
        return self._to_eps(out, z, logsnr)  # [B, C, h, w]

    def _timestep(self, logsnr: torch.Tensor) -> torch.Tensor:
        """The network's time input [B] (float32, on the device) for the channel's logsnr [B].

        DDPM families: the schedule's timestep by `time_rule`; a family on another time variable
        (e.g. rectified flow) overrides this and `_to_eps`.
        """
        self.schedule.warn_out_of_range(logsnr)
        return self.schedule.timestep(logsnr, self.time_rule).to(
            self.device, torch.float32, non_blocking=True
        )

    def _scale_input(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        """The VP point z [B, C, h, w] in the network's input variable (DDPM: z itself)."""
        return z

    def _to_eps(self, out: torch.Tensor, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        """The network's raw output -> eps [B, C, h, w] float32 (epsilon or v-prediction)."""
        if self.schedule.prediction_type == "v_prediction":
            return v_to_eps(out, z.to(self.device), logsnr.to(self.device))
        return out.float().contiguous()

    @torch.no_grad()
    def encode_conditions(self, conditions: Sequence[Hashable]) -> Conditions:
        """Prompts -> encodings [K, ...], each distinct prompt encoded once per adapter."""
        bad = [c for c in conditions if not isinstance(c, str)]
        if bad:
            raise TypeError(f"text-to-image conditions are prompt strings, got {bad[:3]!r}")
        todo = [p for p in dict.fromkeys(conditions) if p not in self._prompt_cache]
        for start in range(0, len(todo), 64):
            chunk = todo[start : start + 64]
            with self._visiting(*self._encoders):
                enc = self._encode_prompts(chunk)  # [k, ...]
            for i, p in enumerate(chunk):
                self._prompt_cache[p] = select_rows(enc, slice(i, i + 1))
            self.prompt_encodes += len(chunk)
        rows = [self._prompt_cache[p] for p in conditions]
        if isinstance(rows[0], torch.Tensor):
            return torch.cat(rows)  # [K, ...]
        return {k: torch.cat([r[k] for r in rows]) for k in rows[0]}

    # --- ProbabilityFlow ---------------------------------------------------------------------

    @property
    def sigma_range(self) -> tuple[float, float]:
        """(sigma_min, sigma_max) of the trained schedule (VE sigma = exp(-logsnr / 2))."""
        return self.schedule.sigma_range

    # --- AttentionCapture, DaamInversion -----------------------------------------------------

    def _capture(self, skip_lowest: bool, **recorder_options: Any) -> Any:
        """The family's attention capture context (cross-attention of the network here; joint-
        attention families override this). `recorder_options`: aggregation, pool_rows."""
        return capture_cross_attention(
            self.network, self.token_count, self.latent_size, skip_lowest, **recorder_options
        )

    @contextmanager
    def trace(
        self, skip_lowest: bool = True, aggregation: str = "daam", pool_rows: bool = False
    ) -> Iterator[CrossAttentionRecorder]:
        """Captures the attention of eps_hat calls inside (see `_capture`); the plain network
        runs meanwhile (a torch.compile wrapper cannot be traced)."""
        with self._capture(skip_lowest, aggregation=aggregation, pool_rows=pool_rows) as rec:
            self._tracing = True
            try:
                yield rec
            finally:
                self._tracing = False

    def attention_maps(
        self,
        latent: torch.Tensor,
        prompt: str,
        logsnr: torch.Tensor,
        eps: torch.Tensor,
        max_batch: int = 64,
        aggregation: str = "daam",
    ) -> torch.Tensor:
        """Attention+Information maps [T, h, w]; see attention.attention_information_maps."""
        return attention_information_maps(
            self, latent, prompt, logsnr, eps, max_batch, aggregation=aggregation
        )

    def daam_maps(
        self, latent: torch.Tensor, prompt: str, n_steps: int = 50, aggregation: str = "daam"
    ) -> torch.Tensor:
        """DAAM maps [T, h, w] of a real image latent [C, h, w]; see attention.daam_maps."""
        return daam_maps(self, latent, prompt, n_steps, aggregation=aggregation)

    def word_map(
        self, maps: torch.Tensor, caption: str, word: str, occurrence: int | None = None
    ) -> torch.Tensor:
        """Mean of `maps` [T, h, w] over the word's token indices in the caption -> [h, w]."""
        return maps[self._word_indices(caption, word, occurrence)].mean(0)

    def _word_indices(self, caption: str, word: str, occurrence: int | None) -> list[int]:
        """The word's positions among the attention's text keys (one text encoder: its tokens).

        Families whose keys concatenate several encodings (SD 3: CLIP then T5) override this.
        """
        return word_token_indices(self.tokenizer, caption, word, occurrence, self.token_count)

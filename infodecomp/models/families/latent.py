"""Latent diffusion models (a VAE around a text-conditioned denoising network) as Denoisers.

`LatentDiffusionDenoiser` holds everything a latent text-to-image family shares: VAE encode
(posterior mean or seeded sample, cached per image key) and decode, the logsnr -> timestep
lookup, the prediction-type conversion to eps, the image/mask geometry of the maps, prompt
caching, and cross-attention capture (DAAM, Attention+Information). A family subclass (e.g.
models.sd.StableDiffusionDenoiser) adds only:

- `REQUIRED_PARTS`: the files a saved pipeline folder must hold;
- `COMPONENTS`: part -> the diffusers / transformers class that loads it (or "tokenizer"); a
  family with parts to add or compute overrides `_load_components(src, dtype, revision)`;
- `_encode_prompts(prompts)`: text encoders -> one encoding row per prompt (a tensor or a
  mapping of tensors, see estimators.protocol.Conditions);
- `_denoise(z, t, cond)`: the network's call signature.

A family on another time variable or target overrides `_make_schedule`, `_timestep`,
`_scale_input` and `_to_eps` (rectified flow: models.flow.FlowMatchingMixin); the formulas live
in models/dynamics/conversions.py, shared with the exact-oracle wrappers that prove them.

A DDPM network trained on x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps sees exactly the engine's
z = sqrt(sigmoid(logsnr)) x + sqrt(sigmoid(-logsnr)) eps when abar_t = sigmoid(logsnr); z is fed
as is and only the timestep is looked up from logsnr (models/dynamics/schedule.py).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
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
from infodecomp.models.families.preprocess import mask_transform, to_model_input, upsample_map
from infodecomp.models.families.tokens import word_token_indices
from infodecomp.models.presets import PRESETS, AdapterOptions, resolve_hub_id


class ModelFolderError(FileNotFoundError):
    """A local model folder is missing or lacks parts of a diffusers pipeline."""


def _looks_local(path: str) -> bool:
    return path.startswith(("/", ".", "~")) or "\\" in path or path.count("/") > 1


def resolve_model_path(
    path: str | Path,
    required: dict[str, tuple[str, ...]] | None = None,
    weights: tuple[str, ...] = (),
) -> str | Path:
    """A preset name or hub id (returned as the hub id to load) or a checked local folder (a Path).

    Args:
        path: preset name, hub id (removed ids map to their mirrors) or folder.
        required: part name -> files of which one must exist in a local folder.
        weights: subfolders that must hold *.safetensors or *.bin weights.

    Raises:
        ModelFolderError: a local folder is missing or lacks pipeline parts.
    """
    text = str(path)
    if text in PRESETS and PRESETS[text].source:
        return PRESETS[text].source
    local = Path(text).expanduser()
    if not (isinstance(path, Path) or local.exists() or _looks_local(text)):
        hub_id, note = resolve_hub_id(text)
        if note:
            import logging

            logging.getLogger("infodecomp").warning(note)
        return hub_id
    hubs = ", ".join(f"{p.name} ({p.source})" for p in PRESETS.values() if p.source)
    fix = (
        "save a complete pipeline there with <Pipeline>.save_pretrained(folder), or give a hub id "
        f"or a preset: {hubs}"
    )
    if not local.is_dir():
        raise ModelFolderError(f"model folder {local} does not exist; {fix}")
    lacking = [
        k for k, files in (required or {}).items() if not any((local / f).is_file() for f in files)
    ]
    for part in weights:
        found = [*(local / part).glob("*.safetensors"), *(local / part).glob("*.bin")]
        if part not in lacking and not found:
            lacking.append(f"{part} weights")
    if lacking:
        raise ModelFolderError(f"model folder {local} lacks {', '.join(lacking)}; {fix}")
    return local


def hub_error_hint(source: str | Path, revision: str | None) -> str:
    """One line on what to do when a hub id or revision cannot be reached."""
    pinned = f" at revision {revision}" if revision else ""
    gated = [p for p in PRESETS.values() if p.gated and p.source == str(source)]
    if gated:
        return (
            f"could not load {source}{pinned}: it is a gated checkpoint (model={gated[0].name}). "
            f"Accept its license at https://huggingface.co/{source} with your account, then run "
            "`huggingface-cli login` or set HF_TOKEN=<access token> (read access), and retry; "
            "offline, pass a folder written by save_pretrained with model.path=<folder>"
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    where = (
        "it is not in the local hub cache (HF_HUB_OFFLINE is set: download it once where the hub "
        "is reachable, or unset HF_HUB_OFFLINE)"
        if offline
        else "the Hugging Face Hub could not be reached or refused it (offline, gated, moved or "
        "removed?); without network set HF_HUB_OFFLINE=1 to load a cached download"
    )
    return (
        f"could not load {source}{pinned}: {where}. Pass another hub id with model=local "
        "model.path=<hub id>, a folder written by save_pretrained with model.path=<folder>, or "
        "model.revision=main for the newest revision; gated models need `huggingface-cli login` "
        "or HF_TOKEN"
    )


@contextmanager
def quiet_hub() -> Iterator[None]:
    """Silences the hub client's warnings (one per retry of an unreachable download) while a
    model loads: the failure, if any, is reported once as one line (hub_error_hint)."""
    hub = logging.getLogger("huggingface_hub")
    level = hub.level
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub.setLevel(level)


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:limit]}{'...' if len(text) > limit else ''}"


def _scheduler_config(src: str | Path, revision: str | None) -> dict[str, Any]:
    if isinstance(src, Path):
        return json.loads((src / "scheduler" / "scheduler_config.json").read_text())
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler.load_config(src, subfolder="scheduler", revision=revision))


def check_offload(offload: str, device: torch.device) -> None:
    """Offloading keeps weights in CPU memory for a GPU; on the CPU it is a mistake."""
    if offload != "none" and device.type == "cpu":
        raise ValueError(
            f"model.offload={offload} keeps weights in CPU memory for a GPU; on run.device=cpu "
            "everything is in CPU memory already: use model.offload=none"
        )


_offload_guard = check_offload  # tests exercise the offload paths on the CPU through this seam


def _key_gen(seed: int, key: Hashable) -> torch.Generator:
    from infodecomp.estimators.engine import item_generator

    return item_generator(seed, ("vae-sample", key))


def _pixel_key(px: torch.Tensor) -> str:
    """A key for an image given without one: a digest of its preprocessed pixels [3, S, S]."""
    import hashlib

    data = px.detach().float().cpu().contiguous().numpy()
    return "pixels:" + hashlib.blake2b(data.tobytes(), digest_size=8).hexdigest()


class LatentDiffusionDenoiser:
    """Denoiser protocol (and ImageModel, AttentionCapture, DaamInversion, ProbabilityFlow
    capabilities) over a latent text-to-image model. Subclass per family; see the module doc.

    Conditions are prompts ("" is the unconditional); images are PIL images or [3, H, W] float
    tensors in [-1, 1]. eps_hat always returns float32.
    """

    REQUIRED_PARTS: ClassVar[dict[str, tuple[str, ...]]] = {}
    # part -> "diffusers:<Class>" / "transformers:<Class>" / "tokenizer" (text_encoders.load_part)
    COMPONENTS: ClassVar[dict[str, str]] = {}
    # The VAE overflows in float16 (SDXL's): it then runs in float32, the rest in float16.
    VAE_FLOAT16_OVERFLOWS: ClassVar[bool] = False
    # Latent grid when the network config has no sample_size (Flux.1: 128, i.e. 1024 px).
    DEFAULT_LATENT_SIZE: ClassVar[int | None] = None
    # Which family-specific options apply (others refuse them instead of ignoring them).
    TAKES_TEXT_TOKENS: ClassVar[bool] = False  # a T5 encoder whose length can be set
    TAKES_GUIDANCE: ClassVar[bool] = False  # a guidance-embedding input
    TAKES_NULL_EMBEDDING: ClassVar[bool] = False  # a learned unconditional embedding (PixArt)

    def __init__(
        self,
        network: Any,
        vae: Any,
        schedule: DiscreteSchedule,
        *,
        device: torch.device,
        dtype: torch.dtype,
        options: AdapterOptions | None = None,
        token_count: int = 77,
        encoders: Sequence[Any] = (),
        seed: int = 0,
        vae_batch: int = 8,
        **option_overrides: Any,
    ) -> None:
        opts = replace(options or AdapterOptions(), **option_overrides).check()
        name = type(self).__name__
        if opts.text_tokens is not None and not self.TAKES_TEXT_TOKENS:
            raise ValueError(
                f"model.text_tokens={opts.text_tokens} sets a T5 encoder's length; {name} has "
                "none: leave model.text_tokens unset"
            )
        if opts.guidance is not None and not self.TAKES_GUIDANCE:
            raise ValueError(
                f"model.guidance={opts.guidance} is the guidance input of guidance-distilled "
                f"models (FLUX.1-dev); {name} has none: leave model.guidance unset"
            )
        if opts.null_embedding is not None and not self.TAKES_NULL_EMBEDDING:
            raise ValueError(
                f"model.null_embedding={opts.null_embedding} is PixArt's learned unconditional "
                f"embedding; {name} has none: leave model.null_embedding unset"
            )
        self.options = opts
        self.network, self.vae, self.schedule = network, vae, schedule
        self.device, self.dtype = device, dtype
        self.time_rule, self.latent, self.resize = opts.time_rule, opts.latent, opts.resize
        self.resample, self.mask_resample = opts.resample, opts.mask_resample
        self.seed, self.vae_batch, self.token_count = seed, vae_batch, int(token_count)
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
        # "model" / "sequential" offload: encoders and VAE live in CPU memory between uses.
        self._encoders = tuple(encoders)
        self._offloaded = (vae, *encoders) if self.offload != "none" else ()
        home = torch.device("cpu") if self.offload != "none" else device
        for m, want in ((vae, self.vae_dtype), *((e, dtype) for e in encoders)):
            m.to(device=home).eval().requires_grad_(False)
            if m.dtype != want:  # from_pretrained already loads in the dtype; cast only the rest
                m.to(dtype=want)
        network.eval().requires_grad_(False)
        if network.dtype != dtype:
            network.to(dtype=dtype)
        if self.offload == "sequential":
            from accelerate import cpu_offload  # streams each submodule's weights to the device

            cpu_offload(network, execution_device=device)
        else:
            network.to(device=device)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        self._network_call = torch.compile(network) if opts.compile else network
        self._tracing = False
        self._prompt_cache: dict[str, Conditions] = {}
        self._latent_cache: dict[Hashable, torch.Tensor] = {}
        self.prompt_encodes = 0
        self.image_encodes = 0

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

    @classmethod
    def _weight_parts(cls) -> tuple[str, ...]:
        """Subfolders that must hold weights: every component but the tokenizers."""
        from infodecomp.models.families.text_encoders import is_tokenizer

        return tuple(n for n, spec in cls.COMPONENTS.items() if not is_tokenizer(spec))

    @classmethod
    def _load_components(
        cls, src: str | Path, dtype: torch.dtype, revision: str | None
    ) -> dict[str, Any]:
        """Loads the family's parts (`COMPONENTS`, each from its subfolder): keyword arguments
        for the constructor. Override to add parts that are computed or optional."""
        from infodecomp.models.families.text_encoders import load_part

        return {
            name: load_part(src, name, spec, dtype, revision)
            for name, spec in cls.COMPONENTS.items()
        }

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
        """Loads a pipeline's components from a preset name, hub id or local folder.

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
        opts = replace(options or AdapterOptions(), **option_overrides).check()
        src = resolve_model_path(path, cls.REQUIRED_PARTS, cls._weight_parts())
        rev = None if isinstance(src, Path) else revision
        # model.dtype (the large presets: bfloat16) overrides the run's dtype
        tdtype, dev = resolve_dtype(opts.dtype or dtype), resolve_device(device)
        try:
            with quiet_hub():
                parts = cls._load_components(src, tdtype, rev)
                schedule = cls._make_schedule(_scheduler_config(src, rev))
        except OSError as err:
            if isinstance(src, Path):
                raise
            raise OSError(f"{hub_error_hint(src, rev)} ({_short(err)})") from err
        return cls(**parts, schedule=schedule, device=dev, dtype=tdtype, options=opts, seed=seed)

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

    @torch.no_grad()
    def encode_images(
        self,
        images: Sequence[Any],
        keys: Sequence[Hashable] | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Images -> scaled VAE latents [N, C, h, w] float32 (on CPU), cached per key if keys are given.

        Preprocessing: `resize` ("squash": to image_size x image_size, no crop, as published;
        "center-crop": central square first) with the `resample` filter (bicubic; the
        published localisation: bilinear), pixels mapped to [-1, 1], VAE
        posterior mean or (latent="sample") a posterior sample whose noise is drawn from
        (seed, key) alone: `seed` (default: the adapter's) and the image's key (without keys:
        a digest of its preprocessed pixels), never its position in the call, so a draw is the
        same whatever the batch or shard layout. Shifted and scaled by the VAE's shift_factor
        and scaling_factor. Cached per (seed, key) for samples, per key for the mean.
        """
        if keys is not None and len(keys) != len(images):
            raise ValueError(
                f"got {len(keys)} keys for {len(images)} images; give one key per image or none"
            )
        seed = self.seed if seed is None else int(seed)

        def cache_key(i: int) -> Hashable:
            return (seed, keys[i]) if self.latent == "sample" else keys[i]  # type: ignore[index]

        todo = [
            i for i in range(len(images)) if keys is None or cache_key(i) not in self._latent_cache
        ]
        fresh: dict[int, torch.Tensor] = {}
        for start in range(0, len(todo), self.vae_batch):
            idx = todo[start : start + self.vae_batch]
            px = torch.stack(
                [
                    to_model_input(images[i], self.image_size, self.resize, self.resample)
                    for i in idx
                ]
            )  # [b, 3, S, S]
            with self._visiting(self.vae):
                dist = self.vae.encode(px.to(self.device, self.vae_dtype)).latent_dist
            lat = dist.mean.float()  # [b, C, h, w]
            if self.latent == "sample":
                gens = [
                    _key_gen(seed, keys[i] if keys else _pixel_key(px[j]))
                    for j, i in enumerate(idx)
                ]
                noise = torch.stack(
                    [torch.randn(lat.shape[1:], generator=g) for g in gens]
                )  # [b, C, h, w]
                lat = lat + dist.std.float() * noise.to(lat.device)
            lat = (lat - self._vae_shift) * self.vae.config.scaling_factor
            self.image_encodes += len(idx)
            for j, i in enumerate(idx):
                fresh[i] = lat[j].cpu()
                if keys is not None:
                    self._latent_cache[cache_key(i)] = fresh[i]
        rows = [
            fresh[i] if i in fresh else self._latent_cache[cache_key(i)] for i in range(len(images))
        ]
        return torch.stack(rows)  # [N, C, h, w]

    @property
    def _vae_shift(self) -> float:
        return getattr(self.vae.config, "shift_factor", None) or 0.0

    # --- ImageModel: images, masks, maps -----------------------------------------------------

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [N, C, h, w] -> images [N, 3, H, W] in [0, 1], float32 on CPU."""
        lat = (
            latents.to(self.device, self.vae_dtype) / self.vae.config.scaling_factor
            + self._vae_shift
        )  # [N, C, h, w]
        with self._visiting(self.vae):
            out = self.vae.decode(lat, return_dict=False)[0]  # [N, 3, H, W] in [-1, 1]
        return ((out.float() + 1) / 2).clamp(0, 1).cpu()  # [N, 3, H, W]

    def preview(self, image: Any) -> torch.Tensor:
        """The image as the model sees it (resize rule applied): [3, H, W] in [0, 1]."""
        px = to_model_input(image, self.image_size, self.resize, self.resample)
        return ((px + 1) / 2).clamp(0, 1)

    def mask_transform(
        self, mask: torch.Tensor, size: int | tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Resizes a ground-truth mask [H, W] the way images are resized; see `mask_transform`."""
        return mask_transform(mask, size or self.latent_size, self.resize, self.mask_resample)

    @staticmethod
    def upsample_map(heat: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
        """Bilinear upsampling of a map [h, w] to `size`; returned unchanged when already that size."""
        return upsample_map(heat, size)

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

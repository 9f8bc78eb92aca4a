"""Typed config schemas shared by every command, registered with Hydra's ConfigStore (the checks
of a composed config: experiments.checks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from infodecomp.data.spec import DataSpec
from infodecomp.models.presets import PRESETS, AdapterOptions
from infodecomp.models.training.settings import TrainSettings
from infodecomp.worlds.noise import SIGMA0


@dataclass
class ModelConfig(AdapterOptions):
    """Which denoiser: a preset name (models.presets), plus a hub id / local folder in `path`.

    The adapter options (time_rule, latent, resize, image_size, compile, attn_processor) are
    inherited from models.presets.AdapterOptions.
    """

    name: str = "shapes-oracle"  # model preset (infodecomp/models/presets.py)
    path: str | None = None  # diffusers folder or hub id (model=local, or to override a preset)
    revision: str | None = None  # hub revision; default: the preset's pinned one (in meta.json)
    sigma0: float = SIGMA0  # ShapesWorld oracle: pixel noise of the Gaussian mixture

    @classmethod
    def of(cls, name: str, **overrides: object) -> ModelConfig:
        """`model=<name>` as the command line composes it: the preset's own options (e.g.
        tiny-flux: image_size 32), then `overrides` (None resets an option to its default)."""
        preset = PRESETS.get(name)
        return cls(name=name, **{**(preset.options if preset else {}), **overrides})  # type: ignore[arg-type]


# The `data` schema is the loaders' own settings dataclass (no mirror to keep in sync).
DataConfig = DataSpec


@dataclass
class EstimatorConfig:
    """logsnr sampling and the estimator budget (paper: logistic loc 1, scale 2, clip 3, 100 samples)."""

    n_samples: int = 100  # logsnr samples per item (the paper: 100)
    sampler: str = "logistic"  # logistic | uniform
    mode: str = "iid"  # iid | stratified | antithetic | quadrature
    loc: float = 1.0  # truncated logistic: location of logsnr
    scale: float = 2.0  # truncated logistic: scale
    clip: float = 3.0  # truncated logistic: kept within loc +- clip * scale
    low: float = -5.0  # uniform sampler: lowest logsnr
    high: float = 7.0  # uniform sampler: highest logsnr
    adaptive: bool = False  # ranking tasks: stop once the leader's margin is clear
    margin: float = 3.0  # in standard errors of the paired score difference (>= 3)
    round_samples: int = 10  # samples per adaptive round
    min_samples: int = 30  # no adaptive decision before this many samples (>= 30)
    # adaptive runs: fresh draws behind the reported values and standard errors (the stopping
    # rule selects, so the decision draws overstate margins); 0 reports the decision draws'
    # values instead, marked `values_from=decision draws` in results.csv
    report_samples: int = 30


@dataclass
class RunConfig:
    """Where and how a run executes."""

    limit: int | None = None  # first N items only (null: all)
    seed: int = 0  # noise and logsnr draws
    device: str = "auto"  # auto (cuda, else mps, else cpu) | cpu | cuda | cuda:1 | mps
    dtype: str = "float32"  # float32 | float16 | bfloat16
    batch_size: int = 64  # denoiser rows per call (chunk bound)
    items_per_step: int = 8  # items estimated, written and checkpointed together
    out_dir: str | None = None  # run directory (null: outputs/<command>/<date_time>); reruns resume
    progress: bool = True  # progress bars
    rank: int | None = None  # data-parallel shard; default from torch.distributed env
    world_size: int | None = None  # data-parallel shards; default from torch.distributed env
    resume: str = "auto"  # auto: resume a run dir of the same config, else refuse | overwrite
    retry_skipped: bool = True  # on resume, retry items skipped for a cause that may have gone


@dataclass
class BaseCommandConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class AroConfig(BaseCommandConfig):
    estimators: list[str] = field(default_factory=lambda: ["io", "is", "mmse"])  # scores to rank by


ATTENTION_AGGREGATIONS = (
    "daam",
    "layer-mean",
)  # = infodecomp.models.attention.capture.AGGREGATIONS


# localize (and the API's maps) also take attention=concept: ConceptAttention maps (joint-
# attention families) beside the raw cross-attention, which is then aggregated as DAAM's
LOCALIZE_ATTENTION = (*ATTENTION_AGGREGATIONS, "concept")


def _check_attention(value: str, allowed: tuple[str, ...] = ATTENTION_AGGREGATIONS) -> None:
    if value not in allowed:
        raise ValueError(f"attention={value} is not one of: {', '.join(allowed)}")


@dataclass
class LocalizeConfig(BaseCommandConfig):
    steps: list[int] = field(default_factory=lambda: [50, 100, 200])  # logsnr samples per map
    # heat maps scored: cmi | mi | attention | attn_info | whole (the whole-image baseline) |
    # concept (ConceptAttention, under attention=concept)
    methods: list[str] = field(
        default_factory=lambda: ["cmi", "mi", "attention", "attn_info", "whole", "exact", "concept"]
    )
    daam_steps: int = 50  # DDIM steps of the attention baseline
    blank_context: bool = False  # use context_ ("_") instead of the deleted-word context
    # Attention+Information: the truncation (clip) of its logsnr draws; None draws them like the
    # CMI maps (the estimator's sampler). The published code hard-codes clip 3 there while its
    # CMI maps run at clip 4 (configs/experiment/paper-table3.yaml)
    attn_info_clip: float | None = None
    # aggregation of attention maps: daam (DAAM's, paper) | layer-mean | concept (SD 3.x / Flux.1:
    # ConceptAttention maps, method `concept`, beside the raw cross-attention aggregated as daam)
    attention: str = "daam"
    # the MI map's prompt: word (the word itself) | label (the manifest's Label column, a COCO
    # category: what the published code prompts with; configs/experiment/paper-table3.yaml)
    mi_prompt: str = "word"
    # logsnr draws of the CMI / MI maps: item (each item its own; with iid draws the step counts
    # are prefixes of one draw) | batch-published (as the published code: one set of logsnr values
    # per batch of 10 consecutive manifest rows, shared by its images, one eps per (logsnr,
    # image); every step count an independent run)
    map_draws: str = "item"
    # pixels the DAAM and Attention+Information baselines feed the VAE: model ([-1, 1], as the
    # model was trained) | zero-one-published-bug ([0, 1], the published baselines' bug)
    baseline_input: str = "model"
    # PascalVOC multi-class (data.classes=multi): how the argmax concept becomes a VOC label:
    # direct (each concept its own label) | chained-published-bug (the published script's
    # in-place sequential relabelling, which relabels a class whose label equals a later
    # concept's index; reporting.segmentation.chained_labels)
    multi_labels: str = "direct"
    # maps of the first N items saved as figures/<item>-maps.png (the report's gallery); 0: none
    gallery: int = 4

    def __post_init__(self) -> None:
        _check_attention(self.attention, LOCALIZE_ATTENTION)
        for name, allowed in LOCALIZE_CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)} is not one of: {', '.join(allowed)}"
                )


LOCALIZE_CHOICES = {
    "mi_prompt": ("word", "label"),
    "map_draws": ("item", "batch-published"),
    "baseline_input": ("model", "zero-one-published-bug"),
    "multi_labels": ("direct", "chained-published-bug"),
}


@dataclass
class InterveneConfig(BaseCommandConfig):
    n_sigmas: int = 100  # noise levels of the ODE inversion and regeneration
    # ODE integrator: heun (Karras Alg. 2, 2 evaluations per step) | heun-reuse (the step used
    # before issue 23, kept for comparison); models.ode.SOLVERS
    ode_solver: str = "heun"
    # where the ODE meets the clean latent: zero (Euler steps to / from sigma 0) | sigma-min
    # (the published script: no step to 0); models.ode.ENDS
    ode_ends: str = "zero"
    # the attention baseline's path: ddim (DAAM over a DDIM inversion + reconstruction of
    # daam_steps steps) | regeneration (DAAM traced during the ODE regeneration of the original
    # image under its caption, n_sigmas Karras sigmas: the published Table 4 path)
    attention_path: str = "ddim"
    # autocast of the traced regeneration (attention_path=regeneration): none | float16
    # (published, on the GPU) | bfloat16; the original's regeneration, and so every change
    # map, then carries its rounding, as published
    regeneration_autocast: str = "none"
    daam_steps: int | None = None  # DDIM steps of attention_path=ddim (default 50)
    edits: list[str] = field(default_factory=lambda: ["omit", "swap"])  # word omitted | swapped
    # image-level CMI total: i^o ("io") or i^s ("is", what the published image-level r used)
    image_score: str = "io"
    save_images: bool = True  # write original and edited images under images/
    n_boot: int = 1000  # bootstrap resamples for the correlation standard errors
    attention: str = "daam"  # aggregation of attention maps: daam (DAAM's, paper) | layer-mean

    def __post_init__(self) -> None:
        from infodecomp.models.dynamics.ode import check_ode

        _check_attention(self.attention)
        check_ode(self.ode_solver, self.ode_ends)
        unknown = sorted(set(self.edits) - {"omit", "swap"})
        if unknown or not self.edits:
            raise ValueError(f"edits={list(self.edits)}: give omit and / or swap")
        if self.attention_path not in ATTENTION_PATHS:
            raise ValueError(
                f"attention_path={self.attention_path} is not one of: {', '.join(ATTENTION_PATHS)}"
            )
        if self.regeneration_autocast not in AUTOCASTS:
            raise ValueError(
                f"regeneration_autocast={self.regeneration_autocast} is not one of: "
                f"{', '.join(AUTOCASTS)}"
            )
        if self.attention_path == "ddim" and self.regeneration_autocast != "none":
            raise ValueError(
                f"regeneration_autocast={self.regeneration_autocast} applies to the traced "
                "regeneration only: set attention_path=regeneration or leave it none"
            )
        if self.attention_path == "regeneration" and self.daam_steps is not None:
            raise ValueError(
                f"daam_steps={self.daam_steps} sets the DDIM path (attention_path=ddim); the "
                "regeneration path traces the n_sigmas ODE steps: leave daam_steps unset"
            )


ATTENTION_PATHS = ("ddim", "regeneration")
AUTOCASTS = ("none", "float16", "bfloat16")


@dataclass
class VisualizeConfig(BaseCommandConfig):
    n_curve_samples: int = 200  # logsnr samples of the MMSE curves
    daam_steps: int = 50  # DDIM steps of the attention baseline
    attention: str = "daam"  # aggregation of attention maps: daam (DAAM's, paper) | layer-mean

    def __post_init__(self) -> None:
        _check_attention(self.attention)
        if self.run.limit is None:  # a handful of figures, not one per item of the data set
            self.run.limit = 4


@dataclass
class ValidateConfig(BaseCommandConfig):
    n_items: int = 200  # ShapesWorld average: items; Gaussian pair: 10 x items; conversions: 2 x
    pointwise_samples: int = 2000  # per image for wrong captions; 4 x for the true captions
    word_images: int = 3  # images per word kind (colour, shape, relation) for maps and totals
    map_samples: int = 2000  # logsnr samples per image for the word CMI maps
    paper_samples: int = 2000  # logsnr samples per image under the paper's sampler
    exact_draws: int = 2**16  # eps draws of each exact word reference (oracle posteriors)


CALIBRATE_SECTIONS = ("mmse", "pointwise", "ranking", "localize", "intervene")
CALIBRATE_SETS = ("shapes-relation", "shapes-attribute", "shapes-order", "shapes-winoground")


@dataclass
class CalibrateConfig(BaseCommandConfig):
    """`model` is calibrated against the exact ShapesWorld oracle (sigma0 = the data's noise);
    only data.seed and data.noise are read from `data` (the sets are named below)."""

    # what to run: mmse | pointwise | ranking | localize | intervene
    sections: list[str] = field(default_factory=lambda: list(CALIBRATE_SECTIONS))
    n_items: int = 12  # images of the pointwise / MMSE section, and items per ranking set
    sets: list[str] = field(default_factory=lambda: list(CALIBRATE_SETS))  # ranking sets
    control: bool = True  # ranking: also score every set with shuffled images
    curve_low: float = -9.0  # MMSE / pointwise sections: uniform logsnr draws from here ...
    curve_high: float = 11.0  # ... to here (stratified; shapes-learned is trained on [-9, 11])
    word_items: int = 6  # word items of the localisation and intervention sections
    exact_draws: int = 2**13  # eps draws of each exact word CMI map (oracle posteriors)
    daam_steps: int = 20  # DDIM steps of the attention baseline (learned model)
    n_sigmas: int = 16  # noise levels of the ODE inversion and regeneration (interventions)
    edits: list[str] = field(default_factory=lambda: ["omit", "swap"])  # word omitted | swapped
    n_figures: int = 3  # localisation items drawn side by side (learned, exact maps)

    def __post_init__(self) -> None:
        unknown = [s for s in self.sections if s not in CALIBRATE_SECTIONS]
        if unknown or not self.sections:
            raise ValueError(
                f"sections={list(self.sections)}: choose one or more of {', '.join(CALIBRATE_SECTIONS)}"
            )
        bad = [s for s in self.sets if s not in CALIBRATE_SETS]
        if bad:
            raise ValueError(f"sets={bad} unknown; choose from {', '.join(CALIBRATE_SETS)}")
        bad = [e for e in self.edits if e not in ("omit", "swap")]
        if bad:
            raise ValueError(f"edits={bad} unknown; choose from omit, swap")
        if not self.curve_low < self.curve_high:
            raise ValueError(
                f"curve_low={self.curve_low} must be below curve_high={self.curve_high}"
            )


@dataclass
class AggregateConfig:
    runs: list[str] = field(default_factory=list)  # run folders, parents or globs (outputs/aro/*)
    run: RunConfig = field(default_factory=RunConfig)  # run.out_dir: where the tables go
    out_dir: str | None = None  # deprecated alias of run.out_dir


@dataclass
class ReportConfig:
    runs: list[str] = field(default_factory=list)  # run directories, or folders holding them
    run: RunConfig = field(default_factory=RunConfig)  # run.out_dir: the report folder
    title: str = "infodecomp report"  # heading of the HTML page
    n_boot: int = 1000  # bootstrap resamples of Tables 3 and 4's standard errors (seed: run.seed)


@dataclass
class BenchConfig(BaseCommandConfig):
    n_items: int = 10  # ARO items (2 options) timed per procedure: one published VG batch
    # engine dtypes timed against the float32 reference (reduced ones checked against float32)
    engine_dtypes: list[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    repeats: int = 5  # alternating timing rounds per procedure; medians are reported
    # items (beyond the timed ones) on which reduced-precision engines are checked against float32
    precision_items: int = 30
    # evaluations per answer, score by score (experiments.score_study)
    study_models: list[str] = field(
        default_factory=lambda: ["oracle"]
    )  # tiny-sd, shapes-learned, oracle
    study_items: int = 30  # items per studied model
    study_pilot_items: int = 6  # separate items the fitted proposals are fitted on
    study_repeats: int = 3  # independent repeats of every procedure
    converged_samples: int = 2000  # draws behind each converged answer (>= 2000)

    def __post_init__(self) -> None:
        if self.converged_samples < 2000:
            raise ValueError(
                f"converged_samples={self.converged_samples}: a converged answer needs >= 2000 "
                "draws; set converged_samples=2000 or more"
            )
        known = ("tiny-sd", "shapes-learned", "oracle", "sd21-random")
        bad = [m for m in self.study_models if m not in known]
        if bad:
            raise ValueError(f"study_models={bad}: choose from {', '.join(known)}")


@dataclass
class TrainShapesConfig:
    """`infodecomp train-shapes`: the learned ShapesWorld model (models.training)."""

    train: TrainSettings = field(default_factory=TrainSettings)  # what is trained, and how long
    run: RunConfig = field(default_factory=RunConfig)  # run.out_dir, run.device, run.resume
    max_minutes: float | None = None  # stop (checkpointed) after this many minutes; rerun resumes
    stop_at: int = 0  # stop (checkpointed) at this step (0: train.steps); rerun resumes
    threads: int | None = None  # CPU threads for torch (null: torch's default)


SCHEMAS = {
    "aro": AroConfig,
    "localize": LocalizeConfig,
    "intervene": InterveneConfig,
    "visualize": VisualizeConfig,
    "validate": ValidateConfig,
    "aggregate": AggregateConfig,
    "report": ReportConfig,
    "bench": BenchConfig,
    "train-shapes": TrainShapesConfig,
    "calibrate": CalibrateConfig,
}


def _or_default(value: object, default: object) -> object:
    """Resolver `infodecomp.or`: `value` unless it is null or empty (oc.select keeps a null)."""
    return default if value is None or value == "" else value


def register() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("infodecomp.or"):
        OmegaConf.register_new_resolver("infodecomp.or", _or_default)
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=node)
    # `model=<preset>` comes from the one presets table, not from one YAML file each, with the
    # preset's options as values: `--cfg job` shows what the run uses, and any can be reset
    for name in PRESETS:
        cs.store(group="model", name=name, node=ModelConfig.of(name))

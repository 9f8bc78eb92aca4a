"""Typed config schemas shared by every command, registered with Hydra's ConfigStore."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from infodecomp.worlds import shapes as world


@dataclass
class ModelConfig:
    """Which denoiser: a registry name, or a hub id / local folder through `path`."""

    name: str = "shapes-oracle"  # model preset (model=<name> picks configs/model/<name>.yaml)
    path: str | None = None  # diffusers folder or hub id (model=local, or to override a preset)
    time_rule: str = "nearest"  # nearest (paper) | continuous
    latent: str = "mean"  # mean (deterministic) | sample (paper)
    resize: str = "squash"  # squash (paper) | center-crop
    image_size: int | None = None  # pixels per side; default: the model's native size
    compile: bool = False  # torch.compile the UNet
    sigma0: float = world.SIGMA0  # ShapesWorld oracle: pixel noise of the Gaussian mixture


@dataclass
class DataConfig:
    """Which data set; see infodecomp.data.spec.DataSpec for the fields."""

    name: str = "shapes-relation"  # data set (data=<name> picks configs/data/<name>.yaml)
    root: str | None = None  # benchmark folder (ARO: JSON files + images/; COCO: has val2017/)
    manifest: str | None = None  # COCO-IT / COCO100-IT / COCO-WL manifest CSV
    annotations: str | None = None  # COCO instances JSON (default under data.root/annotations)
    images: str | None = None  # image folder when it is not under data.root
    source: str = "files"  # ARO: files (original JSON + images) | hf (frozen Hugging Face copy)
    hf_name: str | None = None  # hub id or local folder (snapshot or save_to_disk) of the hf copy
    revision: str | None = None  # hub revision of the hf copy; default: pinned for the default ids
    crop: str = "pad"  # VG boxes leaving the image: pad (ARO's crop, black) | clamp
    size: int = 64  # ShapesWorld: items generated
    seed: int = 0  # ShapesWorld items and ARO order perturbations
    noise: float | None = None  # ShapesWorld image noise; keep equal to model.sigma0


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
    margin: float = 3.0  # in standard errors of the paired score difference
    round_samples: int = 10  # samples per adaptive round


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


@dataclass
class BaseCommandConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclass
class AroConfig(BaseCommandConfig):
    estimators: list[str] = field(default_factory=lambda: ["io", "is", "mmse"])  # scores to rank by


@dataclass
class LocalizeConfig(BaseCommandConfig):
    steps: list[int] = field(default_factory=lambda: [50, 100, 200])  # logsnr samples per map
    # heat maps scored: cmi | mi | attention | attn_info | whole (the whole-image baseline)
    methods: list[str] = field(
        default_factory=lambda: ["cmi", "mi", "attention", "attn_info", "whole"]
    )
    daam_steps: int = 50  # DDIM steps of the attention baseline
    blank_context: bool = False  # use context_ ("_") instead of the deleted-word context


@dataclass
class InterveneConfig(BaseCommandConfig):
    n_sigmas: int = 100  # noise levels of the ODE inversion and regeneration
    daam_steps: int = 50  # DDIM steps of the attention baseline
    edits: list[str] = field(default_factory=lambda: ["omit", "swap"])  # word omitted | swapped
    save_images: bool = True  # write original and edited images under images/
    n_boot: int = 1000  # bootstrap resamples for the correlation standard errors


@dataclass
class VisualizeConfig(BaseCommandConfig):
    n_curve_samples: int = 200  # logsnr samples of the MMSE curves
    daam_steps: int = 50  # DDIM steps of the attention baseline

    def __post_init__(self) -> None:
        if self.run.limit is None:  # a handful of figures, not one per item of the data set
            self.run.limit = 4


@dataclass
class ValidateConfig(BaseCommandConfig):
    n_items: int = 200  # items of the averaged checks (x5 ShapesWorld, x50 Gaussian)
    pointwise_samples: int = 4000  # logsnr samples of each single-image check


@dataclass
class AggregateConfig:
    runs: list[str] = field(default_factory=list)  # run folders, parents or globs (outputs/aro/*)
    out_dir: str | None = None  # where the tables go (null: outputs/aggregate/<date_time>)


@dataclass
class BenchConfig(BaseCommandConfig):
    n_items: int = 4  # ARO items timed per procedure
    reference_batch: int = 150  # the published UNet batch
    repeats: int = 3  # alternating timing rounds per procedure; medians are reported
    # ShapesWorld items per set (relation, attribute, order) for sample efficiency
    oracle_items: int = 70


SCHEMAS = {
    "aro": AroConfig,
    "localize": LocalizeConfig,
    "intervene": InterveneConfig,
    "visualize": VisualizeConfig,
    "validate": ValidateConfig,
    "aggregate": AggregateConfig,
    "bench": BenchConfig,
}


def _or_default(value: object, default: object) -> object:
    """Resolver `infodecomp.or`: `value` unless it is null or empty (oc.select keeps a null)."""
    return default if value is None or value == "" else value


def register() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("infodecomp.or"):
        OmegaConf.register_new_resolver("infodecomp.or", _or_default)
    if not OmegaConf.has_resolver("infodecomp.help"):
        from infodecomp.experiments.help import resolver

        OmegaConf.register_new_resolver("infodecomp.help", resolver)
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=f"{name}_schema", node=node)

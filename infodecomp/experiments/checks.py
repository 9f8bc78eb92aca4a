"""Checks of a composed config that the schemas' types cannot express (experiments.config holds
the schemas): every key a field of the command's schema, values in range, the device present.
They need no torch, except check_device for a GPU or MPS device."""

from __future__ import annotations

from infodecomp.experiments.errors import ConfigError

# Settings that count things: each must be an integer >= 1 (None allowed where the schema
# allows it). `run.limit=0` or `data.size=0` would otherwise end a run with nothing done.
AT_LEAST_ONE = (
    "data.size",
    "run.limit",
    "run.batch_size",
    "run.items_per_step",
    "run.world_size",
    "estimator.n_samples",
    "model.image_size",
    "n_sigmas",
    "daam_steps",
    "n_curve_samples",
    "n_boot",
    "n_items",
    "word_items",
    "exact_draws",
    "pointwise_samples",
    "study_items",
    "study_pilot_items",
    "study_repeats",
    "repeats",
    "precision_items",
)
POSITIVE = ("estimator.scale", "estimator.clip", "model.sigma0")
NON_NEGATIVE = ("data.noise", "estimator.margin", "gallery")
RESUME_MODES = ("auto", "overwrite")


def _get(cfg: object, dotted: str) -> tuple[bool, object]:
    obj = cfg
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False, None
        obj = getattr(obj, part)
    return True, obj


def check_keys(cfg: object, schema: type, command: str) -> None:
    """Every key of a composed config must be a field of the command's schema (a `+key=...`
    override adds keys Hydra does not check against the schema)."""
    import difflib
    from dataclasses import fields, is_dataclass

    from omegaconf import DictConfig

    def walk(node: DictConfig, default: object, prefix: str) -> None:
        names = [f.name for f in fields(default)]  # type: ignore[arg-type]
        for key in node.keys():
            name = f"{prefix}{key}"
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {prefix}{close[0]}?" if close else ""
                raise ConfigError(
                    f"unknown config key {name}{hint} (`infodecomp {command} --cfg job` lists "
                    "the keys)"
                )
            child = getattr(default, str(key))
            value = node._get_node(key)  # no interpolation is resolved here
            if is_dataclass(child) and isinstance(value, DictConfig):
                walk(value, child, name + ".")

    walk(cfg, schema(), "")  # type: ignore[arg-type]


def check_device(name: str) -> None:
    """run.device must name a device this machine has: auto, cpu, cuda, cuda:<n> (n below the
    number of GPUs), or mps where available."""
    if name in ("auto", "cpu"):  # every machine has these (and aggregate / report need no torch)
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"run.device={name} is not a device; use auto, cpu, cuda, cuda:<n> or mps"
        ) from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"run.device={name} was requested but CUDA is not available; use run.device=cpu "
                "or auto"
            )
        if dev.index is not None and dev.index >= count:
            raise ConfigError(
                f"run.device={name}: this machine has {count} CUDA device(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"run.device={name} was requested but MPS is not available; use run.device=cpu "
                "or auto"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"run.device={name} is not supported; use auto, cpu, cuda or mps")


# Settings that name one of a fixed set of values. The code that reads them holds the same
# lists (estimators.samplers KINDS / MODES, models.device DTYPES; tests/test_fault_matrix.py
# checks they agree); they are spelled out here so that checking a config needs no torch.
CHOICES = {
    "estimator.sampler": ("logistic", "uniform"),
    "estimator.mode": ("iid", "stratified", "antithetic", "quadrature"),
    "run.dtype": ("float32", "float16", "bfloat16"),
}


def check_values(cfg: object) -> None:
    """Value ranges the schema's types cannot express; one ConfigError per first bad key."""
    for key in AT_LEAST_ONE:
        present, value = _get(cfg, key)
        if present and value is not None and (isinstance(value, bool) or value < 1):
            raise ConfigError(f"{key}={value} must be an integer >= 1")
    for key in POSITIVE:
        present, value = _get(cfg, key)
        if present and value is not None and not value > 0:
            raise ConfigError(f"{key}={value} must be > 0")
    for key in NON_NEGATIVE:
        present, value = _get(cfg, key)
        if present and value is not None and not value >= 0:
            raise ConfigError(f"{key}={value} must be >= 0")
    present, steps = _get(cfg, "steps")
    if present and (not steps or any(s < 1 for s in steps)):
        raise ConfigError(f"steps={steps} must be a non-empty list of integers >= 1")
    present, rounds = _get(cfg, "estimator.round_samples")
    if present and rounds < 2:
        raise ConfigError(
            f"estimator.round_samples={rounds} must be >= 2 (a standard error needs two samples)"
        )
    present, low = _get(cfg, "estimator.low")
    _, high = _get(cfg, "estimator.high")
    if present and not low < high:
        raise ConfigError(f"estimator.low={low} must be below estimator.high={high}")
    present, rank = _get(cfg, "run.rank")
    _, world_size = _get(cfg, "run.world_size")
    if present and rank is not None and (rank < 0 or (world_size and rank >= world_size)):
        raise ConfigError(f"run.rank={rank} must be in 0..run.world_size-1 ({world_size})")
    present, resume = _get(cfg, "run.resume")
    if present and resume not in RESUME_MODES:
        raise ConfigError(f"run.resume={resume} must be one of {', '.join(RESUME_MODES)}")
    for key, allowed in CHOICES.items():
        present, value = _get(cfg, key)
        if present and value not in allowed:
            raise ConfigError(f"{key}={value} is not one of: {', '.join(allowed)}")
    present, device = _get(cfg, "run.device")
    if present:
        check_device(str(device))

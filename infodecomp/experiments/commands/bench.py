"""`infodecomp bench`: the engine against the published procedure, per evaluation and per answer.

Speed: in one process, on one model, the same items and seed, rounds alternate the published
procedure (experiments.reference: float32, the published batching: all options + "" of a batch
of 10 VG items x 5 draws per UNet call = 150 rows, prompts encoded once per batch, sampled VAE
latent, nearest timestep) and the engine in each of `engine_dtypes` (all conditions of all items
batched in chunks of run.batch_size, 150 in configs/bench.yaml as the published UNet batch, one
shared unconditional pass, repeated conditions once);
medians of the rounds give evaluations per second and seconds per item; peak memory is taken per
procedure. The reduced-precision engine is checked against float32 on the same draws
(experiments.precision); the engine's dtype for `speedup` is the fastest one that passes.

Evaluations per answer: on the exact ShapesWorld oracle (noisy world), the agreement with the
exact ranking and the denoiser evaluations per answer of the paper's fixed 100 samples against
variance-reduced and adaptive schemes (experiments.efficiency); the published procedure spends
100 x (options + 1) evaluations per answer (300 for VG, 600 for COCO/Flickr-Order).

bench.json: `speedup`, `eval_fraction`, `evals_per_answer` (published vs engine), `cost_ratio` =
(engine seconds per evaluation / reference seconds per evaluation) x (engine evaluations per
answer / published evaluations per answer), the cost of an answer relative to the published
procedure at equal accuracy, and peak memory per procedure.
"""

from __future__ import annotations

import json
import re
import resource
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.experiments.common import resolve_device, to_dict
from infodecomp.experiments.config import BenchConfig
from infodecomp.experiments.efficiency import eval_fraction, model_agreement, sample_efficiency
from infodecomp.experiments.precision import compare_scores
from infodecomp.experiments.reference import (
    DRAWS_PER_CALL,
    conditions_of,
    items_per_batch,
    reference_scores,
)
from infodecomp.experiments.shim import hydra_main, run_dir
from infodecomp.models.registry import load_model
from infodecomp.reporting.meta import write_meta

OPTIONS = ("the man is beside the dog", "the dog is beside the man")
GPU_ONLY = (
    "implemented, not measured here (no GPU): bfloat16/float16 UNet on CUDA, "
    "model.attn_processor=sdpa (flash attention), model.channels_last, model.compile; "
    "not implemented: CUDA graphs for the fixed chunk shape, pinned host memory, a measured "
    "largest-batch search"
)
CPU_NOTE = (
    "note: measured on a CPU, no GPU was available. speedup, evals/s and cost_ratio compare the "
    "procedures on this CPU and this model only: they do not predict a GPU's throughput or "
    "its reduced-precision gain; for those run `infodecomp bench model=sd21-random "
    "run.device=cuda` on the GPU. evals_per_answer counts denoiser evaluations on the exact "
    "ShapesWorld oracle and holds on any device."
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> bool:
    """Starts a new peak-memory window; False where the platform cannot (then: process peak)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return True
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _images(n: int, size: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def item_options(n: int) -> list[tuple[str, ...]]:
    """n VG-like items, each with its own two captions (as in a real batch, no prompt repeats)."""
    return [tuple(f"{o} {i}" for o in OPTIONS) for i in range(n)]


def _engine_items(model, images, options, cfg: EngineConfig) -> torch.Tensor:
    """The engine's i^o [N, O] of the items; prompts encoded afresh, as for new items."""
    model._prompt_cache.clear()  # new items bring new captions: no encodings from earlier rounds
    xs = model.encode_images(images)  # [N, C, h, w]
    queries = [
        Query(xs[i], conditions_of(o), tuple((j, len(o)) for j in range(len(o))), key=i)
        for i, o in enumerate(options)
    ]
    ests = estimate(model, queries, cfg)
    return torch.tensor(
        [[e.info_o(j)[0] for j in range(len(o))] for e, o in zip(ests, options, strict=True)],
        dtype=torch.float64,
    )


def _stack(timed, extra) -> torch.Tensor:
    return timed if extra is None else torch.cat([timed, extra])


def _timed(device: torch.device, fn) -> tuple[float, float, float, object]:
    """(wall seconds, process CPU seconds, peak MB, result) of fn()."""
    _sync(device)
    _reset_peak(device)
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return time.perf_counter() - start, time.process_time() - cpu, _peak_mb(device), out


def speed(cfg: BenchConfig) -> dict:
    """Evaluations per second of the published procedure and of the engine per dtype.

    The models stay loaded; after one warm-up of each, `cfg.repeats` rounds each run the
    reference and then the engine in every dtype on the same items, and the median round is
    reported, so load changes hit all procedures alike. The float32 model serves the reference
    and the float32 engine (the reference uses none of the adapter's caches).
    """
    device = resolve_device(cfg.run.device)
    n, s = cfg.n_items, cfg.estimator.n_samples
    ref_model = load_model(replace(cfg.model, dtype="float32"), device, torch.float32)
    engines = {}
    unknown = [d for d in cfg.engine_dtypes if d not in ("float32", "bfloat16", "float16")]
    if unknown or not cfg.engine_dtypes:
        raise ValueError(
            f"engine_dtypes={list(cfg.engine_dtypes)}: give one or more of float32, bfloat16, "
            "float16 (float32 is needed to check the others)"
        )
    for name in cfg.engine_dtypes:
        dtype = getattr(torch, name)
        engines[name] = (
            ref_model
            if dtype == torch.float32
            else load_model(replace(cfg.model, dtype=name), device, dtype)
        )
    m = cfg.precision_items
    images = _images(n + m, ref_model.image_size, cfg.run.seed)
    options = item_options(n + m)
    ecfg = EngineConfig(n_samples=s, max_batch=cfg.run.batch_size, seed=cfg.run.seed)
    procedures = {"reference": lambda: reference_scores(ref_model, images[:n], options[:n], s)}
    for name, model in engines.items():
        procedures[name] = lambda mdl=model: _engine_items(mdl, images[:n], options[:n], ecfg)
    bar = tqdm(
        total=len(procedures) * (1 + cfg.repeats),
        desc="bench speed",
        unit="round",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    )
    times: dict[str, list[float]] = {k: [] for k in procedures}
    cpu_times: dict[str, list[float]] = {k: [] for k in procedures}
    peaks: dict[str, float] = dict.fromkeys(procedures, 0.0)
    results: dict[str, object] = {}
    with bar:
        bar.set_postfix_str("warm-up")
        # warm-up on the timed items' shapes (other draws): oneDNN / cuDNN pick their kernels
        # per shape on the first call, which would otherwise land in the first timed round
        reference_scores(ref_model, images[:n], options[:n], s, seed=10_000)
        bar.update()
        for model in engines.values():
            _engine_items(model, images[:n], options[:n], replace(ecfg, seed=10_000))
            bar.update()
        for _ in range(cfg.repeats):
            for name, fn in procedures.items():
                bar.set_postfix_str(name)
                t, cpu, peak, results[name] = _timed(device, fn)
                times[name].append(t)
                cpu_times[name].append(cpu)
                peaks[name] = max(peaks[name], peak)
                bar.update()
    ref = results["reference"]
    evals = n * s * (len(OPTIONS) + 1)
    assert ref["evals"] == evals  # type: ignore[index]
    per = {
        k: {
            "s_per_item": float(np.median(v)) / n,
            "evals_per_s": evals / float(np.median(v)),
            # process CPU seconds: less sensitive than wall time to other jobs on the machine
            "cpu_s_per_item": float(np.median(cpu_times[k])) / n,
            "rounds_s": v,
            "peak_mb": peaks[k],
        }
        for k, v in times.items()
    }
    precision = {}
    if "float32" in engines and len(engines) > 1:  # the timed items and `precision_items` more
        extra = {
            k: _engine_items(model, images[n:], options[n:], ecfg) if m else None
            for k, model in engines.items()
        }
        for name in engines:
            if name != "float32":
                precision[name] = compare_scores(
                    _stack(results["float32"], extra["float32"]), _stack(results[name], extra[name])
                )
    usable = [k for k in engines if k == "float32" or precision.get(k, {}).get("passed")]
    best = min(usable or list(engines), key=lambda k: per[k]["s_per_item"])
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": cfg.model.name,
        "n_items": n,
        "n_samples": s,
        "options_per_item": len(OPTIONS),
        "repeats": cfg.repeats,
        "reference": {
            **per["reference"],
            "dtype": "float32",
            "items_per_batch": items_per_batch(len(OPTIONS)),
            "draws_per_call": DRAWS_PER_CALL,
            "rows_per_call": sorted(set(ref["rows"])),  # type: ignore[index]
            "calls": ref["calls"],  # type: ignore[index]
            "prompt_encodes": ref["prompt_encodes"],  # type: ignore[index]
        },
        "engine": {k: {**per[k], "dtype": k} for k in engines},
        "engine_batch": cfg.run.batch_size,
        "engine_dtype": best,
        "precision": precision,
        "peak_memory_note": "CUDA max allocated per procedure"
        if device.type == "cuda"
        else "peak resident set size per procedure (VmHWM reset before each; models loaded)",
    }
    out["speedup_by_dtype"] = {
        k: per["reference"]["s_per_item"] / per[k]["s_per_item"] for k in engines
    }
    out["speedup"] = out["speedup_by_dtype"][best]
    # flat copies of the headline rates (older readers)
    out["reference_evals_per_s"] = per["reference"]["evals_per_s"]
    out["reference_s_per_item"] = per["reference"]["s_per_item"]
    out["engine_evals_per_s"] = per[best]["evals_per_s"]
    out["engine_s_per_item"] = per[best]["s_per_item"]
    return out


def _model_agreement(cfg: BenchConfig) -> list[dict]:
    """The bench model's answers against its own 100-sample answers (efficiency.model_agreement)."""
    device = resolve_device(cfg.run.device)
    model = load_model(replace(cfg.model, dtype="float32"), device, torch.float32)
    if (
        getattr(model, "trained_world", None) == "shapes"
    ):  # the learned model: its own world's items
        from infodecomp.data.registry import load_dataset
        from infodecomp.data.spec import DataSpec

        items = load_dataset(DataSpec(name="shapes-order", size=cfg.model_items)).items
        images, options = [it.image for it in items], [tuple(it.options) for it in items]
    else:
        images = _images(cfg.model_items, model.image_size, cfg.run.seed + 1)
        options = item_options(cfg.model_items)
    table = model_agreement(
        model,
        model.encode_images(images),
        options,
        seed=cfg.run.seed,
        max_batch=cfg.run.batch_size,
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return table.to_dict(orient="records")


def cost(speed_out: dict, table: pd.DataFrame) -> dict:
    """Evaluations per answer (published vs engine) and the cost of an answer relative to the
    published procedure at equal accuracy (module docstring)."""
    fraction, scheme = eval_fraction(table)
    published = float(table.attrs["published_evals_per_item"])
    engine = fraction * float(table.iloc[0]["evals_per_item"])  # nan when none matched
    per_eval = speed_out["reference_evals_per_s"] / speed_out["engine_evals_per_s"]
    return {
        "evals_per_answer": {
            "published": published,
            "published_vg": 100 * (2 + 1),
            "published_order": 100 * (5 + 1),
            "engine": engine,
            "engine_scheme": scheme,
            "fraction_of_published": engine / published,
        },
        "time_per_eval_ratio": per_eval,
        "cost_ratio": per_eval * engine / published,
    }


def run(cfg: BenchConfig) -> Path:
    out = run_dir(cfg, "bench")
    start = time.time()
    result: dict = {"speed": speed(cfg)}
    with tqdm(
        desc="bench samples (exact oracle)",
        unit="run",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    ) as bar:

        def step(scheme: str, total: int) -> None:
            bar.total = total
            bar.set_postfix_str(scheme)
            bar.update()

        table = sample_efficiency(
            n_per_set=cfg.oracle_items, noise=3.0, seed=cfg.run.seed, progress=step
        )
    table.to_csv(out / "efficiency.csv", index=False)
    fraction, scheme = eval_fraction(table)
    result["efficiency"] = {
        **table.attrs,
        "eval_fraction": fraction,
        "scheme": scheme,
        "table": table.to_dict(orient="records"),
    }
    sp = result["speed"]
    result.update(cost(sp, table))
    if cfg.model_items:
        result["model_agreement"] = _model_agreement(cfg)
    result["speedup"] = sp["speedup"]
    result["eval_fraction"] = fraction
    result["peak_memory_mb"] = {
        "reference": sp["reference"]["peak_mb"],
        **{f"engine_{k}": v["peak_mb"] for k, v in sp["engine"].items()},
    }
    result["gpu"] = GPU_ONLY if sp["device"] == "cpu" else "measured on " + sp["device"]
    if sp["device"] == "cpu":
        result["note"] = CPU_NOTE
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=float))
    rows = [
        (
            "reference (published batching, float32)",
            sp["reference"]["evals_per_s"],
            sp["reference"]["s_per_item"],
            sp["reference"]["peak_mb"],
        )
    ]
    for name, v in sp["engine"].items():
        rows.append((f"engine ({name})", v["evals_per_s"], v["s_per_item"], v["peak_mb"]))
    print(
        pd.DataFrame(rows, columns=["procedure", "evals/s", "s/item", "peak MB"]).to_string(
            index=False, float_format=lambda v: f"{v:.3g}"
        )
    )
    for name, check in sp["precision"].items():
        print(
            f"{name} vs float32 (same draws): i^o differs by {check['rel_diff_min']:+.2%} .. "
            f"{check['rel_diff_max']:+.2%} (tolerance {check['tolerance'][0]:+.0%} .. "
            f"{check['tolerance'][1]:+.0%}), ranking agreement "
            f"{check['ranking_agreement_clear']:.0%} on {check['clear_items']} clear-margin items: "
            + ("passed" if check["passed"] else "FAILED (not used)")
        )
    print(
        f"\nspeedup {result['speedup']:.2f}x (engine {sp['engine_dtype']}) on {sp['device']} "
        f"({sp['model']}, {sp['n_samples']} samples, {sp['n_items']} items)\n"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    epa = result["evals_per_answer"]
    print(
        f"\neval_fraction {fraction:.3f} ({scheme}); evals per answer: engine {epa['engine']:.1f} "
        f"vs published {epa['published']:.1f}\ncost_ratio {result['cost_ratio']:.3f} -> "
        f"{out / 'bench.json'}"
    )
    if sp["device"] == "cpu":
        print(f"\n{CPU_NOTE}\n{GPU_ONLY}")
    write_meta(
        out,
        to_dict(cfg),
        command="bench",
        device=sp["device"],
        dtype=sp["engine_dtype"],
        seed=cfg.run.seed,
        wall_time_s=time.time() - start,
        items_done=cfg.n_items,
        items_skipped=0,
    )
    return out


main = hydra_main("bench", run)

"""`infodecomp bench`: the cost of an answer, score by score, against the reference of that score.

Evaluations per answer (experiments.score_study): for each score, i^o, i^s and the denoising loss
as DiffusionITM computes it, its reference procedure (the published i^o / per-sample i^s: 100 iid
draws of the truncated logistic at the effective clip 4, options and "" in one batch;
DiffusionITM: 10 fixed timesteps, one shared noise bank) and the engine's candidate schemes are
scored against that score's converged answer (>= 2000 draws) on the same items, on each of
`study_models` (tiny-sd, shapes-learned, the exact oracle). Every network row an answer needs
is counted (the empty prompt for i^o). The engine's scheme for a score is the cheapest whose
agreement is within one paired standard error of the reference's (or above it).

Time per evaluation: in one process, on one model (`model`), rounds alternate the published
batching (experiments.reference: float32, all options + "" of a batch of 10 VG items x 5 draws per
UNet call = 150 rows, prompts encoded once per batch, sampled VAE latent, nearest timestep),
DiffusionITM's batching (4 images per call, one caption position, one call per timestep) and the
engine in each of `engine_dtypes` (chunks of run.batch_size rows, 150 as the published UNet batch);
medians of the rounds. A reduced-precision engine is checked against float32 on the same draws
(experiments.precision) and left out of the cost where it fails.

bench.json, per studied model and score: the reference's and the engine's evaluations per answer
at equal agreement and their ratio; per engine dtype, the time per evaluation against that
score's reference batching (i^o, i^s: the published; denoising loss: DiffusionITM's), and, on the
timed model only, cost_ratio = time ratio x evaluations ratio of that score. No figure mixes
scores or counting rules.
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
from tqdm import tqdm

from infodecomp.estimators.engine import EngineConfig, Query, estimate
from infodecomp.experiments.common import resolve_device, to_dict
from infodecomp.experiments.config import BenchConfig
from infodecomp.experiments.efficiency import OPTIONS, item_options, random_images
from infodecomp.experiments.precision import compare_scores
from infodecomp.experiments.reference import (
    DRAWS_PER_CALL,
    conditions_of,
    diffusionitm_losses,
    items_per_batch,
    reference_scores,
)
from infodecomp.experiments.score_study import SCORES, best_scheme, study, study_items
from infodecomp.experiments.shim import hydra_main, run_dir
from infodecomp.models.registry import load_model
from infodecomp.reporting.meta import write_meta

GPU_ONLY = (
    "implemented, not measured here (no GPU): bfloat16/float16 UNet on CUDA, "
    "model.attn_processor=sdpa (flash attention), model.channels_last, model.compile; "
    "not implemented: CUDA graphs for the fixed chunk shape, pinned host memory, a measured "
    "largest-batch search"
)
CPU_NOTE = (
    "note: measured on a CPU, no GPU was available. Times per evaluation and cost ratios compare "
    "the procedures on this CPU and this model only: they do not predict a GPU's throughput or "
    "its reduced-precision gain; for those run scripts/gpu_bench.sh on a GPU. Evaluations per "
    "answer count network rows and hold on any device."
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


TIMING_REFERENCE = {"io": "reference", "is": "reference", "dl": "diffusionitm"}


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
    ref_model, engines = _load_models(cfg, device)
    m = cfg.precision_items
    images = random_images(n + m, ref_model.image_size, cfg.run.seed)
    options = item_options(n + m)
    ecfg = EngineConfig(n_samples=s, max_batch=cfg.run.batch_size, seed=cfg.run.seed)
    ditm_latents = ref_model.encode_images(images[:n])
    procedures = {
        "reference": lambda: reference_scores(ref_model, images[:n], options[:n], s),
        "diffusionitm": lambda: diffusionitm_losses(ref_model, ditm_latents, options[:n]),
    }
    for name, model in engines.items():
        procedures[name] = lambda mdl=model: _engine_items(mdl, images[:n], options[:n], ecfg)

    def warm_up(bar: tqdm) -> None:
        # warm-up on the timed items' shapes (other draws): oneDNN / cuDNN pick their kernels
        # per shape on the first call, which would otherwise land in the first timed round
        reference_scores(ref_model, images[:n], options[:n], s, seed=10_000)
        bar.update()
        diffusionitm_losses(ref_model, ditm_latents, options[:n], seed=10_000)
        bar.update()
        for model in engines.values():
            _engine_items(model, images[:n], options[:n], replace(ecfg, seed=10_000))
            bar.update()

    times, cpu_times, peaks, results = _rounds(cfg, device, procedures, warm_up)
    ref = results["reference"]
    evals = n * s * (len(OPTIONS) + 1)
    assert ref["evals"] == evals  # type: ignore[index]
    counts = {k: evals for k in procedures}
    counts["diffusionitm"] = results["diffusionitm"]["evals"]  # type: ignore[index]
    per = {
        k: {
            "s_per_item": float(np.median(v)) / n,
            "s_per_eval": float(np.median(v)) / counts[k],
            "evals_per_s": counts[k] / float(np.median(v)),
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
    return _speed_report(cfg, device, engines, per, results, precision)


def _load_models(cfg: BenchConfig, device: torch.device) -> tuple[object, dict[str, object]]:
    """The float32 reference model and the engine's model per dtype (float32: the same one)."""
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
    return ref_model, engines


def _rounds(cfg: BenchConfig, device: torch.device, procedures: dict, warm_up) -> tuple:
    """After `warm_up(bar)`, `cfg.repeats` rounds of every procedure in turn: per procedure the
    wall seconds and CPU seconds of each round, the peak memory and the last result."""
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
        warm_up(bar)
        for _ in range(cfg.repeats):
            for name, fn in procedures.items():
                bar.set_postfix_str(name)
                t, cpu, peak, results[name] = _timed(device, fn)
                times[name].append(t)
                cpu_times[name].append(cpu)
                peaks[name] = max(peaks[name], peak)
                bar.update()
    return times, cpu_times, peaks, results


def _speed_report(
    cfg: BenchConfig, device: torch.device, engines: dict, per: dict, results: dict, precision: dict
) -> dict:
    """speed()'s result: per procedure its times, the usable engine dtypes and the time ratios."""
    n, s = cfg.n_items, cfg.estimator.n_samples
    ref = results["reference"]
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
        "diffusionitm": {
            **per["diffusionitm"],
            "dtype": "float32",
            "rows_per_call": sorted(set(results["diffusionitm"]["rows"])),  # type: ignore[index]
            "calls": results["diffusionitm"]["calls"],  # type: ignore[index]
        },
        "engine": {k: {**per[k], "dtype": k} for k in engines},
        "engine_batch": cfg.run.batch_size,
        "engine_dtype": best,
        "precision": precision,
        "peak_memory_note": "CUDA max allocated per procedure"
        if device.type == "cuda"
        else "peak resident set size per procedure (VmHWM reset before each; models loaded)",
    }
    # time per evaluation of each engine dtype against each score's reference batching
    out["time_per_eval_ratio"] = {
        score: {
            k: per[k]["s_per_eval"] / per[TIMING_REFERENCE[score]]["s_per_eval"] for k in engines
        }
        for score in SCORES
    }
    out["usable_dtypes"] = usable or ["float32"]
    return out


def scores_of(speed_out: dict, table: pd.DataFrame, timed: bool) -> dict:
    """Per score: reference and engine evaluations per answer at equal agreement, and, where the
    model is the timed one, per usable dtype the time ratio and cost_ratio of that score."""
    out = {}
    for score in SCORES:
        best = best_scheme(table, score)
        if timed:
            times = speed_out["time_per_eval_ratio"][score]
            best["time_per_eval_ratio"] = {k: times[k] for k in speed_out["usable_dtypes"]}
            best["cost_ratio"] = {
                k: v * best["eval_ratio"] for k, v in best["time_per_eval_ratio"].items()
            }
        out[score] = best
    return out


def run(cfg: BenchConfig) -> Path:
    out = run_dir(cfg, "bench")
    start = time.time()
    sp = speed(cfg)
    result: dict = {"speed": sp, "scores": {}, "study": {}}
    for name in cfg.study_models:
        res = _study(cfg, name)
        res.table.to_csv(out / f"study_{name}.csv", index=False)
        result["study"][name] = {**res.attrs, "table": res.table.to_dict(orient="records")}
        result["scores"][name] = scores_of(sp, res.table, timed=name == cfg.model.name)
        print(f"\n{name}: {res.attrs['items']} items x {res.attrs['repeats']} repeats")
        print(res.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    result["peak_memory_mb"] = {
        "reference": sp["reference"]["peak_mb"],
        "diffusionitm": sp["diffusionitm"]["peak_mb"],
        **{f"engine_{k}": v["peak_mb"] for k, v in sp["engine"].items()},
    }
    result["gpu"] = GPU_ONLY if sp["device"] == "cpu" else "measured on " + sp["device"]
    if sp["device"] == "cpu":
        result["note"] = CPU_NOTE
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=float))
    _print_speed(sp)
    _print_scores(result["scores"])
    print(f"-> {out / 'bench.json'}")
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


def _study(cfg: BenchConfig, name: str):
    """The score study (experiments.score_study) on the study model `name`."""
    with tqdm(
        total=3 + cfg.study_repeats,
        desc=f"bench study ({name})",
        unit="step",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    ) as bar:
        model, xs, options, pxs, popts = study_items(
            name,
            cfg.study_items,
            cfg.study_pilot_items,
            cfg.run.seed,
            "cpu" if name == "oracle" else str(resolve_device(cfg.run.device)),
        )
        bar.update()
        return study(
            model,
            xs,
            options,
            pxs,
            popts,
            repeats=cfg.study_repeats,
            converged_samples=cfg.converged_samples,
            seed=cfg.run.seed,
            progress=lambda step: (bar.set_postfix_str(step), bar.update()),
        )


def _print_speed(sp: dict) -> None:
    """The speed table and the reduced-precision checks, on the console."""
    rows = [
        ("reference (published batching, float32)", sp["reference"]),
        ("DiffusionITM batching (float32)", sp["diffusionitm"]),
        *((f"engine ({k})", v) for k, v in sp["engine"].items()),
    ]
    print(
        "\n"
        + pd.DataFrame(
            [(k, v["evals_per_s"], v["s_per_eval"] * 1e3, v["peak_mb"]) for k, v in rows],
            columns=["procedure", "evals/s", "ms/eval", "peak MB"],
        ).to_string(index=False, float_format=lambda v: f"{v:.3g}")
    )
    for name, check in sp["precision"].items():
        print(
            f"{name} vs float32 (same draws): i^o differs by {check['rel_diff_min']:+.2%} .. "
            f"{check['rel_diff_max']:+.2%} (tolerance {check['tolerance'][0]:+.0%} .. "
            f"{check['tolerance'][1]:+.0%}), ranking agreement "
            f"{check['ranking_agreement_clear']:.0%} on {check['clear_items']} clear-margin items: "
            + ("passed" if check["passed"] else "FAILED (not used)")
        )


def _print_scores(scores: dict) -> None:
    """Per study model and score: the reference's and the engine's cost at equal agreement."""
    for name, per_score in scores.items():
        for score, b in per_score.items():
            line = (
                f"{name} {score}: reference ({b['reference']}) {b['reference_evals_per_answer']:.1f} "
                f"evals/answer, agreement {b['reference_agreement']:.3f}; "
            )
            if b["scheme"] is None:
                line += "no engine scheme at equal agreement"
            else:
                line += (
                    f"engine ({b['scheme']}) {b['evals_per_answer']:.1f}, agreement "
                    f"{b['agreement']:.3f} (paired se {b['diff_se']:.3f}): eval_ratio "
                    f"{b['eval_ratio']:.3f}"
                )
                for k, v in b.get("cost_ratio", {}).items():
                    line += f"; cost_ratio {k} {v:.3f}"
            print(line)


main = hydra_main("bench", run)

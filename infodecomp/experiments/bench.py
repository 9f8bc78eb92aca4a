"""`infodecomp bench`: the engine against the published procedure, and samples per ARO answer.

Speed: in one process, on one model, the same items and seed, the published procedure
(experiments.reference: float32, the published batching: all options + "" of 10 items x 5 draws per UNet call, nearest
timestep) against the engine with its defaults for the device (bfloat16 on CUDA, float32 on CPU;
all conditions of all items batched, cached prompt encodings, one shared unconditional pass).
Samples: on the exact ShapesWorld oracle, agreement with the exact ranking and denoiser
evaluations per item for the paper's fixed 100 samples versus variance-reduced and adaptive
schemes (experiments.efficiency). Writes bench.json with `speedup` and `eval_fraction`.
"""

from __future__ import annotations

import json
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
from infodecomp.experiments.common import hydra_main, resolve_device, run_dir, to_dict
from infodecomp.experiments.config import BenchConfig
from infodecomp.experiments.efficiency import eval_fraction, sample_efficiency
from infodecomp.experiments.reference import reference_scores
from infodecomp.models.registry import load_model
from infodecomp.reporting.meta import write_meta

OPTIONS = ("the man is beside the dog", "the dog is beside the man")
CPU_NOTE = (
    "note: measured on a CPU. speedup and evals/s compare the two procedures on this CPU and "
    "this model only (float32 both, tiny-sd by default): they do not predict a GPU's "
    "throughput, the bfloat16 engine's gain there, or run times of the paper's tables; for "
    "those run `infodecomp bench model=sd21-random run.device=cuda` on the GPU. eval_fraction "
    "counts denoiser evaluations on the exact ShapesWorld oracle and holds on any device."
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS, MB


def _images(n: int, size: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]


def _engine_items(model, images, cfg: EngineConfig, offset: int) -> float:
    xs = model.encode_images(images)  # [N, 4, h, w]
    queries = [
        Query(xs[i], (*OPTIONS, ""), ((0, 2), (1, 2)), key=("bench", offset + i))
        for i in range(len(images))
    ]
    ests = estimate(model, queries, cfg)
    return float(sum(e.info_o(0)[0] for e in ests))


def _timed(device: torch.device, fn) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def speed(cfg: BenchConfig) -> dict:
    """Seconds per ARO item (2 captions + empty prompt, n_samples each) for both procedures.

    Both models stay loaded; rounds alternate reference and engine (`cfg.repeats` of each, after
    one warm-up) and the median round time is reported, so load changes hit both alike.
    """
    device = resolve_device(cfg.run.device)
    engine_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n, s = cfg.n_items, cfg.estimator.n_samples
    # the procedures' own dtypes, also over a preset's model.dtype (the large ones: bfloat16)
    ref_model = load_model(replace(cfg.model, dtype="float32"), device, torch.float32)
    engine_name = str(engine_dtype).removeprefix("torch.")
    model = load_model(replace(cfg.model, dtype=engine_name), device, engine_dtype)
    images = _images(n + 1, ref_model.image_size, cfg.run.seed)
    ecfg = EngineConfig(n_samples=s, max_batch=cfg.run.batch_size, seed=cfg.run.seed)
    evals = []

    def reference() -> None:
        evals.append(reference_scores(ref_model, images[:n], [OPTIONS] * n, s, seed=0)["evals"])

    bar = tqdm(
        total=2 + 2 * cfg.repeats,
        desc="bench speed",
        unit="round",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    )
    with bar:
        bar.set_postfix_str("warm-up")
        reference_scores(ref_model, images[-1:], [OPTIONS], s, seed=10_000)
        bar.update()
        _engine_items(model, images[-1:], ecfg, offset=10_000)
        bar.update()
        ref_times, eng_times, ref_peak, eng_peak = [], [], 0.0, 0.0
        for _ in range(cfg.repeats):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            bar.set_postfix_str("published procedure")
            ref_times.append(_timed(device, reference))
            ref_peak = max(ref_peak, _peak_mb(device))
            bar.update()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            bar.set_postfix_str("engine")
            eng_times.append(
                _timed(device, lambda: _engine_items(model, images[:n], ecfg, offset=0))
            )
            eng_peak = max(eng_peak, _peak_mb(device))
            bar.update()
    ref_t, eng_t = float(np.median(ref_times)), float(np.median(eng_times))
    out = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": cfg.model.name,
        "n_items": n,
        "n_samples": s,
        "repeats": cfg.repeats,
        "engine_dtype": str(engine_dtype).replace("torch.", ""),
        "engine_batch": cfg.run.batch_size,
        "reference_batch": cfg.reference_batch,
        "reference_s_per_item": ref_t / n,
        "reference_evals_per_s": evals[0] / ref_t,
        "reference_peak_mb": ref_peak,
        "engine_s_per_item": eng_t / n,
        "engine_evals_per_s": n * s * (len(OPTIONS) + 1) / eng_t,
        "engine_peak_mb": eng_peak,
        "peak_memory_note": "CUDA max allocated"
        if device.type == "cuda"
        else "process peak RSS (both models loaded)",
    }
    out["speedup"] = out["reference_s_per_item"] / out["engine_s_per_item"]
    return out


def run(cfg: BenchConfig) -> Path:
    out = run_dir(cfg, "bench")
    start = time.time()
    result = {"speed": speed(cfg)}
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
    result["speedup"] = result["speed"]["speedup"]
    result["eval_fraction"] = fraction
    if result["speed"]["device"] == "cpu":
        result["note"] = CPU_NOTE
    (out / "bench.json").write_text(json.dumps(result, indent=2, default=float))
    sp = result["speed"]
    rows = [
        (
            "reference (published procedure, float32)",
            sp["reference_evals_per_s"],
            sp["reference_s_per_item"],
            sp["reference_peak_mb"],
        ),
        (
            f"engine ({sp['engine_dtype']})",
            sp["engine_evals_per_s"],
            sp["engine_s_per_item"],
            sp["engine_peak_mb"],
        ),
    ]
    print(
        pd.DataFrame(rows, columns=["procedure", "evals/s", "s/item", "peak MB"]).to_string(
            index=False, float_format=lambda v: f"{v:.3g}"
        )
    )
    print(
        f"\nspeedup {result['speedup']:.2f}x on {sp['device']} ({sp['model']}, {sp['n_samples']} samples, {sp['n_items']} items)\n"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\neval_fraction {fraction:.3f} ({scheme}) -> {out / 'bench.json'}")
    if sp["device"] == "cpu":
        print(f"\n{CPU_NOTE}")
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

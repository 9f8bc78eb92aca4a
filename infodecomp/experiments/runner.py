"""The loop every experiment shares: shard, resume, load images, process batches, write, summarise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from infodecomp.data.records import Dataset, ImageLoadError
from infodecomp.data.registry import load_dataset
from infodecomp.experiments.common import (
    data_spec,
    resolve_device,
    resolve_dtype,
    run_dir,
    shard,
    to_dict,
)
from infodecomp.models.registry import load_model
from infodecomp.reporting.meta import write_meta, write_summary
from infodecomp.reporting.writer import (
    ResultsWriter,
    SkipLog,
    merge_parts,
    part_filename,
    read_results,
)
from infodecomp.worlds import shapes as world

log = logging.getLogger("infodecomp")


@dataclass
class RunContext:
    """What a command's batch function gets: the model, data set, run dir and settings."""

    cfg: Any
    out: Path
    model: Any
    dataset: Dataset
    device: Any
    rank: int
    world_size: int


BatchFn = Callable[[RunContext, list[Any], list[Any]], list[dict]]  # (ctx, items, images) -> rows


def execute(
    cfg: Any,
    command: str,
    columns: Sequence[str],
    process: BatchFn,
    summarize: Callable[[RunContext, pd.DataFrame], dict],
    *,
    headline: str | Callable[[dict], str],
) -> Path:
    """Runs `process` over the data set in checkpointed batches and writes the run directory.

    Finished items (listed in the done file) are skipped on rerun; images that fail to load are
    logged to skipped.csv and the run goes on. With WORLD_SIZE > 1 (torchrun) each rank takes every
    world_size-th item and writes its own part; rank 0 merges the parts it finds at the end.
    """
    out = run_dir(cfg, command)
    start = time.time()
    rank, world = shard()
    rank = cfg.run.rank if cfg.run.rank is not None else rank
    world = cfg.run.world_size if cfg.run.world_size is not None else world
    device, dtype = resolve_device(cfg.run.device), resolve_dtype(cfg.run.dtype)
    _check_oracle_noise(cfg)
    dataset = load_dataset(data_spec(cfg.data), cfg.run.limit)
    items = dataset.items[rank::world]
    filename = "results.csv" if world == 1 else part_filename(rank)
    skipfile = "skipped.csv" if world == 1 else f"skipped.part-{rank}.csv"
    writer = ResultsWriter(out, filename, columns)
    skips = SkipLog(out, skipfile)
    for s in dataset.skipped:
        if s.item_id not in skips.skipped_ids():
            skips.add(s.item_id, s.reason)
    done = writer.done_ids() | skips.skipped_ids()
    todo = [it for it in items if str(it.item_id) not in done]
    if len(todo) < len(items):
        log.info(
            "resuming %s: %d of %d items already done", out, len(items) - len(todo), len(items)
        )
    model = load_model(cfg.model, device, dtype) if todo else None
    ctx = RunContext(cfg, out, model, dataset, device, rank, world)
    step = max(1, cfg.run.items_per_step)
    bar = tqdm(
        total=len(items),
        initial=len(items) - len(todo),
        desc=f"{command} {cfg.data.name}",
        unit="item",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    )
    try:
        for b in range(0, len(todo), step):
            batch, images = [], []
            for item in todo[b : b + step]:
                try:
                    images.append(_for_model(cfg.model.name, dataset.load_image(item)))
                    batch.append(item)
                except (ImageLoadError, FileNotFoundError, OSError) as err:
                    skips.add(item.item_id, f"image: {err}")
            if batch:
                writer.append(process(ctx, batch, images), items=[it.item_id for it in batch])
            bar.update(len(todo[b : b + step]))
    finally:
        bar.close()
        writer.close()
        skips.close()
    if world > 1:
        _wait_for_ranks()
        if rank != 0:
            return out
        merge_parts(out)
    results = read_results(out)
    metrics = summarize(ctx, results) if len(results) else {}
    n_skipped = len(pd.read_csv(out / "skipped.csv")) if (out / "skipped.csv").exists() else 0
    metrics.update(
        {
            "items/done": int(results["item_id"].nunique()) if len(results) else 0,
            "items/skipped": n_skipped,
        }
    )
    write_summary(out, metrics)
    write_meta(
        out,
        to_dict(cfg),
        device=str(device),
        dtype=cfg.run.dtype,
        seed=cfg.run.seed,
        wall_time_s=time.time() - start,
        items_done=metrics["items/done"],
        items_skipped=n_skipped,
        command=command,
        extra={"dataset": {"name": dataset.name, **dataset.info}},  # source, revision, files
    )
    if callable(headline):  # the command formats its own scores
        shown = headline(metrics)
    else:
        value = metrics.get(headline)
        shown = f"{headline} = {f'{value:.4g}' if isinstance(value, float) else value}"
    print(f"{command}: {metrics['items/done']} items, {n_skipped} skipped, {shown} -> {out}")
    return out


def _wait_for_ranks() -> None:
    """Barrier across torchrun ranks (gloo on CPU, nccl on GPU) so rank 0 merges complete parts."""
    import os

    import torch.distributed as dist

    if not dist.is_available() or "MASTER_ADDR" not in os.environ:
        log.warning(
            "no torch.distributed launcher: rank 0 merges the parts finished so far; "
            "rerun rank 0 (run.rank=0) into the same run.out_dir to merge again later"
        )
        return
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    dist.barrier()


def _check_oracle_noise(cfg: Any) -> None:
    if cfg.model.name == "shapes-oracle" and cfg.data.name.startswith("shapes-"):
        noise = cfg.data.noise if cfg.data.noise is not None else world.SIGMA0
        if abs(noise - cfg.model.sigma0) > 1e-12:
            log.warning(
                "data.noise=%s differs from model.sigma0=%s: the oracle is then not the optimal "
                "denoiser of the data; set both to the same value",
                noise,
                cfg.model.sigma0,
            )


_warned_clamp = False


def _for_model(model_name: str, image: Any) -> Any:
    """ShapesWorld tensors go to the oracles as they are; an image model gets them as RGB images.

    The noisy ShapesWorld pixels exceed [-1, 1], so for a pixel-space image model they are clipped
    to that range (said once in the log), then handed over as an 8-bit PIL image.
    """
    global _warned_clamp
    from infodecomp.models.registry import is_oracle

    if is_oracle(model_name) or not isinstance(image, torch.Tensor):
        return image
    if not _warned_clamp:
        log.info(
            "ShapesWorld images are clipped to [-1, 1] and converted to RGB for model=%s",
            model_name,
        )
        _warned_clamp = True
    from PIL import Image

    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # [H, W, 3]
    return Image.fromarray(arr)

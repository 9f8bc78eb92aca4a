"""The loop every experiment shares: shard, resume, load images, process batches, write, summarise.

Item boundary: every failure of one item (its image, its mask, its tokens, the model on it) is
caught, recorded in the store's skipped table with the item id and the reason, and the run goes
on. When a batch fails as a whole, its items are retried one by one, so only the bad ones are
skipped. A failure that hits every item is a setup problem, not a bad item, so the run stops on
it instead: when every item of the first batch of at least two items that a run processes fails
inside the command with the same error type (and no item has finished in this run yet), the run
stops with that error before writing anything of that batch. Unreadable images and masks
(ImageLoadError) never stop a run, and a lone item is never taken for a setup problem (a resumed
run left with one bad item must not die on it forever). Running out of memory or of disk space
always stops the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from infodecomp.data.errors import DataError
from infodecomp.data.records import Dataset, ImageLoadError
from infodecomp.data.registry import check_kind, load_dataset
from infodecomp.estimators.protocol import encode_keyed
from infodecomp.experiments.checks import check_values
from infodecomp.experiments.common import (
    resolve_device,
    resolve_dtype,
    run_dir,
    shard,
    to_dict,
)
from infodecomp.experiments.errors import ConfigError, RunError
from infodecomp.experiments.session import KEYS, Session, first_start, leg_info, legs_for_meta
from infodecomp.experiments.shim import save_hydra_copy
from infodecomp.models.capabilities import ExactLikelihood, needs_rgb
from infodecomp.models.registry import load_model, model_source
from infodecomp.reporting.meta import write_meta, write_summary
from infodecomp.reporting.store import (
    DiskFull,
    RunView,
    Skip,
    StoreError,
    is_disk_full,
    read_results,
    wall_time,
)

log = logging.getLogger("infodecomp")

# Errors that are never one item's fault: they stop the run. A DataError is a data file that
# cannot be read as a whole (e.g. the COCO annotation file the masks come from); a ConfigError
# is a setting the loaded model cannot honour (e.g. attention=concept on a UNet), found only
# once the model is there.
_FATAL = (MemoryError, StoreError, torch.cuda.OutOfMemoryError, DataError, ConfigError)


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


def encode_batch(ctx: RunContext, items: list[Any], images: list[Any]) -> torch.Tensor:
    """The batch's data points [N, C, h, w]; a random encoding (a VAE posterior sample) is drawn
    from (run.seed, item id), so it is the same whatever run.items_per_step or the shards."""
    return encode_keyed(ctx.model, images, [str(it.item_id) for it in items], ctx.cfg.run.seed)


def execute(
    cfg: Any,
    command: str,
    columns: Sequence[str],
    process: BatchFn,
    summarize: Callable[[RunContext, pd.DataFrame], dict],
    *,
    headline: str | Callable[[dict], str],
    consumes: str,
    key: Sequence[str] | None = None,
) -> Path:
    """Runs `process` over the data set in checkpointed batches and writes the run directory.

    Each batch's rows, finished items and skipped items are committed to the run's store in one
    transaction (infodecomp.reporting.store); a rerun into the same run.out_dir resumes when the
    config fingerprint matches (infodecomp.experiments.session). With WORLD_SIZE > 1 (torchrun)
    each rank takes every world_size-th item and writes its own store; rank 0 merges them at the
    end. results.csv and skipped.csv are exported from the store at the end. `consumes` is the
    kind of data set the command reads (data.registry RANKING or WORDS), checked up front;
    `headline` is the summary key printed at the end (or a function of the metrics giving it).
    """
    check_values(cfg)  # a bad setting is one line before anything is written or computed
    out = run_dir(cfg, command)
    rank, world = shard()
    rank = cfg.run.rank if cfg.run.rank is not None else rank
    world = cfg.run.world_size if cfg.run.world_size is not None else world
    device, dtype = resolve_device(cfg.run.device), resolve_dtype(cfg.run.dtype)
    check_kind(cfg.data.name, consumes, command)
    session = Session(
        out,
        command,
        columns,
        key if key is not None else KEYS.get(command, ["item_id"]),
        to_dict(cfg),
        rank=rank,
        world=world,
        resume=cfg.run.resume,
        leg_info=leg_info(
            device=str(device), dtype=cfg.run.dtype, world_size=world, resume=cfg.run.resume
        ),
    )
    save_hydra_copy()  # the run accepted this config: Hydra's copy of it is now the run's
    try:
        ctx = _run_leg(cfg, command, process, session, out, device, dtype, rank, world)
        session.end_leg("finished")
        if world > 1:
            _wait_for_ranks(device)
            if rank != 0:
                return out
        session.merge_and_export()
    except BaseException as err:
        _record_stop(session, out, err, world)
        raise
    finally:
        session.close()
    return _write_run_files(cfg, command, out, ctx, str(device), summarize, headline)


def _record_stop(session: Session, out: Path, err: BaseException, world: int) -> None:
    """A leg stopped by `err`: its end is recorded and (unsharded) what finished is exported."""
    status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
    # the original error matters more than one in recording the stop; on a full disk those
    # fail the same way and are not repeated
    quiet = is_disk_full(err) or isinstance(err, DiskFull)
    try:
        session.end_leg(status, error=f"{type(err).__name__}: {err}")
    except Exception as leg_err:
        if not quiet:
            log.warning("could not record the end of this leg in %s: %s", out, leg_err)
    if world == 1:
        try:  # what finished is exported even when the run stops
            session.merge_and_export()
        except Exception as export_err:
            if not quiet:
                log.warning("could not export %s: %s", out, export_err)


def _write_run_files(
    cfg: Any,
    command: str,
    out: Path,
    ctx: RunContext,
    device: str,
    summarize: Callable[[RunContext, pd.DataFrame], dict],
    headline: str | Callable[[dict], str],
) -> Path:
    """meta.json and summary.json of a finished run, and its one line on the console."""
    with RunView(out) as view:
        n_done, n_skipped, legs = len(view.done()), len(view.skipped()), view.legs()
    results = read_results(out)
    # meta.json before the summary: a summary that fails still leaves a run aggregate can read
    write_meta(
        out,
        to_dict(cfg),
        device=device,
        dtype=cfg.run.dtype,
        seed=cfg.run.seed,
        wall_time_s=wall_time(legs),
        items_done=n_done,
        items_skipped=n_skipped,
        command=command,
        started_at=first_start(legs),
        legs=legs_for_meta(legs),
        extra={
            "model_source": model_source(cfg.model),
            "dataset": {"name": ctx.dataset.name, **ctx.dataset.info},  # source, revision, files
        },
    )
    metrics = summarize(ctx, results) if len(results) else {}
    metrics.update({"items/done": n_done, "items/skipped": n_skipped})
    write_summary(out, metrics)
    if n_done == 0:
        raise RunError(
            f"{command}: no item finished in {out} ({n_skipped} skipped: see {out / 'skipped.csv'})"
            if n_skipped
            else f"{command}: the data set {cfg.data.name} has no items"
        )
    if callable(headline):  # the command formats its own scores
        shown = headline(metrics)
    else:
        value = metrics.get(headline)
        shown = f"{headline} = {f'{value:.4g}' if isinstance(value, float) else value}"
    print(f"{command}: {n_done} items, {n_skipped} skipped, {shown} -> {out}")
    return out


def _run_leg(
    cfg: Any,
    command: str,
    process: BatchFn,
    session: Session,
    out: Path,
    device: Any,
    dtype: Any,
    rank: int,
    world: int,
) -> RunContext:
    """Loads the data and the model and processes what is left of this rank's items."""
    dataset = load_dataset(cfg.data, cfg.run.limit)
    session.record_load_skips(dataset.skipped)
    mine = list(enumerate(dataset.items))[rank::world]  # (position in the data set, item)
    todo = session.todo(mine, retry_skipped=cfg.run.retry_skipped)
    if len(todo) < len(mine):
        retried = sum(1 for _, it in todo if str(it.item_id) in session.skipped)
        log.info(
            "resuming %s: %d of %d items already done or skipped; retrying %d skipped",
            out,
            len(mine) - len(todo),
            len(mine),
            retried,
        )
    model = load_model(cfg.model, device, dtype) if todo else None
    if model is not None:
        _check_exact_for_data(model, dataset)
    ctx = RunContext(cfg, out, model, dataset, device, rank, world)
    step = max(1, cfg.run.items_per_step)
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"{command} {cfg.data.name}",
        unit="item",
        disable=not cfg.run.progress,
        dynamic_ncols=True,
    )
    decided = False  # whether a shared failure can still stop the run (see the module doc)
    try:
        for b in range(0, len(todo), step):
            chunk = todo[b : b + step]
            batch, images, skips = [], [], []
            for pos, item in chunk:
                try:
                    images.append(_for_model(model, dataset.load_image(item)))
                    batch.append((pos, item))
                except _FATAL:
                    raise
                except Exception as err:
                    skips.append(_skip(item, pos, err, "image: "))
            rows, done = [], []
            if batch:
                rows, done, failed = _process_batch(ctx, process, batch, images)
                if not decided and len(batch) >= 2 and not done:
                    _stop_if_shared(command, failed)
                decided = decided or len(batch) >= 2 or bool(done)
                skips += [s for s, _ in failed]
            session.commit(rows, done, skips)
            bar.update(len(chunk))
    finally:
        bar.close()
    return ctx


def _skip(item: Any, pos: int, err: BaseException, prefix: str = "") -> Skip:
    reason = (
        f"{prefix}{err}"
        if isinstance(err, ImageLoadError)
        else f"{prefix}{type(err).__name__}: {err}"
    )
    if isinstance(err, ImageLoadError):
        transient = err.transient
    else:
        transient = isinstance(err, OSError)  # missing, unreadable or unreachable files
    return Skip(str(item.item_id), reason, transient=transient, stage="item", ord=pos)


def _process_batch(
    ctx: RunContext, process: BatchFn, batch: list[tuple[int, Any]], images: list[Any]
) -> tuple[list[dict], list[tuple[str, int]], list[tuple[Skip, BaseException]]]:
    """Rows, finished (id, position) and failed (skip, error) of one batch; a failing batch is
    retried item by item, so one bad item costs only itself."""
    items = [it for _, it in batch]
    try:
        rows = process(ctx, items, images)
        return rows, [(str(it.item_id), pos) for pos, it in batch], []
    except _FATAL:
        raise
    except Exception as err:
        if is_disk_full(err):  # e.g. a map that cannot be saved: no item's fault
            raise
        if len(batch) == 1:
            pos, item = batch[0]
            log.warning("item %s skipped: %s: %s", item.item_id, type(err).__name__, err)
            return [], [], [(_skip(item, pos, err), err)]
        log.warning(
            "a batch of %d items failed (%s: %s); retrying its items one by one",
            len(batch),
            type(err).__name__,
            err,
        )
    rows, done, failed = [], [], []
    for (pos, item), image in zip(batch, images, strict=True):
        try:
            rows += process(ctx, [item], [image])
            done.append((str(item.item_id), pos))
        except _FATAL:
            raise
        except Exception as err:
            if is_disk_full(err):
                raise
            log.warning("item %s skipped: %s: %s", item.item_id, type(err).__name__, err)
            failed.append((_skip(item, pos, err), err))
    return rows, done, failed


def _stop_if_shared(command: str, failed: list[tuple[Skip, BaseException]]) -> None:
    """Every item of the first batch failed: stop when they failed the same way (not one item's
    data, e.g. an unreadable image or mask, but a setting or the model)."""
    kinds = {type(err) for _, err in failed}
    if len(kinds) != 1 or issubclass(next(iter(kinds)), ImageLoadError):
        return
    err = failed[0][1]
    raise RunError(
        f"{command}: every item of the first batch ({len(failed)}) failed with "
        f"{type(err).__name__}: {' '.join(str(err).split())} -- a failure shared by every item "
        "is a setup problem, not a bad item; nothing of this batch was written, fix it and rerun"
    ) from err


def _wait_for_ranks(device: torch.device) -> None:
    """Barrier across launcher ranks so rank 0 merges complete parts: NCCL on this rank's own GPU
    when the run is on CUDA (each rank's device, never all on GPU 0), gloo otherwise."""
    import os

    import torch.distributed as dist

    if not dist.is_available() or "MASTER_ADDR" not in os.environ:
        log.warning(
            "no torch.distributed launcher: rank 0 merges the parts finished so far; "
            "rerun rank 0 (run.rank=0) into the same run.out_dir to merge again later"
        )
        return
    gpu = None
    if device.type == "cuda":  # the rank's GPU, current since resolve_device (use_device)
        gpu = device.index if device.index is not None else torch.cuda.current_device()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu is not None else "gloo")
    if gpu is not None and dist.get_backend() == "nccl":
        dist.barrier(device_ids=[gpu])
    else:
        dist.barrier()


def _check_exact_for_data(model: Any, dataset: Dataset) -> None:
    """An exact oracle is exact only for data of its world drawn with its noise: say so once."""
    if not isinstance(model, ExactLikelihood) or dataset.info.get("world") != model.world:
        return
    noise = dataset.info.get("noise")
    if noise is not None and abs(float(noise) - model.noise) > 1e-12:
        log.warning(
            "data.noise=%s differs from model.sigma0=%s: the oracle is then not the optimal "
            "denoiser of the data; set both to the same value",
            noise,
            model.noise,
        )


_warned_clamp = False


def _for_model(model: Any, image: Any) -> Any:
    """ShapesWorld tensors go to the oracles as they are; an image model gets them as RGB images.

    The noisy ShapesWorld pixels exceed [-1, 1], so for an image model they are clipped to that
    range (said once in the log), then handed over as an 8-bit PIL image. A model trained on the
    world's own pixels (`trained_world`, the learned ShapesWorld model) gets them as they are.
    """
    global _warned_clamp

    if not needs_rgb(model) or not isinstance(image, torch.Tensor):
        return image
    if not _warned_clamp:
        log.info(
            "ShapesWorld images are clipped to [-1, 1] and converted to RGB for %s",
            type(model).__name__,
        )
        _warned_clamp = True
    from PIL import Image

    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()  # [H, W, 3]
    return Image.fromarray(arr)

"""Device and dtype names shared by the adapters and the commands.

One process per GPU: a launcher (torchrun, `accelerate launch`, or a Slurm job through the
submitit launcher, see infodecomp.experiments.common.shard) tells each process its LOCAL_RANK,
its slot on its machine. `run.device=auto` (and a bare `cuda`) then means that slot's GPU,
cuda:<LOCAL_RANK mod the number of visible GPUs>, so eight ranks on an eight-GPU machine use
eight GPUs (and a job that sees one GPU per process, through CUDA_VISIBLE_DEVICES, uses it).
"""

from __future__ import annotations

import os

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def local_rank() -> int | None:
    """This process's slot on its machine (LOCAL_RANK, set by torchrun and accelerate), or None
    when no launcher started it."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" picks cuda, then mps, then cpu; anything else is passed to torch.device.

    Under a launcher (LOCAL_RANK set) "auto" and a bare "cuda" name this rank's own GPU,
    cuda:<LOCAL_RANK mod device_count>; "cuda:<n>" is taken as written.
    """
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    dev = torch.device(name)
    slot = local_rank()
    if dev.type == "cuda" and dev.index is None and slot is not None and torch.cuda.is_available():
        dev = torch.device("cuda", slot % max(1, torch.cuda.device_count()))
    return dev


def use_device(device: torch.device) -> None:
    """Makes `device` this process's current CUDA device (what a bare "cuda", NCCL and the CUDA
    libraries use), so no rank touches GPU 0 by default; nothing for other devices."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """ "float32" | "float16" | "bfloat16" (or a torch dtype) -> torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype '{dtype}' is not one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]

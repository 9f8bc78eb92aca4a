"""Resuming an interrupted run, rerunning a finished one, and data-parallel sharding.

The engine seeds each item's draws from (run.seed, item_id), so neither an interruption nor the
assignment of items to ranks may change a single number: every variant must reproduce the
results of one uninterrupted, unsharded run with the same seed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from infodecomp.reporting.store import read_results

ENV = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
for _key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
    ENV.pop(_key, None)
CLI = [sys.executable, "-m", "infodecomp.cli"]
KEY = ["item_id", "option", "estimator"]
# Slow enough per checkpoint (2 items x 200 samples) that a run can be caught half-way.
RESUME_ARGS = (
    "aro",
    "data.size=40",
    "estimator.n_samples=200",
    "run.items_per_step=2",
    "run.seed=3",
    "run.device=cpu",
    "run.progress=false",
)
N_RESUME = 40
SHARD_ARGS = ("aro", "data.size=8", "estimator.n_samples=8", "run.device=cpu", "run.progress=false")


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300):
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env or ENV,
        timeout=timeout,
        check=False,
    )


def results(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv", dtype={"item_id": str, "text": str})
    return df.sort_values(KEY).reset_index(drop=True)


def done_items(out: Path, store: str = "results.sqlite") -> dict[str, str]:
    """Finished items of one store: item id -> the uid of the leg that finished it."""
    path = out / store
    if not path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        try:
            return dict(conn.execute("SELECT item_id, leg FROM done ORDER BY ord"))
        except sqlite3.OperationalError:  # created, tables not visible yet
            return {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(workdir: Path) -> Path:
    """One uninterrupted run with RESUME_ARGS."""
    out = workdir / "reference"
    res = run_cli(*RESUME_ARGS, f"run.out_dir={out}", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(done_items(out)) == N_RESUME
    return out


@pytest.fixture(scope="module")
def unsharded(workdir: Path) -> Path:
    out = workdir / "unsharded"
    res = run_cli(*SHARD_ARGS, f"run.out_dir={out}", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def _interrupt(out: Path, sig: int, cwd: Path) -> dict[str, str]:
    """Starts the run, waits for its first checkpoint, sends `sig`; returns the finished items."""
    log = cwd / f"{out.name}.log"
    with open(log, "w") as sink:  # a file, not a pipe: the child never blocks on a full pipe
        proc = subprocess.Popen(
            [*CLI, *RESUME_ARGS, f"run.out_dir={out}"],
            cwd=cwd,
            env=ENV,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while not done_items(out):
            if proc.poll() is not None:
                pytest.fail(f"run ended before its first checkpoint:\n{log.read_text()[-3000:]}")
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.01)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "an interrupted run must not exit 0"
    return done_items(out)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_resume_after_interruption(sig: int, reference: Path, workdir: Path) -> None:
    out = workdir / f"interrupted-{sig}"
    before = _interrupt(out, sig, workdir)
    assert 1 <= len(before) < N_RESUME, f"interrupted after {len(before)} of {N_RESUME} items"
    # what the store holds after the interruption is consistent: whole items, no duplicate
    partial = read_results(out)
    assert set(partial["item_id"]) == set(before)
    assert not partial.duplicated(KEY).any()

    res = run_cli(*RESUME_ARGS, f"run.out_dir={out}", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"aro: {N_RESUME} items, 0 skipped" in res.stdout
    assert "resuming" in res.stdout + res.stderr

    after = done_items(out)
    assert {i: after[i] for i in before} == before  # finished items were kept, not redone
    assert len(after) == N_RESUME
    assert set(after) == set(done_items(reference))
    got, want = results(out), results(reference)
    assert not got.duplicated(KEY).any()
    pd.testing.assert_frame_equal(got, want)
    assert (out / "results.csv").read_text() == (reference / "results.csv").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((reference / "summary.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    assert meta["items_done"] == N_RESUME
    legs = meta["legs"]  # the interrupted leg and the resumed one, times accumulated
    first = "interrupted" if sig == signal.SIGINT else "unfinished"  # SIGKILL: no end recorded
    assert [g["status"] for g in legs] == [first, "finished"]
    assert sum(g["items_done"] for g in legs) == N_RESUME
    assert meta["started_at"] == legs[0]["started_at"]
    assert meta["wall_time_s"] >= legs[1]["wall_time_s"] + 0.9 * legs[0]["wall_time_s"]


def test_rerun_of_a_finished_run_recomputes_nothing(reference: Path, workdir: Path) -> None:
    files = [reference / "results.csv", reference / "skipped.csv"]
    stamps = [p.stat().st_mtime_ns for p in files]
    before = done_items(reference)
    rows = len(results(reference))
    res = run_cli(*RESUME_ARGS, f"run.out_dir={reference}", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert done_items(reference) == before  # no item finished again
    assert len(results(reference)) == rows == N_RESUME * 2 * 3
    assert f"aro: {N_RESUME} items, 0 skipped, accuracy i^o " in res.stdout  # summary printed
    assert f"{N_RESUME} of {N_RESUME} items already done" in res.stdout + res.stderr
    meta = json.loads((reference / "meta.json").read_text())
    assert meta["items_done"] == N_RESUME
    assert [g["items_done"] for g in meta["legs"]][-1] == 0


def _check_parts(out: Path, world: int, n_items: int) -> None:
    items = [f"shapes-relation-0-{i}" for i in range(n_items)]
    for rank in range(world):
        part = done_items(out, f"results.rank-{rank}.sqlite")
        assert sorted(part) == sorted(items[rank::world])


def _torchrun_usable() -> bool:
    import torch.distributed as dist

    return (
        dist.is_available()
        and dist.is_gloo_available()
        and importlib.util.find_spec("torch.distributed.run") is not None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sharded_run_matches_unsharded(unsharded: Path, workdir: Path) -> None:
    out = workdir / "sharded"
    args = [*SHARD_ARGS, f"run.out_dir={out}"]
    if _torchrun_usable():
        res = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
            + ["-m", "infodecomp.cli", *args],
            capture_output=True,
            text=True,
            cwd=workdir,
            env=ENV,
            timeout=300,
            check=False,
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    else:  # the launcher's environment by hand; gloo on CPU
        port = str(_free_port())
        procs = [
            subprocess.Popen(
                [*CLI, *args],
                cwd=workdir,
                env={
                    **ENV,
                    "RANK": str(r),
                    "LOCAL_RANK": str(r),
                    "WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": port,
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in range(2)
        ]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
    _check_parts(out, 2, 8)
    pd.testing.assert_frame_equal(results(out), results(unsharded))
    assert sorted(done_items(out)) == sorted(done_items(unsharded))
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((unsharded / "summary.json").read_text())
    assert summary["items/done"] == 8


def test_manual_shards_without_a_launcher(unsharded: Path, workdir: Path) -> None:
    """run.rank / run.world_size by hand, one after another: rank 0 merges what exists."""
    out = workdir / "manual"
    args = [*SHARD_ARGS, f"run.out_dir={out}", "run.world_size=2"]

    res = run_cli(*args, "run.rank=0", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "no torch.distributed launcher" in log and "rerun rank 0" in log
    first = results(out)  # rank 0 merged its own part only
    assert sorted(first["item_id"].unique()) == [f"shapes-relation-0-{i}" for i in (0, 2, 4, 6)]
    assert json.loads((out / "summary.json").read_text())["items/done"] == 4

    res = run_cli(*args, "run.rank=1", cwd=workdir)
    assert res.returncode == 0, res.stderr[-3000:]
    assert results(out)["item_id"].nunique() == 4  # rank 1 writes its part and does not merge
    _check_parts(out, 2, 8)

    res = run_cli(*args, "run.rank=0", cwd=workdir)  # nothing left to do: merges again
    assert res.returncode == 0, res.stderr[-3000:]
    assert "aro: 8 items, 0 skipped" in res.stdout
    pd.testing.assert_frame_equal(results(out), results(unsharded))
    assert len(done_items(out)) == 8  # merged into results.sqlite
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads((unsharded / "summary.json").read_text())

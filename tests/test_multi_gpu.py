"""One process per GPU: each launcher rank on its own device, and the launchers that start them.

No GPU here: CUDA is faked (torch.cuda.is_available / device_count / set_device patched) and the
device each rank is given is captured where the run loads its model. A real 2-rank gloo run on
CPU through torchrun is in tests/test_resume_shard.py; the submitit launcher (Slurm's, and its
local executor that starts the same tasks on this machine) is run here when it is installed
(the `cluster` extra, which `make install` includes). scripts/gpu_check.sh runs the gpu-marked
check on a real machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from infodecomp.experiments import common, runner
from infodecomp.experiments.commands import aro
from infodecomp.experiments.config import AroConfig
from infodecomp.models import device as devices

REPO = Path(__file__).resolve().parents[1]
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARS = ("SUBMITIT_EXECUTOR", "SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def child_env() -> dict[str, str]:
    """This environment without launcher variables, with the repository first on the path."""
    env = {k: v for k, v in os.environ.items() if k not in (*LAUNCH_VARS, *SLURM_VARS)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    return env


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No launcher variables; the environment as it was afterwards, including what
    common.submitit_env wrote into os.environ itself (which monkeypatch does not track)."""
    saved = dict(os.environ)
    for key in (*LAUNCH_VARS, *SLURM_VARS, "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    monkeypatch.undo()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def two_gpus(clean_env: pytest.MonkeyPatch) -> list[torch.device]:
    """A machine with two fake GPUs; returns the devices set_device was called with."""
    current: list[torch.device] = []
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setattr(torch.cuda, "device_count", lambda: 2)
    clean_env.setattr(torch.cuda, "set_device", lambda d: current.append(torch.device(d)))
    return current


def placements(monkeypatch: pytest.MonkeyPatch, name: str, world: int = 2) -> list[torch.device]:
    """The device `name` resolves to in each of `world` launcher ranks (LOCAL_RANK = rank)."""
    out = []
    for rank in range(world):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        out.append(common.resolve_device(name))
    return out


def assert_one_gpu_per_rank(devs: list[torch.device]) -> None:
    assert [d.type for d in devs] == ["cuda"] * len(devs), devs
    assert [d.index for d in devs] == list(range(len(devs))), f"ranks share a GPU: {devs}"


def test_auto_and_cuda_place_rank_r_on_gpu_r(two_gpus, clean_env):
    for name in ("auto", "cuda"):
        two_gpus.clear()
        devs = placements(clean_env, name)
        assert_one_gpu_per_rank(devs)
        assert two_gpus == devs  # each rank's GPU is made the current one (NCCL, bare "cuda")
    # an explicit index is taken as written; more ranks than GPUs share them round-robin
    assert placements(clean_env, "cuda:1") == [torch.device("cuda", 1)] * 2
    assert [d.index for d in placements(clean_env, "auto", world=4)] == [0, 1, 0, 1]
    clean_env.delenv("LOCAL_RANK")  # no launcher: CUDA's default device, as before
    assert common.resolve_device("auto") == torch.device("cuda")


def test_control_ignoring_local_rank_puts_every_rank_on_one_gpu(two_gpus, clean_env):
    """The fault of issue 27 (LOCAL_RANK read nowhere): the check above must catch it."""
    clean_env.setattr(devices, "local_rank", lambda: None)
    with pytest.raises(AssertionError, match="ranks share a GPU|cuda"):
        assert_one_gpu_per_rank(placements(clean_env, "auto"))


class Placed(BaseException):
    """Stops a faked-GPU run where it loads its model (no CUDA to run it on)."""


def test_a_two_rank_run_loads_rank_r_on_device_r(two_gpus, clean_env, tmp_path):
    """Each rank of a 2-rank run (torchrun's variables, no barrier) gets cuda:<rank>: the device
    it loads the model on, the current CUDA device, and the device its leg records."""
    loaded: dict[int, torch.device] = {}

    def load_model(model_cfg, device, dtype):
        loaded[int(os.environ["RANK"])] = device
        raise Placed

    clean_env.setattr(runner, "load_model", load_model)
    for rank in range(2):
        clean_env.setenv("RANK", str(rank))
        clean_env.setenv("LOCAL_RANK", str(rank))
        clean_env.setenv("WORLD_SIZE", "2")
        cfg = AroConfig()
        cfg.data.size, cfg.estimator.n_samples, cfg.run.progress = 4, 2, False
        cfg.run.out_dir = str(tmp_path / "run")
        with pytest.raises(Placed):
            aro.run(cfg)
    assert loaded == {0: torch.device("cuda", 0), 1: torch.device("cuda", 1)}
    assert two_gpus == [torch.device("cuda", 0), torch.device("cuda", 1)]
    import sqlite3

    legs = {}
    for rank in range(2):
        with sqlite3.connect(tmp_path / "run" / f"results.rank-{rank}.sqlite") as db:
            (info,) = db.execute("SELECT info FROM legs").fetchone()
            legs[rank] = json.loads(info)["device"]
    assert legs == {0: "cuda:0", 1: "cuda:1"}


def test_the_barrier_runs_on_the_rank_gpu(clean_env):
    import torch.distributed as dist

    calls: list[tuple] = []
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setattr(dist, "is_initialized", lambda: False)
    clean_env.setattr(dist, "init_process_group", lambda backend: calls.append(("init", backend)))
    clean_env.setattr(dist, "get_backend", lambda: calls[0][1])
    clean_env.setattr(
        dist, "barrier", lambda device_ids=None: calls.append(("barrier", device_ids))
    )
    runner._wait_for_ranks(torch.device("cuda", 1))
    assert calls == [("init", "nccl"), ("barrier", [1])]
    calls.clear()
    runner._wait_for_ranks(torch.device("cpu"))  # a CPU run on a GPU machine: gloo
    assert calls == [("init", "gloo"), ("barrier", None)]


def test_a_slurm_task_becomes_a_torch_distributed_rank(clean_env):
    """Inside a submitit job of 2 nodes x 2 tasks, task 3 is rank 3 of 4, slot 1 on its node,
    with the job's first node as the rendezvous; a launcher's own variables are kept."""
    pytest.importorskip("submitit")
    env = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "4",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_PROCID": "3",
        "SLURM_LOCALID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
    }
    for k, v in env.items():
        clean_env.setenv(k, v)
    assert common.shard() == (3, 4)
    assert devices.local_rank() == 1
    assert os.environ["MASTER_ADDR"] == "gpu07"
    assert 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert os.environ["LOCAL_WORLD_SIZE"] == "2"
    # torchrun inside the job (RANK set) wins; a single-task job is not distributed
    assert common.submitit_env() == {}
    for k in LAUNCH_VARS:
        os.environ.pop(k, None)
    clean_env.setenv("SLURM_NTASKS", "1")
    assert common.shard() == (0, 1) and "MASTER_ADDR" not in os.environ


def test_no_launcher_variable_outlives_the_tests_above():
    """The Slurm test writes RANK etc. into os.environ itself (as a job does): a leak would make
    every later run in this process rank 3 of 4, waiting for a barrier that never comes."""
    assert not [k for k in LAUNCH_VARS if k in os.environ]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env(),
        timeout=600,
        check=False,
    )


# Runs the README's Slurm command up to the submission: submitit renders the sbatch script that
# Slurm would get (there is no Slurm here) and the driver prints it instead of submitting.
SBATCH_DRIVER = """
import sys
import submitit

class Submitted(BaseException):
    pass

def map_array(self, fn, *args):
    print(self._executor._make_submission_file_text("python -u -m submitit.core._submit", "uid"))
    raise Submitted

submitit.AutoExecutor.map_array = map_array
from infodecomp.cli import main
try:
    main(sys.argv[1:])
except Submitted:
    sys.exit(0)
sys.exit(3)  # the launcher never submitted
"""


def test_the_slurm_multinode_example_reaches_the_sbatch_script(tmp_path):
    """The README's Slurm command: its launcher settings, as Hydra hands them to submitit, in
    the sbatch script Slurm would run (one task per GPU on each of the nodes)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"  # submitit looks for srun on PATH before it writes the script
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    env = child_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    res = subprocess.run(
        [sys.executable, "-c", SBATCH_DRIVER, "aro", "-m", "hydra/launcher=slurm-multinode"]
        + ["hydra.launcher.partition=gpu", "hydra.launcher.tasks_per_node=4"]
        + ["data=aro-vg-relation", "data.root=/data/aro", f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    script = res.stdout
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --time=720",
        "export SUBMITIT_EXECUTOR=slurm",
    ):
        assert line in script, script
    assert "srun" in script and "submitit.core._submit" in script, script


@pytest.mark.slow
def test_the_submitit_launcher_runs_one_rank_per_task(tmp_path):
    """submitit's local executor starts 2 tasks of one job on this machine, as Slurm starts them
    on nodes: each becomes a rank (submitit_env), takes every 2nd item, and rank 0 merges after
    the gloo barrier into the result of one unsharded run."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    small = ["data.size=8", "estimator.n_samples=4", "run.device=cpu", "run.progress=false"]
    sweep = tmp_path / "sweep"
    res = _cli(
        "aro",
        "-m",
        "hydra/launcher=submitit_local",
        "hydra.launcher.tasks_per_node=2",
        f"hydra.sweep.dir={sweep}",
        *small,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (out,) = [p.parent for p in sweep.glob("*/summary.json")]
    assert sorted(p.name for p in out.glob("results.rank-*.sqlite")) == [
        "results.rank-0.sqlite",
        "results.rank-1.sqlite",
    ]
    legs = json.loads((out / "meta.json").read_text())["legs"]
    assert sorted((leg["rank"], leg["world_size"]) for leg in legs) == [(0, 2), (1, 2)]
    single = _cli("aro", *small, f"run.out_dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    assert (out / "results.csv").read_text() == (tmp_path / "single" / "results.csv").read_text()


@pytest.mark.gpu
def test_gpu_torchrun_puts_each_rank_on_its_own_gpu(tmp_path):
    """On a CUDA machine (scripts/gpu_check.sh): torchrun with one process per GPU (two at most)
    and run.device=auto; each rank's leg records cuda:<rank>, and with two GPUs the NCCL barrier
    runs on each rank's own GPU before rank 0 merges all items."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    n = min(2, torch.cuda.device_count())
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
        + ["-m", "infodecomp.cli", "aro", "data.size=8", "estimator.n_samples=4"]
        + ["run.device=auto", "run.progress=false", f"run.out_dir={out}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=child_env(),
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    legs = json.loads((out / "meta.json").read_text())["legs"]
    assert sorted((leg["rank"], leg["device"]) for leg in legs) == [
        (r, f"cuda:{r}") for r in range(n)
    ]
    assert json.loads((out / "summary.json").read_text())["items/done"] == 8

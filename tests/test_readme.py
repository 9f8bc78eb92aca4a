"""Every command in README.md runs, in README order, with small limits, so an example cannot rot.

Commands are the lines of fenced code blocks and the inline code spans that start with a known
program (`infodecomp`, `make`, `pip`, ...). Each one either runs here, with the overrides in
SMALL appended to keep it short, or is in SKIP with the reason it cannot run in a test. Both
tables are checked against the README, so a new command has to be placed in one of them.

The commands run in one temporary folder, so `aggregate` finds the runs made before it. They
call `infodecomp` through INFODECOMP_BIN when it is set (the console script of an installed
wheel: .ci/run's wheel step), else `python -m infodecomp.cli`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
PROGRAMS = ("infodecomp", "make", "pip", "python", "python3", "torchrun", "pytest")

# command as written in the README -> why a test does not run it
SKIP = {
    "make demo": "runs the tour's commands at full size; each of them runs here",
    "make test": "this test suite itself",
    "make test-all": "this suite plus the slow and GPU checks",
    "make lint": "ruff, run by the developers' lint step",
    "make install": "creates .venv with torch and the dev extra; .ci/run starts with it",
    'make install TORCH_SPEC="torch==2.5.1"': "downloads another torch build",
    "make reproduce ARO_ROOT=/data/aro COCO_ROOT=/data/coco": (
        "the paper's tables: needs ARO, COCO and a GPU"
    ),
    "python3 -m venv .venv && . .venv/bin/activate": (
        "creates a virtual environment; .ci/run's wheel step does this"
    ),
    "pip install torch --index-url https://download.pytorch.org/whl/cpu": (
        "network install; .ci/run's wheel step installs torch first, then the wheel"
    ),
    "pip install .": "network install; .ci/run's wheel step installs the built wheel",
    "pip install torch": "network install (the CUDA build on Linux), named as what to avoid",
    "pip install 'infodecomp[pos]'": "network install of an optional extra (nltk)",
    "pip install 'infodecomp[cluster]'": "network install of an optional extra (submitit)",
    "pytest -m gpu": "needs a CUDA device",
    "python examples/quickstart.py": "run by tests/test_examples.py (the same script, offline)",
    "infodecomp aro +experiment=paper-table1 data=aro-vg-relation data.root=/data/aro": (
        "needs the ARO data set (Visual Genome images)"
    ),
    "infodecomp bench model=sd21-random run.device=cuda": "needs a CUDA device",
    "infodecomp localize model=flux-schnell attention=concept data=imagenet-seg "
    "data.root=/data/imagenet-seg "
    "data.annotations=/data/imagenet_class_map.json": (
        "needs ImageNet-Segmentation and a Flux checkpoint (fixtures: "
        "tests/test_localize_segmentation.py)"
    ),
    "infodecomp localize model=sd3.5-medium attention=concept data=voc-seg "
    "data.root=/data/VOCdevkit "
    "data.classes=multi": (
        "needs PascalVOC 2012 and a gated SD 3.5 checkpoint (fixtures: "
        "tests/test_localize_segmentation.py)"
    ),
    "python -m nltk.downloader wordnet": "network download of nltk's WordNet corpus",
    "infodecomp calibrate n_items=60 word_items=24 estimator.n_samples=100": (
        "the measured calibration (11 minutes on a CPU); `infodecomp calibrate` runs here with "
        "small limits"
    ),
    "infodecomp bench study_models=[tiny-sd] study_items=8 study_pilot_items=4 study_repeats=3": (
        "the study on tiny-sd (hours on a shared CPU); `infodecomp bench` runs here with small "
        "limits"
    ),
    "infodecomp bench study_models=[shapes-learned] study_items=30 study_pilot_items=8 "
    "study_repeats=4 repeats=1 estimator.n_samples=5 precision_items=2": (
        "the study on the learned model (hours on a shared CPU); `infodecomp bench` runs here "
        "with small limits"
    ),
    "infodecomp bench study_items=120 study_pilot_items=12 study_repeats=6 repeats=1 n_items=2 "
    "estimator.n_samples=5 precision_items=2 engine_dtypes=[float32]": (
        "the measured oracle study (20 minutes on a shared CPU); `infodecomp bench` runs here "
        "with small limits"
    ),
    "infodecomp bench study_models=[] repeats=3 estimator.n_samples=5": (
        "the measured timing (15 minutes on a shared CPU); `infodecomp bench` runs here with "
        "small limits"
    ),
    "infodecomp bench model=<preset> run.device=cuda": "needs a CUDA device and a real checkpoint",
    "torchrun --nproc_per_node=8 -m infodecomp.cli aro data=aro-vg-relation data.root=/data/aro": (
        "needs the ARO data set and 8 processes (sharding: tests/test_resume_shard.py)"
    ),
    "infodecomp aro -m hydra/launcher=slurm-multinode hydra.launcher.partition=gpu "
    "data=aro-vg-relation data.root=/data/aro": (
        "needs a Slurm cluster and the ARO data set (its sbatch script and the tasks as ranks: "
        "tests/test_multi_gpu.py)"
    ),
}

# command (first two words) -> overrides appended to keep it short
SMALL = {
    "infodecomp aro": ["run.limit=2"],
    "infodecomp localize": ["run.limit=2"],
    "infodecomp intervene": ["run.limit=2"],
    "infodecomp visualize": ["run.limit=2"],
    "infodecomp bench": [
        "n_items=1",
        "estimator.n_samples=4",
        "repeats=1",
        "study_items=2",
        "study_pilot_items=1",
        "study_repeats=1",
        "precision_items=2",
    ],
    "infodecomp train-shapes": [
        "train.steps=2",
        "train.batch=4",
        "train.eval_size=8",
        "train.eval_every=1",
    ],
    "infodecomp calibrate": [
        "n_items=2",
        "word_items=2",
        "estimator.n_samples=4",
        "n_sigmas=2",
        "daam_steps=2",
        "sets=[shapes-relation]",
    ],
}


def readme_commands(text: str) -> list[str]:
    """Commands in README order: code-block lines and inline spans starting with a program."""
    found: list[str] = []
    in_block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            code = line.split("  #")[0].split(" # ")[0]
            if code.lstrip().startswith("#"):  # a comment naming a command: "# or: infodecomp ..."
                m = re.search(rf"\b({'|'.join(PROGRAMS)}) ", code)
                code = code[m.start() :] if m else ""
            candidates = [code]
        else:
            candidates = re.findall(r"`([^`]+)`", line)
        for cand in candidates:
            cand = cand.strip()
            if cand.split(" ")[0] in PROGRAMS and cand not in found:
                found.append(cand)
    # a command continued on the next line (`make reproduce ... \`) is kept to its first line
    return [c.rstrip(" \\") for c in found]


def _infodecomp() -> list[str]:
    exe = os.environ.get("INFODECOMP_BIN")
    return [exe] if exe else [sys.executable, "-m", "infodecomp.cli"]


def _argv(command: str) -> list[str]:
    words = shlex.split(command)
    key = " ".join(words[:2])
    extra = [o for o in SMALL.get(key, []) if o.split("=")[0] + "=" not in command]
    return _infodecomp() + words[1:] + extra


def _fake_coco(root: Path) -> None:
    """coco/annotations/{instances,captions}_val2017.json for build-coco-manifest."""
    from test_data_coco import write_coco

    write_coco(root)


def test_readme_commands_are_all_placed() -> None:
    commands = readme_commands(README.read_text(encoding="utf-8"))
    stale = [c for c in SKIP if c not in commands]
    assert not stale, f"SKIP lists commands the README no longer has: {stale}"
    unknown = [c for c in commands if c not in SKIP and not c.startswith("infodecomp ")]
    assert not unknown, f"README commands neither run nor skipped (add to SKIP with why): {unknown}"
    for required in ("infodecomp validate", "infodecomp aro model=tiny-sd run.limit=2"):
        assert required in commands


def test_readme_commands_run(tmp_path: Path) -> None:
    commands = [c for c in readme_commands(README.read_text(encoding="utf-8")) if c not in SKIP]
    assert len(commands) >= 10, commands
    _fake_coco(tmp_path / "coco")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    failed = []
    for command in commands:
        argv = _argv(command)
        start = time.monotonic()
        res = subprocess.run(
            argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600, check=False
        )
        print(f"{time.monotonic() - start:6.1f} s  rc {res.returncode}  {shlex.join(argv[-8:])}")
        if res.returncode != 0:
            failed.append(f"$ {shlex.join(argv)}\n{res.stdout[-1500:]}\n{res.stderr[-2500:]}")
    assert not failed, "\n\n".join(failed)
    # what the README says they make
    assert (tmp_path / "tables" / "table1.md").is_file()
    assert (tmp_path / "tables" / "table3.md").is_file()
    assert (tmp_path / "COCO-IT.csv").read_text().count("\n") > 1
    sweeps = list((tmp_path / "outputs" / "aro" / "multirun").glob("*/*/meta.json"))
    assert len(sweeps) == 3

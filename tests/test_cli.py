"""The dispatcher, config composition for every command, the aro and validate commands end to end."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from infodecomp import cli
from infodecomp.experiments.commands import validate
from infodecomp.experiments.config import ValidateConfig
from infodecomp.models.oracles.exact import ShapesOracle

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HYDRA_FULL_ERROR": "1"}


def _run(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "infodecomp.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=ENV,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(autouse=True)
def _keep_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # cli.main rewrites sys.argv for Hydra


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_usage_lists_every_command(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    for name in ("aro", "localize", "intervene", "visualize", "aggregate", "validate", "bench"):
        assert f"  {name} " in out
    for name, (_, text) in cli.COMMANDS.items():
        assert name in out and text in out


def test_console_script_usage() -> None:
    exe = Path(sys.executable).with_name("infodecomp")
    if not exe.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    res = subprocess.run(
        [str(exe), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert res.returncode == 0 and "validate" in res.stdout and "aro" in res.stdout


def test_unknown_command_suggests(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["ar"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'ar'" in err and "Did you mean 'aro'" in err
    assert cli.main(["frobnicate"]) == 2
    assert "Did you mean" not in capsys.readouterr().err


def _command_module(command: str) -> str:
    module = cli.COMMANDS[command][0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"command module {module} does not exist yet")
    return module


EXPECTED_KEYS = {
    c: ("model", "data", "estimator", "run")
    for c in ("aro", "localize", "intervene", "visualize", "validate", "bench", "calibrate")
}
EXPECTED_KEYS["aggregate"] = ("runs", "out_dir")  # aggregate reads run dirs; no model or data
EXPECTED_KEYS["report"] = ("runs", "run", "title")  # so does report


@pytest.mark.parametrize("command", sorted(EXPECTED_KEYS))
def test_cfg_job_composes(command: str, capsys: pytest.CaptureFixture) -> None:
    _command_module(command)
    rc = cli.main([command, "--cfg", "job"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    top = {
        line.split(":")[0] for line in lines if line and not line[0].isspace() and line[0] != "-"
    }
    for key in EXPECTED_KEYS[command]:
        assert key in top, f"{command} --cfg job lacks top-level '{key}':\n{out}"
    if command == "bench":  # the speed bench times a diffusers UNet; tiny-sd is its offline default
        assert "  name: tiny-sd" in lines
    elif command == "calibrate":  # the learned ShapesWorld model, against the oracle
        assert "  name: shapes-learned" in lines
    elif command not in ("aggregate", "report"):
        assert "  name: shapes-oracle" in lines  # the embedded default model


def test_cfg_job_applies_overrides(capsys: pytest.CaptureFixture) -> None:
    assert (
        cli.main(
            ["aro", "--cfg", "job", "estimator.n_samples=7", "data=shapes-order", "run.seed=3"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "  n_samples: 7" in out and "  name: shapes-order" in out and "  seed: 3" in out


def test_cfg_job_shows_the_preset_options_and_each_can_be_reset(
    capsys: pytest.CaptureFixture,
) -> None:
    """`model=<preset>` carries the preset's options as values: `--cfg job` shows what the run
    uses (tiny-flux runs at 32 px with 32 T5 tokens), an override replaces one and null resets it."""
    from omegaconf import OmegaConf

    from infodecomp.experiments.config import ModelConfig
    from infodecomp.models.presets import PRESETS
    from infodecomp.models.registry import _options

    assert cli.main(["aro", "--cfg", "job", "model=tiny-flux"]) == 0
    job = OmegaConf.create(capsys.readouterr().out)
    assert job.model.image_size == 32 and job.model.text_tokens == 32
    assert cli.main(["aro", "--cfg", "job", "model=tiny-flux", "model.image_size=null"]) == 0
    job = OmegaConf.create(capsys.readouterr().out)
    assert job.model.image_size is None and job.model.text_tokens == 32
    # the run reads exactly these values: a reset option stays reset, a preset option is used
    reset = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), job.model))
    assert _options(reset, PRESETS["tiny-flux"]).image_size is None
    assert _options(ModelConfig.of("tiny-flux"), PRESETS["tiny-flux"]).image_size == 32
    for name, preset in PRESETS.items():  # every preset's options are in its config
        cfg = ModelConfig.of(name)
        assert {k: getattr(cfg, k) for k in preset.options} == preset.options, name


def test_bad_override_fails_cleanly(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["aro", "--cfg", "job", "estimator.n_sampels=7"])
    assert exc.value.code != 0
    assert "n_sampels" in capsys.readouterr().err


def _read_run(out: Path) -> tuple[pd.DataFrame, dict, dict]:
    return (
        pd.read_csv(out / "results.csv"),
        json.loads((out / "summary.json").read_text()),
        json.loads((out / "meta.json").read_text()),
    )


def test_aro_end_to_end_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "aro"
    args = (
        "aro",
        f"run.out_dir={out}",
        "data.size=8",
        "estimator.n_samples=8",
        "run.device=cpu",
        "run.progress=false",
    )
    res = _run(*args)
    assert res.returncode == 0, res.stderr[-3000:]
    results, summary, meta = _read_run(out)
    assert len(results) == 8 * 2 * 3  # items x options x estimators
    assert set(results["estimator"]) == {"io", "is", "mmse"}
    assert results["item_id"].nunique() == 8 and (results["n_samples"] == 8).all()
    for key in ("accuracy/io", "accuracy/is", "accuracy/mmse"):
        assert 0.0 <= summary[key] <= 1.0
    # exact oracle, easy items: i^s ranks the true caption first
    assert summary["accuracy/is"] == 1.0
    from infodecomp.reporting.metrics import wilson_interval

    for name in ("io", "is", "mmse"):  # 95% Wilson interval over the 8 items
        lo, hi = wilson_interval(round(8 * summary[f"accuracy/{name}"]), 8)
        assert (summary[f"accuracy_lo/{name}"], summary[f"accuracy_hi/{name}"]) == (lo, hi)
    assert summary["accuracy_lo/is"] == pytest.approx(0.6756, abs=1e-4)  # 8 of 8: not 1 ± 0
    end = [line for line in res.stdout.splitlines() if line.startswith("aro: 8 items")]
    assert len(end) == 1 and " | i^s 1.00 [0.68, 1.00] | MMSE " in end[0]
    assert "accuracy i^o " in end[0] and "(95% Wilson intervals) -> " in end[0]
    assert res.stdout.count("What ShapesWorld shows") == (summary["accuracy/io"] < 1)
    assert meta["dataset"] == {
        "name": "shapes-relation",
        "world": "shapes",
        "noise": 0.25,
    }  # generated: no files, no hub id
    assert not (out / "aro.log").exists()  # nothing was logged: no empty log file left behind
    assert (out / ".hydra" / "config.yaml").exists()
    first = (out / "results.csv").read_bytes()

    res = _run(*args)  # rerun into the same directory: nothing is redone
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "results.csv").read_bytes() == first
    again, summary2, _ = _read_run(out)
    assert not again.duplicated(["item_id", "option", "estimator"]).any()
    assert summary2["accuracy/is"] == summary["accuracy/is"]


# ----------------------------------------------------------------------------- validate


def test_validate_shows_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    for name in (
        "gaussian_checks",
        "shapes_pointwise",
        "shapes_average",
        "shapes_pointwise_paper",
        "chunk_invariance",
        "paper_word_totals",
        "_conversion_checks",
    ):
        monkeypatch.setattr(validate, name, lambda *a, **k: _fake_rows(True))
    monkeypatch.setattr(validate, "word_cases", lambda *a, **k: [])
    monkeypatch.setattr(validate, "word_map_checks", lambda *a, **k: (_fake_rows(True), []))
    monkeypatch.setattr(validate, "pixel_sum_checks", lambda *a, **k: [])
    cfg = ValidateConfig()
    cfg.run.out_dir = str(tmp_path)
    validate.run(cfg)
    err = capsys.readouterr().err
    assert "validate" in err and "7/7" in err and "chunk invariance" in err
    cfg.run.progress = False
    validate.run(cfg)
    assert "7/7" not in capsys.readouterr().err


def test_log_lines_go_around_progress_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a command, console log handlers write through tqdm (logging_redirect_tqdm)."""
    import logging

    from tqdm.contrib.logging import _TqdmLoggingHandler

    from infodecomp.experiments.common import hydra_main

    seen = []

    def fake_run(cfg) -> None:
        seen.extend(type(h) for h in logging.getLogger().handlers)

    monkeypatch.setattr(sys, "argv", ["infodecomp aro", f"run.out_dir={tmp_path}"])
    hydra_main("aro", fake_run)()
    assert _TqdmLoggingHandler in seen


@pytest.fixture(scope="module")
def validate_rows() -> pd.DataFrame:
    return pd.DataFrame(validate.oracle_checks(ValidateConfig(), ShapesOracle()))


def test_validate_oracle_checks_pass(validate_rows: pd.DataFrame) -> None:
    failed = validate_rows[~validate_rows["passed"]]
    assert failed.empty, failed.to_string()
    checks = set(validate_rows["check"])
    for prefix in ("1 ", "1p ", "2 ", "2p ", "3 ", "4 ", "5 ", "5b ", "6 ", "7 ", "8 "):
        assert any(c.startswith(prefix) for c in checks), (prefix, checks)
    assert (validate_rows["stderr"] >= 0).all()
    mi = validate_rows[validate_rows["quantity"].str.startswith("mean i^o = I(X;Y)")]
    assert len(mi) == 3 and (mi["exact"] > 0).all()
    # the default sizes make the Gaussian, wrong-caption and average rows precise enough for
    # the 3% relative criterion
    rel = validate_rows[validate_rows["criterion"].str.contains("rel < 3%")]
    for check in (
        "1 gaussian",
        "1p gaussian, paper sampler",
        "2 shapes pointwise",
        "2p shapes pointwise, paper sampler",
        "8 conversions",
    ):
        assert check in set(rel["check"]), check
    assert "3 shapes average" in set(rel["check"])
    # the paper-sampler rows compare with the exact value on [-5, 7] and report the rest
    paper = validate_rows[validate_rows["check"] == "7 word CMI, paper sampler"]
    assert len(paper) == 6 and (paper["truncation_bias"] > 0.01).all()


def _fake_rows(passed: bool) -> list[dict]:
    return [validate.row("1 gaussian", "fake", 1.0, 1.0 if passed else 5.0, 0.1)]


def test_validate_run_writes_and_fails_on_a_broken_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = ValidateConfig()
    cfg.run.out_dir = str(tmp_path / "ok")
    monkeypatch.setattr(validate, "oracle_checks", lambda c, o: _fake_rows(True))
    assert validate.run(cfg) == tmp_path / "ok"
    table = pd.read_csv(tmp_path / "ok" / "validate.csv")
    assert table["passed"].all() and len(table) == 1
    assert json.loads((tmp_path / "ok" / "summary.json").read_text())["validate/failed"] == 0

    cfg.run.out_dir = str(tmp_path / "bad")
    monkeypatch.setattr(
        validate, "oracle_checks", lambda c, o: _fake_rows(True) + _fake_rows(False)
    )
    with pytest.raises(SystemExit) as exc:
        validate.run(cfg)
    assert exc.value.code == 1
    assert (~pd.read_csv(tmp_path / "bad" / "validate.csv")["passed"]).sum() == 1


def test_run_dir_after_an_in_process_hydra_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """run(cfg) after `infodecomp ... --cfg job` in the same process must honour run.out_dir."""
    assert cli.main(["validate", "--cfg", "job"]) == 0
    capsys.readouterr()
    cfg = ValidateConfig()
    cfg.run.out_dir = str(tmp_path / "later")
    monkeypatch.setattr(validate, "oracle_checks", lambda c, o: _fake_rows(True))
    assert validate.run(cfg) == tmp_path / "later"


@pytest.mark.slow
def test_validate_cli(tmp_path: Path) -> None:
    res = _run("validate", f"run.out_dir={tmp_path}", timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    table = pd.read_csv(tmp_path / "validate.csv")
    assert table["passed"].all() and len(table) >= 10
    assert "checks passed" in res.stdout


# ----------------------------------------------------------------------------- console


@pytest.fixture
def no_full_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)


@pytest.mark.usefixtures("no_full_error")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["data=shapes-relaton"], ["data=shapes-relaton is not one of:", "Did you mean 'shapes-relation'?"]),
        (["estimator.n_sampels=7"], ["unknown setting estimator.n_sampels. Did you mean 'estimator.n_samples'?"]),
        (["run.limit=abc"], ["run.limit=abc", "could not be converted to Integer"]),
        (["run.limit=[1"], ["cannot parse the overrides"]),
        (["data=aro-vg-relation", "data.root={tmp}/nowhere"], ["{tmp}/nowhere", "data.root"]),
        (["model.name=tiny_sd"], ["model=tiny_sd is not a known model", "Did you mean 'tiny-sd'?"]),
        (["estimators=[io,iss]"], ["estimators=['iss'] unknown"]),
        (["data.crop=trim"], ["data.crop=trim is not one of pad, clamp"]),
        (["model=tiny-sd3", "model.time_rule=continuous"], ["model.time_rule=continuous does not apply to SD3Denoiser"]),
        (["model=tiny-flux", "model.attn_processor=eager"], ["model.attn_processor=eager does not apply to FluxDenoiser"]),
    ],
)  # fmt: skip
def test_user_errors_are_one_line(
    args: list[str], expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exc:
        cli.main(["aro", *args, f"run.out_dir={tmp_path / 'run'}", "run.progress=false"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 2, err
    assert lines[0].startswith("infodecomp aro: ") and "--verbose" in lines[1]
    for text in expected:
        assert text.format(tmp=tmp_path) in lines[0]


@pytest.mark.usefixtures("no_full_error")
def test_verbose_and_hydra_full_error_show_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    missing = ["aro", "data=aro-vg-relation", f"data.root={tmp_path}/nowhere"]
    missing += [f"run.out_dir={tmp_path / 'run'}"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main([*missing, "--verbose"])
    with pytest.raises(Exception, match="data/shapes-relaton"):
        cli.main(["--verbose", "aro", "data=shapes-relaton"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main(missing)
    assert os.environ["HYDRA_FULL_ERROR"] == "1"  # the user's setting is left as it was


@pytest.mark.usefixtures("no_full_error")
def test_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from infodecomp.experiments import runner

    def broken(*args, **kwargs):
        raise KeyError("a bug, not a user error")

    monkeypatch.setattr(runner, "load_dataset", broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["aro", f"run.out_dir={tmp_path}"])
    assert "HYDRA_FULL_ERROR" not in os.environ


# ----------------------------------------------------------------------------- --help


def test_every_config_field_has_a_description() -> None:
    from infodecomp.experiments.config import SCHEMAS
    from infodecomp.experiments.help import NO_DESCRIPTION, options

    for command, schema in SCHEMAS.items():
        missing = [key for key, text in options(schema) if text == NO_DESCRIPTION]
        assert not missing, f"{command}: add a comment beside {missing} in experiments/config.py"


@dataclasses.dataclass
class _Documented:
    """A schema described in its docstring.

    Args:
        first: what the first field sets. A second sentence that --help leaves out.
        second: a description that runs on
            over two lines.
    """

    first: int = 1
    second: str = "x"
    third: bool = False  # a comment wins over the docstring


def test_help_reads_comments_else_the_docstring() -> None:
    from infodecomp.data.spec import DataSpec
    from infodecomp.experiments.help import field_docs

    assert field_docs(_Documented) == {
        "first": "what the first field sets",
        "second": "a description that runs on over two lines",
        "third": "a comment wins over the docstring",
    }
    # the data loaders' own settings dataclass is documented for --help as well
    assert set(field_docs(DataSpec)) >= {f.name for f in dataclasses.fields(DataSpec)}


@pytest.mark.parametrize("command", ["aro", "localize", "intervene", "visualize", "validate",
                                     "aggregate", "bench"])  # fmt: skip
def test_help_lists_every_option_with_its_description(
    command: str, capsys: pytest.CaptureFixture
) -> None:
    from infodecomp.experiments.config import SCHEMAS
    from infodecomp.experiments.help import options

    with pytest.raises(SystemExit) as exc:  # Hydra exits after printing the help
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"infodecomp {command}: {cli.COMMANDS[command][1]}"
    for key, text in options(SCHEMAS[command]):
        row = next((line for line in lines if line.strip().startswith(f"{key}=")), None)
        assert row is not None, f"{key} missing from `infodecomp {command} --help`"
        assert text in row or text in lines[lines.index(row) + 1], (key, text)
    if command != "aggregate":
        assert "  data=" in out and "shapes-relation" in out and "tiny-sd" in out


def test_help_shows_current_values(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["aro", "data=shapes-order", "estimator.n_samples=7", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "  data=shapes-order " in out and "  data.name=shapes-order " in out
    assert "  estimator.n_samples=7 " in out and "logsnr samples per item" in out


def test_build_manifest_help_describes_every_option() -> None:
    from infodecomp.data.manifest import main_build  # argparse, no Hydra

    with pytest.raises(SystemExit) as exc, contextlib.redirect_stdout(io.StringIO()) as buf:
        main_build(["--help"])
    assert exc.value.code == 0
    text = " ".join(buf.getvalue().split())  # argparse wraps long help lines
    for flag in ("--instances", "--captions", "--out", "--kind", "--fix-artifacts", "--limit"):
        assert flag in text
    assert "coco-wl: other word types" in text

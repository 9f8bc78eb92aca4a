"""`infodecomp report`: the HTML report of real run directories, its links, and how it looks in
headless Chromium (skipped where no Chromium is installed; .ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from infodecomp.data.spec import DataSpec
from infodecomp.experiments.commands import aro, intervene, localize, visualize
from infodecomp.experiments.config import (
    AroConfig,
    EstimatorConfig,
    InterveneConfig,
    LocalizeConfig,
    RunConfig,
    VisualizeConfig,
)
from infodecomp.reporting.html import accuracy_curve_data, write_report

ENV = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on PATH: install it (Debian: apt-get install chromium; .ci/run does) "
    "to render the report in a real browser",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real runs on the ShapesWorld oracle: an aro sweep, localize, intervene, visualize."""
    base = tmp_path_factory.mktemp("runs")

    def run(name: str, **kw) -> RunConfig:
        return RunConfig(device="cpu", progress=False, out_dir=str(base / name), **kw)

    for n in (4, 8):
        aro.run(
            AroConfig(
                data=DataSpec(name="shapes-relation", size=4),
                estimator=EstimatorConfig(n_samples=n),
                run=run(f"sweep/n{n}"),
            )
        )
    localize.run(
        LocalizeConfig(data=DataSpec(name="shapes-localize", size=2), steps=[4], run=run("loc"))
    )
    intervene.run(
        InterveneConfig(
            data=DataSpec(name="shapes-intervene", size=2), n_sigmas=4, n_boot=50, run=run("int")
        )
    )
    visualize.run(
        VisualizeConfig(
            data=DataSpec(name="shapes-localize", size=2),
            estimator=EstimatorConfig(n_samples=8),
            n_curve_samples=16,
            run=run("vis", limit=2),
        )
    )
    return {"sweep": base / "sweep", "loc": base / "loc", "int": base / "int", "vis": base / "vis"}


@pytest.fixture(scope="module")
def report(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`infodecomp report` on every run; returns the path it prints last."""
    out = tmp_path_factory.mktemp("report") / "site"
    listed = ",".join(str(p) for p in runs.values())
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "infodecomp.cli",
            "report",
            f"runs=[{listed}]",
            f"run.out_dir={out}",
        ],
        capture_output=True,
        text=True,
        cwd=out.parent,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path == (out / "index.html").resolve() and path.is_file()
    return path


class _Page(HTMLParser):
    """Links, images, ids, tables and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.tables = 0
        self.text: list[str] = []
        self.body: dict[str, str | None] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "img":
            self.images.append(str(a.get("src")))
        if tag == "table":
            self.tables += 1
        if tag == "body":
            self.body = a

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def _unresolved(page: _Page, root: Path) -> list[str]:
    """Links and image sources that do not resolve inside the report folder."""
    bad = []
    for ref in page.links + page.images:
        if ref.startswith("#"):
            if ref[1:] not in page.ids:
                bad.append(ref)
            continue
        target = (root / ref).resolve()
        if re.match(r"^[a-z]+:", ref) or not target.is_file() or root not in target.parents:
            bad.append(ref)
    return bad


def test_report_is_a_self_contained_folder(report: Path, runs: dict[str, Path]) -> None:
    root = report.parent
    page = _parse(report.read_text(encoding="utf-8"))
    assert _unresolved(page, root) == []
    text = " ".join(page.text)
    for title in (
        "Table 1",
        "Table 2",
        "Table 3",
        "Table 4",
        "vs logsnr samples per image",
        "Runs",
    ):
        assert title in text, title
    # every table of the page, also as CSV / LaTeX / Markdown beside it
    names = ("table1", "accuracy_vs_samples", "table2", "table3", "table4", "runs")
    for name in names:
        for ext in ("csv", "tex", "md"):
            assert f"tables/{name}.{ext}" in page.links
    assert page.tables == len(names) + 1  # + the run metadata table
    assert "\\begin{tabular}" in (root / "tables" / "table1.tex").read_text()
    # the sweep's curve, and the visualize run's items with captions, scores and figures
    assert "figures/accuracy_vs_samples.png" in page.images
    vis = pd.read_csv(runs["vis"] / "results.csv")
    for row in vis.itertuples():
        assert f"“{row.caption}”" in text and row.item_id in text
        assert f"CMI = {row.cmi_total:.3g} ± {row.cmi_se:.2g} nats" in text
        for col in ("panel", "curves"):
            src = f"assets/vis/{Path(getattr(row, col)).name}"
            assert src in page.images
            assert (root / src).read_bytes() == (runs["vis"] / getattr(row, col)).read_bytes()
    # run metadata: model, dtype, seed, sample counts, versions
    assert "shapes-oracle" in text and "float32" in text and "torch" in text
    assert len(page.images) == 1 + 2 * len(vis)


def test_accuracy_curves_from_a_sweep(report: Path) -> None:
    table1 = pd.read_csv(report.parent / "tables" / "table1.csv")
    data = accuracy_curve_data(table1)
    assert list(data) == ["shapes-relation"]
    assert set(data["shapes-relation"]) == {"Info. i^o", "Info. i^s", "Denoising loss"}
    xs, ys = data["shapes-relation"]["Info. i^s"]
    assert xs == [4.0, 8.0] and len(ys) == 2
    single = table1[table1["n_samples"] == 4]
    assert accuracy_curve_data(single) == {}  # one sample count: no curve
    with Image.open(report.parent / "figures" / "accuracy_vs_samples.png") as im:
        assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 10


def test_report_without_sweep_or_visualize(runs: dict[str, Path], tmp_path: Path) -> None:
    path = write_report([runs["loc"]], tmp_path / "r", n_boot=20)
    page = _parse(path.read_text(encoding="utf-8"))
    text = " ".join(page.text)
    assert "No sweep among these runs" in text
    assert "No  visualize  run among these runs" in text  # (visualize is a <code> element)
    assert page.images == [] and _unresolved(page, path.parent) == []
    # a rerun into the same folder keeps no figures of runs it no longer shows
    write_report([runs["vis"]], tmp_path / "r", n_boot=20)
    assert (tmp_path / "r" / "assets" / "vis").is_dir()
    write_report([runs["loc"]], tmp_path / "r", n_boot=20)
    assert not (tmp_path / "r" / "assets").exists()


def _chromium(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args, url],
        capture_output=True, text=True, cwd=cwd, timeout=120, check=False,
    )  # fmt: skip


def _console(stderr: str, url: str) -> list[str]:
    """Console messages of the page (console.log / errors / uncaught exceptions)."""
    return [
        ln for ln in stderr.splitlines() if ":CONSOLE" in ln or ("Uncaught" in ln and url in ln)
    ]


def _loaded(dom: str) -> tuple[int, int]:
    body = _parse(dom).body
    return int(body.get("data-images-loaded") or -1), int(body.get("data-images-total") or -1)


@needs_chromium
def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    url = report.as_uri()
    res = _chromium("--dump-dom", url=url, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console(res.stderr, url) == []
    page = _parse(res.stdout)
    assert page.tables == 7 and _unresolved(page, report.parent) == []
    loaded, total = _loaded(res.stdout)
    assert total == len(page.images) > 0 and loaded == total

    shot = tmp_path / "report.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1400,4200", url=url, cwd=tmp_path)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    keep = os.environ.get("INFODECOMP_REPORT_SCREENSHOT")  # to look at it
    if keep:
        shutil.copyfile(shot, keep)
    with Image.open(shot) as im:
        assert im.size == (1400, 4200)
        grey = np.asarray(im.convert("L"), dtype=np.float64)
    assert grey.std() > 20  # text, tables and figures, not a blank page
    assert (grey < 128).mean() > 0.01


@needs_chromium
def test_the_browser_checks_catch_a_broken_report(report: Path, tmp_path: Path) -> None:
    """Control: the same report without its assets/ folder, plus a script error."""
    broken = tmp_path / "broken"
    shutil.copytree(report.parent, broken, ignore=shutil.ignore_patterns("assets"))
    index = broken / "index.html"
    index.write_text(
        index.read_text().replace("</body>", "<script>noSuchFunction();</script></body>")
    )
    url = index.as_uri()
    res = _chromium("--dump-dom", url=url, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    loaded, total = _loaded(res.stdout)
    assert total > 0 and loaded == 1  # only the accuracy curve is still there
    assert "images did not load" in res.stdout
    assert any("noSuchFunction" in line for line in _console(res.stderr, url))

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


# `infodecomp <command>` in a fresh interpreter where `import torch` fails.
WITHOUT_TORCH = [
    sys.executable,
    "-c",
    "import sys; sys.modules['torch'] = None; from infodecomp.cli import main; "
    "sys.exit(main(sys.argv[1:]))",
]


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
            *WITHOUT_TORCH,  # reporting loads no model: it must not need torch (issue 27)
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
    # the localize run's gallery: the maps it saved of its first items (issue 27)
    loc = sorted((runs["loc"] / "figures").glob("*-maps.png"))
    assert len(loc) == 2  # shapes-localize of 2 items, gallery=4
    for src in loc:
        assert f"assets/loc/{src.name}" in page.images
        assert (root / "assets" / "loc" / src.name).read_bytes() == src.read_bytes()
    # run metadata: model, dtype, seed, sample counts, versions
    assert "shapes-oracle" in text and "float32" in text and "torch" in text
    assert len(page.images) == 1 + 2 * len(vis) + len(loc)


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
    assert "No  visualize  or  localize  run" not in text  # the localize run's maps are shown
    assert len(page.images) == 2 and _unresolved(page, path.parent) == []
    # a rerun into the same folder keeps no figures of runs it no longer shows
    write_report([runs["vis"]], tmp_path / "r", n_boot=20)
    assert (tmp_path / "r" / "assets" / "vis").is_dir()
    write_report([runs["loc"]], tmp_path / "r", n_boot=20)
    assert sorted(p.name for p in (tmp_path / "r" / "assets").iterdir()) == ["loc"]


def test_localize_saves_the_maps_of_its_first_items_only(runs: dict[str, Path], tmp_path: Path):
    """gallery=N: figures/<item>-maps.png for the first N items of the data set, whatever the
    batching; gallery=0 saves none and the report says so."""
    out = localize.run(
        LocalizeConfig(
            data=DataSpec(name="shapes-localize", size=3),
            steps=[4],
            gallery=2,
            run=RunConfig(
                device="cpu", progress=False, out_dir=str(tmp_path / "a"), items_per_step=1
            ),
        )
    )
    first = pd.read_csv(out / "results.csv")["item_id"].drop_duplicates().tolist()[:2]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(
        f"{i}-maps.png" for i in first
    )
    with Image.open(out / "figures" / f"{first[0]}-maps.png") as im:
        assert np.asarray(im.convert("L")).std() > 10  # a drawn panel, not a blank image
    none = localize.run(
        LocalizeConfig(
            data=DataSpec(name="shapes-localize", size=2),
            steps=[4],
            gallery=0,
            run=RunConfig(device="cpu", progress=False, out_dir=str(tmp_path / "b")),
        )
    )
    assert not (none / "figures").exists()
    page = write_report([none], tmp_path / "r", n_boot=20).read_text(encoding="utf-8")
    assert "This run saved no maps" in page


def test_reporting_needs_no_torch(runs: dict[str, Path], tmp_path: Path) -> None:
    """`aggregate` (and `report`, in the fixture above) run where torch cannot be imported;
    control: the same interpreter fails on a module that does import torch."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*WITHOUT_TORCH, *args], capture_output=True, text=True, cwd=tmp_path, env=ENV,
            timeout=300, check=False,
        )  # fmt: skip

    res = run("aggregate", f"runs=[{runs['sweep']},{runs['loc']}]", f"run.out_dir={tmp_path / 't'}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "t" / "table1.csv").is_file() and (tmp_path / "t" / "table3.csv").is_file()
    control = subprocess.run(
        [WITHOUT_TORCH[0], "-c", WITHOUT_TORCH[2].split("; from")[0] + "; import infodecomp.experiments.common"],
        capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=120, check=False,
    )  # fmt: skip
    assert control.returncode != 0 and "torch" in control.stderr


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


# Measures, after load, how far each table's box reaches past its scroll container, and which
# numbers lie outside what the window shows (written on <body> for --dump-dom to read).
_MEASURE = """<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("div.scroll").forEach(function (box, i) {
    var view = box.getBoundingClientRect();
    var hidden = 0;
    box.querySelectorAll("td.num").forEach(function (td) {
      var r = td.getBoundingClientRect();
      if (r.right > Math.min(view.right, window.innerWidth) + 1) { hidden += 1; }
    });
    var h = box.previousElementSibling && box.previousElementSibling.previousElementSibling;
    out.push({table: h && h.id ? h.id : "table-" + i, over: box.scrollWidth - box.clientWidth,
              hidden: hidden, cells: box.querySelectorAll("td.num").length});
  });
  document.body.setAttribute("data-layout", JSON.stringify(out));
});
</script></body>"""


def _layout(report_dir: Path, tmp_path: Path, width: int, extra: str = "") -> list[dict]:
    import json

    copy = tmp_path / f"w{width}-{len(extra)}"
    shutil.copytree(report_dir, copy)
    index = copy / "index.html"
    index.write_text(index.read_text().replace("</body>", extra + _MEASURE))
    url = index.as_uri()
    res = _chromium("--dump-dom", f"--window-size={width},2000", url=url, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    body = _parse(res.stdout).body
    return json.loads(str(body.get("data-layout")))


@needs_chromium
def test_tables_are_readable_at_1280_px(report: Path, tmp_path: Path) -> None:
    """Issue 27: at 1280 px every table of the report (Table 1 with its intervals, Tables 3 and
    4, the runs) fits its box, so no number is cut off on the right; control: the same page with
    the old layout (no wrapping, intervals on the number's line, a narrow window) does not."""
    layout = _layout(report.parent, tmp_path, 1280)
    assert {t["table"] for t in layout} >= {"table1", "table3", "table4"}
    for t in layout:
        assert t["over"] <= 0 and t["hidden"] == 0, t
    old = "<style>th, td { white-space: nowrap !important; } td .sub { display: inline !important; }</style>"
    before = _layout(report.parent, tmp_path, 1280, extra=old)
    assert any(t["over"] > 0 for t in before), before  # the old layout ran past its box here
    cramped = _layout(report.parent, tmp_path, 700, extra=old)
    assert any(t["hidden"] > 0 for t in cramped), cramped  # the measurement sees a cut-off table
    shot = tmp_path / "report-1280.png"
    res = _chromium(
        f"--screenshot={shot}", "--window-size=1280,2400", url=report.as_uri(), cwd=tmp_path
    )
    assert res.returncode == 0 and shot.is_file()
    keep = os.environ.get("INFODECOMP_REPORT_SCREENSHOT_1280")  # to look at it
    if keep:
        shutil.copyfile(shot, keep)


@needs_chromium
def test_a_calibration_table_and_a_full_table1_stay_readable_at_1280_px(tmp_path: Path) -> None:
    """The widest tables a report holds, rendered by the report's own template: a calibration
    table (long quantities and notes) fits at 1280 px; Table 1 over every benchmark column
    (17 accuracies with intervals) does not fit, so it scrolls inside its box while the page
    itself keeps its width (nothing is cut off, every number is reached by scrolling)."""
    from infodecomp.reporting.calibration import CALIBRATION_COLUMNS
    from infodecomp.reporting.html import TEMPLATE, _environment, _table

    quantities = ["accuracy, Info. i^o", "pointwise i^s per item", "mIoU vs exact map, CMI"]
    calib = pd.DataFrame(
        [
            {"setting": "shapes-learned, 100 logsnr samples", "section": "ranking",
             "quantity": q, "group": "shapes-relation (shuffled images)",
             "reference": "exact oracle at the same draws", "learned": "0.917", "exact": "1.000",
             "bias": "-0.083", "slope": "0.912", "corr": "0.954", "n": "60",
             "note": "slope, corr: per-item margins (true option minus the best other)"}
            for q in quantities
        ],
        columns=["setting", *CALIBRATION_COLUMNS],
    )  # fmt: skip
    keys = {"model": "sd-2.1-base", "method": "Info. i^o (adaptive)", "n_samples": "100",
            "samples/item": "57.3", "source": "measured"}  # fmt: skip
    wide = pd.DataFrame([{**keys, **{f"bench {k}": "75.0 [45.2, 100.0]" for k in range(17)}}] * 3)
    files = {"csv": "tables/x.csv"}
    tables = [_table("calibration", calib, files), _table("table1", wide, files)]
    html = _environment().get_template(TEMPLATE).render(
        title="t", tables=tables, curves=[], galleries=[], calibrations=[], runs=[], n_runs=0,
        version="test",
    )  # fmt: skip
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(html, encoding="utf-8")
    page_width = """<script>window.addEventListener("load", function () {
      document.body.setAttribute("data-page-over",
        String(document.scrollingElement.scrollWidth - window.innerWidth));
      var box = document.querySelectorAll("div.scroll")[1];
      document.body.setAttribute("data-scrolls", getComputedStyle(box).overflowX);
    });</script>"""
    layout = _layout(tmp_path / "site", tmp_path, 1280, extra=page_width)
    by_id = {t["table"]: t for t in layout}
    assert by_id["calibration"]["over"] <= 0 and by_id["calibration"]["hidden"] == 0
    assert by_id["table1"]["over"] > 0  # too wide for any layout: it scrolls in its box
    index = tmp_path / f"w1280-{len(page_width)}" / "index.html"
    res = _chromium("--dump-dom", "--window-size=1280,2000", url=index.as_uri(), cwd=tmp_path)
    body = _parse(res.stdout).body
    assert body.get("data-scrolls") == "auto" and int(str(body.get("data-page-over"))) <= 0

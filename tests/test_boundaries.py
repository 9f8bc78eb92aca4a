"""Module boundaries (what each layer may import) and packaging (configs inside the wheel)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from infodecomp.paths import config_dir

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("diffusers", "transformers", "hydra", "omegaconf")


def _heavy_after_each(groups: list[list[str]], heavy: tuple[str, ...] = HEAVY) -> list[set[str]]:
    """In one fresh interpreter: the heavy top-level packages loaded after each import group."""
    code = (
        "import importlib, json, sys\n"
        f"for group in {groups!r}:\n"
        "    for m in group: importlib.import_module(m)\n"
        f"    print(json.dumps(sorted({{n.split('.')[0] for n in sys.modules}} & set({list(heavy)!r}))))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return [set(json.loads(line)) for line in res.stdout.strip().splitlines()[-len(groups) :]]


ESTIMATORS = [
    "infodecomp.estimators",
    "infodecomp.estimators.adaptive",
    "infodecomp.estimators.engine",
    "infodecomp.estimators.samplers",
    "infodecomp.estimators.channel",
    "infodecomp.estimators.protocol",
]
ORACLES = ["infodecomp.models.oracles.exact", "infodecomp.worlds.shapes"]
DATA = [
    "infodecomp.data",
    "infodecomp.data.records",
    "infodecomp.data.spec",
    "infodecomp.data.shapes",
    "infodecomp.data.registry",
]


LEAVES = [
    "infodecomp.scores",
    "infodecomp.tasks",
    "infodecomp.reporting",
    "infodecomp.reporting.html",
]


@pytest.fixture(scope="module")
def loaded() -> list[set[str]]:
    """Cumulative: estimators, then + oracles, then + data, then + omegaconf (the probe's control)."""
    return _heavy_after_each([ESTIMATORS, ORACLES, DATA, ["omegaconf"]])


def test_reporting_tasks_and_scores_import_no_torch() -> None:
    # the second group is the probe's control: it must see torch once torch is imported
    assert _heavy_after_each([LEAVES, ["torch"]], heavy=("torch",)) == [set(), {"torch"}]


# Which infodecomp packages each package may import (its own modules always). Nothing imports
# upward: experiments sit on top, cli only dispatches to them by name.
ALLOWED = {
    "scores": set(),
    "paths": set(),
    "console": set(),
    "commands": set(),
    "tasks": {"scores"},
    "worlds": set(),
    "estimators": {"scores"},
    "models": {"estimators", "worlds", "scores"},
    "data": {"worlds", "tasks"},
    "reporting": {"tasks", "scores", "console"},  # console: a leaf (the one-line messages)
    "experiments": {
        "estimators",
        "models",
        "data",
        "reporting",
        "tasks",
        "scores",
        "worlds",
        "paths",
        "console",
        "commands",
    },
    # the Python API: a facade over the commands' helpers, beside experiments (which never
    # imports it)
    "api": {"experiments", "estimators", "models", "data", "reporting", "scores"},
    "cli": {"console", "commands"},
}


def _infodecomp_imports(path: Path) -> set[str]:
    """Top-level infodecomp packages a module imports, anywhere in it (also inside functions)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "infodecomp" and len(parts) > 1:
                found.add(parts[1])
    return found


def layer_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "infodecomp").rglob("*.py")):
        rel = path.relative_to(root / "infodecomp")
        layer = rel.parts[0].removesuffix(".py")
        if layer == "__init__":
            continue
        for target in _infodecomp_imports(path) - ALLOWED[layer] - {layer}:
            # `from infodecomp.models import shapes_world` style names a module, not a layer
            if target in ALLOWED:
                bad.append(f"{rel}: {layer} imports {target}")
    return bad


def _copy_with(tmp_path: Path, additions: dict[str, str]) -> Path:
    """A copy of the package under tmp_path with `additions` (path in the package -> text)
    appended to its modules."""
    shutil.copytree(
        REPO / "infodecomp", tmp_path / "infodecomp", ignore=shutil.ignore_patterns("__pycache__")
    )
    for rel, text in additions.items():
        path = tmp_path / "infodecomp" / rel
        path.write_text(path.read_text() + text)
    return tmp_path


def test_layers_import_only_downward() -> None:
    assert layer_violations(REPO) == []


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    lazy = "\n\ndef _x():\n    from infodecomp.models.registry import load_model\n"
    _copy_with(
        tmp_path,
        {
            "estimators/engine.py": lazy,
            "reporting/tables.py": "\nimport infodecomp.experiments.runner\n",
        },
    )
    assert layer_violations(tmp_path) == [
        "estimators/engine.py: estimators imports models",
        "reporting/tables.py: reporting imports experiments",
    ]


def _module_graph(root: Path) -> dict[str, set[str]]:
    """infodecomp module -> the infodecomp modules it imports, anywhere in it (also inside
    functions). `from a.b import c` names module a.b.c where that is a module, else a.b; an
    import names the module itself, not the packages above it."""
    import ast

    files = {}
    for path in (root / "infodecomp").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def module(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in files.items():
        deps: set[str | None] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps |= {module(a.name) for a in node.names if a.name.startswith("infodecomp.")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                if base.startswith("infodecomp"):
                    for a in node.names:
                        deps.add(
                            f"{base}.{a.name}" if f"{base}.{a.name}" in files else module(base)
                        )
        graph[name] = {d for d in deps if d and d != name}
    return graph


def import_cycles(root: Path) -> list[list[str]]:
    """The module-level import cycles (strongly connected groups of modules), each sorted."""
    graph = _module_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def command_imports(root: Path) -> list[str]:
    """Commands that import another command (a helper two commands share belongs beside them)."""
    prefix = "infodecomp.experiments.commands."

    def command(module: str) -> str:  # a command is a module or a package of modules
        return module[len(prefix) :].split(".")[0]

    return [
        f"{name} imports {dep}"
        for name, deps in sorted(_module_graph(root).items())
        if name.startswith(prefix)
        for dep in sorted(deps)
        if dep.startswith(prefix) and command(dep) != command(name)
    ]


def test_no_import_cycles_and_no_command_imports_another() -> None:
    assert import_cycles(REPO) == []
    assert command_imports(REPO) == []


def test_the_cycle_check_catches_an_injected_cycle(tmp_path: Path) -> None:
    # a lazy import inside a function closes common -> runner -> common (the cycle that was)
    lazy = "\n\ndef _x():\n    from infodecomp.experiments.runner import execute\n"
    _copy_with(
        tmp_path,
        {
            "experiments/common.py": lazy,
            "experiments/commands/calibrate/__init__.py": (
                "\nfrom infodecomp.experiments.commands.aro import run\n"
            ),
        },
    )
    assert import_cycles(tmp_path) == [
        ["infodecomp.experiments.common", "infodecomp.experiments.runner"]
    ]
    assert command_imports(tmp_path) == [
        "infodecomp.experiments.commands.calibrate imports infodecomp.experiments.commands.aro"
    ]
    # relative imports count too
    (tmp_path / "infodecomp" / "experiments" / "commands" / "aro.py").write_text(
        "from ..commands import calibrate\n"
    )
    assert "infodecomp.experiments.commands.aro imports " in " ".join(command_imports(tmp_path))


MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 80


def size_violations(root: Path) -> dict[str, int]:
    """Package files over MAX_FILE_LINES lines and functions over MAX_FUNCTION_LINES lines
    ("<file>" or "<file>:<function>" -> lines)."""
    import ast

    out = {}
    for path in sorted((root / "infodecomp").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(root).as_posix()
        if len(text.splitlines()) > MAX_FILE_LINES:
            out[rel] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    out[f"{rel}:{node.name}"] = lines
    return out


def test_no_package_file_over_500_lines_and_no_function_over_80() -> None:
    assert size_violations(REPO) == {}


def test_the_size_check_catches_a_long_file(tmp_path: Path) -> None:
    lines = len((REPO / "infodecomp" / "scores.py").read_text().splitlines())
    body = "".join(f"x{i} = {i}\n" for i in range(MAX_FILE_LINES + 1 - lines))
    _copy_with(tmp_path, {"scores.py": body})
    assert size_violations(tmp_path) == {"infodecomp/scores.py": MAX_FILE_LINES + 1}


def test_the_size_check_catches_a_long_function(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    _copy_with(tmp_path, {"scores.py": f"\n\ndef _long():\n{body}"})
    assert size_violations(tmp_path).get("infodecomp/scores.py:_long") == MAX_FUNCTION_LINES + 1


def test_estimators_import_no_heavy_libraries(loaded: list[set[str]]) -> None:
    assert loaded[0] == set()


def test_oracles_import_no_heavy_libraries(loaded: list[set[str]]) -> None:
    assert loaded[1] == set()


def test_data_imports_neither_diffusers_nor_hydra(loaded: list[set[str]]) -> None:
    assert loaded[2] & {"diffusers", "hydra"} == set()


def test_the_probe_detects_a_heavy_import(loaded: list[set[str]]) -> None:
    assert "omegaconf" in loaded[3]  # so the checks above can fail


def test_config_dir_finds_the_presets() -> None:
    d = config_dir()
    assert (d / "aro.yaml").is_file()
    for name in ("validate", "localize", "intervene", "visualize", "aggregate"):
        assert (d / f"{name}.yaml").is_file(), name
    assert (d / "data" / "shapes-relation.yaml").is_file()


def test_wheel_ships_the_configs(tmp_path: Path) -> None:
    src = tmp_path / "src"  # build from a copy so the shared checkout gets no build/ folder
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "setup.py", "README.md", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    for name in ("infodecomp", "configs"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = wheels.glob("infodecomp-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "infodecomp/configs/aro.yaml" in names
    for yaml in (REPO / "configs").rglob("*.yaml"):
        assert f"infodecomp/configs/{yaml.relative_to(REPO / 'configs').as_posix()}" in names
    assert "infodecomp/estimators/engine.py" in names and "infodecomp/reporting/writer.py" in names
    assert "infodecomp/reporting/templates/report.html.j2" in names  # the HTML report's template
    # the unpacked wheel, not the checkout, resolves its own configs
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import infodecomp.paths as p; print(p.__file__); print(p.config_dir())"
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    module_file, cfg = res.stdout.split()
    if not module_file.startswith(str(site)):
        pytest.skip(f"the editable install shadows the unpacked wheel ({module_file})")
    assert Path(cfg) == site / "infodecomp" / "configs"

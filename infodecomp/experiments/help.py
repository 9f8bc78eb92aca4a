"""`infodecomp <command> --help`: every option with its current value and a one-line description.

The descriptions are the comments beside the fields of the config dataclasses
(infodecomp/experiments/config.py), or a dataclass's docstring "Args:" entries, read from the
source, so the help cannot drift from the schema. configs/common.yaml sets Hydra's help template to the resolver registered here.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import io
import re
import textwrap
import tokenize
from functools import cache
from typing import Any

from infodecomp import console
from infodecomp.paths import config_dir

NO_DESCRIPTION = "(no description)"
WIDTH = 30  # of the key=value column
# Config groups picked by name, and what picking one means.
GROUPS = {
    "model": "the denoiser",
    "data": "the data set",
}


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> description: the comment beside the field in the class's source (or the
    comment lines right above it), else the field's entry under "Args:" in the class docstring."""
    lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    rows = source.splitlines()
    comments: dict[int, str] = {}
    full_line: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            comments[row] = tok.string.lstrip("#").strip()
            if not rows[row - 1][: tok.start[1]].strip():
                full_line.add(row)
    # a docstring entry can run to several sentences: its first one is the one-line description
    out = {
        k: v.split(". ")[0].rstrip(".")
        for k, v in _docstring_args(inspect.getdoc(cls) or "").items()
    }
    (node,) = ast.parse(source).body
    for stmt in node.body:  # type: ignore[attr-defined]
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        inline = [
            comments[r]
            for r in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            if r in comments and r not in full_line
        ]
        above, row = [], stmt.lineno - 1
        while row in full_line:
            above.insert(0, comments[row])
            row -= 1
        text = " ".join(inline) or " ".join(above)
        if text:
            out[stmt.target.id] = text
    return out


def _docstring_args(doc: str) -> dict[str, str]:
    """`name: text` entries (with their continuation lines) of a Google-style "Args:" section."""
    out: dict[str, str] = {}
    in_args, current = False, None
    for line in doc.splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):  # the next section
            break
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            current = entry[1]
            out[current] = entry[2].strip()
        elif current and line.startswith("        "):
            out[current] += " " + line.strip()
    return out


def options(schema: type) -> list[tuple[str, str]]:
    """(dotted key, description) for every leaf field of a command's config dataclass."""
    rows: list[tuple[str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            kind = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
            if dataclasses.is_dataclass(kind):
                walk(type(kind), f"{key}.")
            else:
                rows.append((key, _describe(cls, f.name)))

    walk(schema, "")
    return rows


def _describe(cls: type, name: str) -> str:
    """The description of a field, from the class in the MRO that documents it (a field can be
    inherited, e.g. the model config's adapter options from models.presets.AdapterOptions)."""
    for c in cls.__mro__:
        if dataclasses.is_dataclass(c) and name in field_docs(c):
            return field_docs(c)[name]
    return NO_DESCRIPTION


def group_choices(group: str) -> list[str]:
    """The options of a config group: YAML files in configs/<group>/ and entries registered with
    Hydra's ConfigStore (the model presets)."""
    from hydra.core.config_store import ConfigStore

    folder = config_dir() / group
    names = {p.stem for p in folder.glob("*.yaml")} if folder.is_dir() else set()
    try:
        names |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
    except OSError:  # no such group in the store
        pass
    return sorted(names)


def _value(root: Any, key: str) -> str:
    from omegaconf import OmegaConf

    try:
        node = OmegaConf.select(root, key, throw_on_missing=False)
    except Exception:  # an interpolation that cannot be resolved here (e.g. a missing env var)
        return "?"
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if node is None:
        return "null"
    if isinstance(node, list):
        return "[" + ",".join(str(v) for v in node) + "]"
    return str(node).lower() if isinstance(node, bool) else str(node)


def render(command: str, root: Any = None) -> str:
    """The help text of one command; `root` is the composed config (current values)."""
    from infodecomp.commands import COMMANDS
    from infodecomp.experiments.config import SCHEMAS

    schema = SCHEMAS[command]
    rows = options(schema)
    top = {key.split(".")[0] for key, _ in rows}
    choices = {}
    if root is not None:
        from omegaconf import OmegaConf

        choices = OmegaConf.select(root, "hydra.runtime.choices", default=None) or {}
    lines = [
        f"infodecomp {command}: {COMMANDS[command][1]}",
        "",
        f"usage: infodecomp {command} [key=value ...] [--cfg job] [-m] [--verbose]",
    ]
    groups = [g for g in GROUPS if g in top]
    if groups:
        lines += ["", "Presets (configs/<group>/<name>.yaml):"]
        for g in groups:
            current = choices.get(g) or (_value(root, f"{g}.name") if root is not None else "")
            lines.append(f"  {f'{g}={current}':<{WIDTH}}  {GROUPS[g]}, one of:")
            indent = " " * (WIDTH + 4)
            lines += textwrap.wrap(
                ", ".join(group_choices(g)),
                100,
                initial_indent=indent,
                subsequent_indent=indent,
                break_on_hyphens=False,
            )
        experiments = group_choices("experiment")
        if experiments and command in ("aro", "localize", "intervene"):
            label = "+experiment=<name>"
            lines.append(f"  {label:<{WIDTH}}  the paper's settings: {', '.join(experiments)}")
    lines += ["", "Options (current value, then what it sets):"]
    for key, text in rows:
        shown = f"{key}={_value(root, key)}" if root is not None else key
        if len(shown) <= WIDTH:
            lines.append(f"  {shown:<{WIDTH}}  {text}")
        else:
            lines += [f"  {shown}", f"  {'':<{WIDTH}}  {text}"]
    sweep = "estimator.n_samples=10,30,100" if "estimator" in top else "key=a,b"
    lines += [""] + textwrap.wrap(
        f"`infodecomp {command} --cfg job` prints the whole configuration; -m sweeps comma "
        f"lists (-m {sweep}: one run each); --verbose shows tracebacks; --hydra-help lists "
        "Hydra's own flags.",
        100,
    )
    return "\n".join(lines).replace("$", "$$") + "\n"  # Hydra reads it as a string.Template


def resolver(command: str, *, _root_: Any) -> str:
    """OmegaConf resolver `infodecomp.help`: Hydra's help template for `command`."""
    return render(command, _root_)


# Hydra's own command-line flags; any other --name is a setting written the argparse way.
HYDRA_FLAGS = frozenset(
    "--help -h --hydra-help --version --cfg -c --resolve --package -p --run -r --multirun -m "
    "--shell-completion -sc --config-path -cp --config-name -cn --config-dir -cd "
    "--experimental-rerun --info -i".split()
)


def dash_option_hint(command: str, rest: list[str]) -> str | None:
    """One line for a setting written `--n_samples 10` (or `--n_samples=10`): the key=value form
    the command takes, e.g. `estimator.n_samples=10`; None when every argument is Hydra's."""
    for i, arg in enumerate(rest):
        flag = arg.split("=", 1)[0]
        if not arg.startswith("--") or flag in HYDRA_FLAGS or arg == console.VERBOSE_FLAG:
            continue
        name, eq, value = arg[2:].partition("=")
        following = rest[i + 1] if i + 1 < len(rest) else None
        if not eq and following is not None and not following.startswith("-"):
            if "=" not in following:
                value = following
        written = f"{arg} {value}" if value and not eq else arg
        keys = _keys_named(command, name.replace("-", "_"))
        value = value or "<value>"
        see = f"see `infodecomp {command} --help`"
        if len(keys) == 1:
            return f"settings are written key=value, not {written}: use {keys[0]}={value} ({see})"
        if keys:
            choices = " or ".join(f"{k}={value}" for k in keys)
            return f"settings are written key=value, not {written}: use {choices} ({see})"
        return f"unknown option {written}: settings are written key=value ({see})"
    return None


def _keys_named(command: str, name: str) -> list[str]:
    """The dotted settings of `command` whose last part is `name` (or, failing that, the
    closest ones)."""
    from infodecomp.experiments.config import SCHEMAS

    schema = SCHEMAS.get(command)
    if schema is None:
        return []
    keys = [key for key, _ in options(schema)]
    exact = [k for k in keys if k == name or k.rsplit(".", 1)[-1] == name]
    if exact:
        return exact
    leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
    return [leaves[c] for c in difflib.get_close_matches(name, list(leaves), n=1)] + [
        k for k in difflib.get_close_matches(name, keys, n=1) if k not in leaves.values()
    ]

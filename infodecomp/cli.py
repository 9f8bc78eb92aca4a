"""`infodecomp <command> [overrides]`: hands the rest of argv to that command's Hydra main."""

from __future__ import annotations

import difflib
import importlib
import os
import sys

from infodecomp import console
from infodecomp.commands import COMMANDS

__all__ = ["COMMANDS", "main", "usage"]


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [
        "usage: infodecomp <command> [key=value ...] [--help | --cfg job | -m] [--verbose]",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += [
        "",
        "Run `infodecomp <command> --help` for the options of one command. Errors in your",
        "settings print one line; --verbose (or HYDRA_FULL_ERROR=1) shows the traceback.",
    ]
    return "\n".join(lines)


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
    from infodecomp.experiments.help import options

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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console.set_verbose(console.VERBOSE_FLAG in argv or os.environ.get("HYDRA_FULL_ERROR") == "1")
    argv = [a for a in argv if a != console.VERBOSE_FLAG]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"infodecomp: unknown command '{command}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    hint = dash_option_hint(command, rest)
    if hint:
        print(f"infodecomp {command}: {hint}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except KeyboardInterrupt:
        console.interrupted(command)
    # Hydra reads sys.argv itself; show it the command's own arguments only.
    sys.argv = [f"infodecomp {command}", *rest]
    # Hydra re-raises configuration errors (instead of printing its own report) so that they
    # reach console.fail: one line for a bad override, the traceback with --verbose.
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        result = module.main()
    except KeyboardInterrupt:  # before the command's own handler (Hydra's setup) or after it
        console.interrupted(command)
    except Exception as err:
        console.fail(err, command)
        raise  # not reached: fail exits or re-raises
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

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

"""`infodecomp <command> [overrides]`: hands the rest of argv to that command's Hydra main."""

from __future__ import annotations

import difflib
import importlib
import sys

# command -> (module implementing `main()`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "aro": ("infodecomp.experiments.aro", "compositional understanding on ARO (Tables 1, 2)"),
    "localize": ("infodecomp.experiments.localize", "word localisation mIoU (Table 3)"),
    "intervene": ("infodecomp.experiments.intervene", "prompt interventions vs CMI (Table 4)"),
    "visualize": (
        "infodecomp.experiments.visualize",
        "pixel MI / CMI heat maps, MMSE curves (Fig. 2)",
    ),
    "aggregate": ("infodecomp.experiments.aggregate", "turn run directories into Tables 1-4"),
    "validate": (
        "infodecomp.experiments.validate",
        "check every estimator against exact ground truth",
    ),
    "bench": ("infodecomp.experiments.bench", "speed and sample-efficiency benchmark"),
    "report": (
        "infodecomp.experiments.report",
        "static HTML report of run directories (tables, curves, heat maps, metadata)",
    ),
    "build-coco-manifest": (
        "infodecomp.experiments.build_manifest",
        "make COCO-IT / COCO-WL manifests from COCO annotations",
    ),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [
        "usage: infodecomp <command> [key=value ...] [--help | --cfg job | -m]",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "Run `infodecomp <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"infodecomp: unknown command '{command}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    # Hydra reads sys.argv itself; show it the command's own arguments only.
    sys.argv = [f"infodecomp {command}", *rest]
    result = module.main()
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

"""`infodecomp build-coco-manifest --instances ... --captions ... --out ...` (argparse, no Hydra)."""

from __future__ import annotations

import sys

from infodecomp.data.manifest import main_build


def main() -> int:
    return main_build(sys.argv[1:])

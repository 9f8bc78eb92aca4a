"""Where the package finds its Hydra configs, in a checkout and in an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The configs folder: inside the package (wheel) or the repository's top-level configs/."""
    for candidate in (_PKG / "configs", _PKG.parent / "configs"):
        if (candidate / "aro.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"infodecomp configs not found in {_PKG / 'configs'} or {_PKG.parent / 'configs'}; "
        "reinstall the package (pip install .) or run from a source checkout."
    )

"""Ship the top-level configs/ folder inside the wheel as infodecomp/configs."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        src = Path(__file__).parent / "configs"
        dst = Path(self.build_lib) / "infodecomp" / "configs"
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConfigs})

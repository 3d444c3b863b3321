"""Only here to ship manifests/ inside the wheel (everything else is in pyproject.toml)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithManifests(build_py):
    def run(self) -> None:
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install reads <repo>/manifests
            shutil.copytree(Path(__file__).parent / "manifests", Path(self.build_lib) / "switchpoint" / "manifests",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithManifests})

"""Builds the wheel as pyproject.toml declares, and compiles the gettext catalogues into it.

Every locale/<lang>/LC_MESSAGES/<domain>.po of a package becomes the .mo next to it in the build, so
wheels, the Debian/RPM packages (built from the wheel) and the PyInstaller bundles of macOS and
Windows (installed from the source tree, not in editable mode) ship compiled catalogues that the
standard library reads. An editable install compiles nothing: the source checkout compiles each
.po in memory at first use (agent.i18n).
"""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CATALOGUE_PACKAGES = ("agent", "server")


class BuildWithCatalogues(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        sys.path.insert(0, str(ROOT))
        from agent.i18n import compile_po  # stdlib only; Babel is a build requirement

        for package in CATALOGUE_PACKAGES:
            for po in sorted((ROOT / package).glob("**/locale/*/LC_MESSAGES/*.po")):
                target = Path(self.build_lib) / po.relative_to(ROOT).with_suffix(".mo")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(compile_po(po))


setup(cmdclass={"build_py": BuildWithCatalogues})

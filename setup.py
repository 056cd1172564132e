"""Build hook only; the project's metadata is in pyproject.toml.

The weights manifest lives at the repository root (DESIGN.md, Layout), outside the package.
Wheel builds copy it into the built package (``vpcli/weights_manifest.yaml``) so that an
installed vpcli reads the same file; a checkout (editable install) reads the root file itself
(``vpcli.weights.manifest.BUNDLED_MANIFEST``). MANIFEST.in puts it into the sdist.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MANIFEST = "weights_manifest.yaml"


class BuildPyWithManifest(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # editable: the package finds the root file in place
            src = Path(__file__).resolve().parent / MANIFEST
            if not src.is_file():
                raise FileNotFoundError(f"{src} is missing: the wheel needs the weights manifest")
            self.copy_file(str(src), str(Path(self.build_lib) / "vpcli" / MANIFEST))


setup(cmdclass={"build_py": BuildPyWithManifest})

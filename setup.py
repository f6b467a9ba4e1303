"""Package discovery, the one thing pyproject.toml cannot say: every package under edgeq/ is
found automatically (a hand-kept list once left edgeq.edgetpu out of the wheel), and the target
profiles in targets/ ship as the package edgeq.profiles and the CMake helpers in cmake/ as
edgeq.cmake (both mapped in pyproject.toml).

Namespace discovery, so that edgeq/emulator/firmware/ (C/C++ sources, no __init__.py) is a
package of data files: with plain `find_packages` setuptools warns once per firmware file that
the directory is importable but absent from `packages` (about 45 lines in every install)."""

from setuptools import find_namespace_packages, setup

setup(packages=[*find_namespace_packages(include=["edgeq", "edgeq.*"],
                                         exclude=["*__pycache__*"]), "edgeq.profiles",
      "edgeq.cmake"])

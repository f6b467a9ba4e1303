"""Package discovery, the one thing pyproject.toml cannot say: every package under edgeq/ is
found automatically (a hand-kept list once left edgeq.edgetpu out of the wheel), and the target
profiles in targets/ ship as the package edgeq.profiles and the CMake helpers in cmake/ as
edgeq.cmake (both mapped in pyproject.toml)."""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["edgeq", "edgeq.*"]), "edgeq.profiles", "edgeq.cmake"])

"""Build hook: the wheel ships the product, not its tests.

All metadata lives in pyproject.toml. setuptools has no setting that leaves single modules
out of a package it ships, and `hil_tests` is both product (the rig, the emulator and
`liftwatch-rig demo`) and the home of the end-to-end tests (`hil_tests/test_*.py`), so
this one override of ``build_py`` drops pytest's test modules and conftest files from
every shipped package. tests/test_packaging.py builds the wheel and checks its file list.
"""

from __future__ import annotations

from setuptools import setup
from setuptools.command.build_py import build_py


def is_test_module(module: str) -> bool:
    """True for the module names pytest collects or configures from (test_*, conftest)."""
    return module.startswith("test_") or module == "conftest"


class BuildPyWithoutTests(build_py):
    """``build_py`` that ships every module of the found packages except test modules."""

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules: list[tuple[str, str, str]] = super().find_package_modules(package, package_dir)
        return [m for m in modules if not is_test_module(m[1])]


setup(cmdclass={"build_py": BuildPyWithoutTests})

"""The wheel ships the product only (issue 15, item 7).

Builds the wheel the way an operator's pip would (`pip wheel`, without build isolation so
that no package index is needed) from a copy of the working tree, so that a stale in-tree
``build/`` directory can neither hide nor add a file, and checks its file list.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a developer's tree holds beside the sources; none of it belongs in a build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", "test-artifacts", "*.db", "*.db-wal", "*.db-shm",
)  # fmt: skip
TEST_FILE = re.compile(r"(^|/)(test_[^/]*|conftest)\.py$")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The names in the wheel built from a copy of this tree."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = work / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = out.glob("liftwatch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def _pyproject() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_wheel_ships_no_tests(wheel_files: list[str]) -> None:
    shipped_tests = [n for n in wheel_files if TEST_FILE.search(n)]
    assert shipped_tests == []
    assert not any(n.startswith("tests/") for n in wheel_files)
    # The rig's product modules are still there: only the tests were left out.
    assert "hil_tests/emulator/car.py" in wheel_files
    assert "hil_tests/system.py" in wheel_files


def test_wheel_ships_py_typed_as_declared(wheel_files: list[str]) -> None:
    tool = _pyproject()["tool"]
    assert isinstance(tool, dict)
    package_data = tool["setuptools"]["package-data"]
    if "py.typed" not in package_data.get("*", []):
        pytest.fail("package-data no longer lists py.typed: update this test with it")
    tops = sorted({n.split("/")[0] for n in wheel_files if ".dist-info/" not in n})
    assert tops == ["agent", "fleet", "hil_tests", "liftconf", "protos"]
    assert [t for t in tops if f"{t}/py.typed" not in wheel_files] == []


def test_wheel_ships_what_the_demo_and_commands_need(wheel_files: list[str]) -> None:
    # `liftwatch-rig demo` reads the synthetic district register (hil_tests.system).
    from hil_tests.system import REGISTER_CSV

    assert REGISTER_CSV.relative_to(ROOT).as_posix() in wheel_files
    # `serve` loads a shipped northbound mapping by name (fleet.northbound.mapping).
    from fleet.northbound.mapping import SHIPPED_MAPPINGS

    for mapping in SHIPPED_MAPPINGS:
        assert f"fleet/northbound/{mapping}.toml" in wheel_files, mapping
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    for name, target in project["scripts"].items():
        module = target.split(":")[0].replace(".", "/")
        assert f"{module}.py" in wheel_files or f"{module}/__init__.py" in wheel_files, name

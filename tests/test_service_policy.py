"""The missing-service policy of tests/conftest.py: skip on a developer's machine, fail
under CI (LIFTWATCH_REQUIRE_SERVICES=1), also for a missing Python module such as
Playwright, which `pytest.importorskip` would skip silently even in CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_MODULE = """
from tests.conftest import require_module

needed = require_module("{module}")


def test_uses_it() -> None:
    assert needed.__name__ == "{module}"
"""


def _pytest(tmp_path: Path, module: str, *, require: bool) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "test_needs_module.py"
    test_file.write_text(TEST_MODULE.format(module=module), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "LIFTWATCH_REQUIRE_SERVICES"}
    env["PYTHONPATH"] = str(ROOT)
    if require:
        env["LIFTWATCH_REQUIRE_SERVICES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("require", [False, True])
def test_a_present_module_runs_the_tests(tmp_path: Path, require: bool) -> None:
    run = _pytest(tmp_path, "json", require=require)
    assert run.returncode == 0, run.stdout
    assert "1 passed" in run.stdout


def test_a_missing_module_skips_on_a_developers_machine(tmp_path: Path) -> None:
    run = _pytest(tmp_path, "liftwatch_no_such_module", require=False)
    # The module's only test skipped: pytest says no test ran, which fails nothing.
    assert run.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, run.stdout
    assert "1 skipped" in run.stdout
    assert "liftwatch_no_such_module cannot be imported" in run.stdout


def test_a_missing_module_fails_under_ci(tmp_path: Path) -> None:
    run = _pytest(tmp_path, "liftwatch_no_such_module", require=True)
    assert run.returncode != 0, run.stdout
    assert "skipped" not in run.stdout
    assert "LIFTWATCH_REQUIRE_SERVICES=1 forbids skipping" in run.stdout

"""Shared test policy: a missing service skips on a developer's machine, fails in CI.

CI sets LIFTWATCH_REQUIRE_SERVICES=1 (see .ci/run); `require_binary` then turns what would
be a skip into a failure, so a missing install step can never pass as green.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

REQUIRE_SERVICES = os.environ.get("LIFTWATCH_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> NoReturn:
    """A service the test needs cannot run: skip on a developer's machine, fail under CI."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}, and LIFTWATCH_REQUIRE_SERVICES=1 forbids skipping")
    # Called at a test module's top (`require_module`) it skips that whole module.
    pytest.skip(reason, allow_module_level=True)


def require_binary(name: str) -> str:
    """The path of executable ``name``; skip the test without it, or fail under CI."""
    path = shutil.which(name)
    if path is None:
        service_missing(f"{name} is not installed")
    return path


def require_module(name: str) -> ModuleType:
    """Import Python module ``name`` (an optional test dependency such as Playwright); skip
    without it, or fail under CI. Unlike ``pytest.importorskip``, a CI run cannot pass
    green with the tests that need it silently skipped."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        service_missing(f"Python module {name} cannot be imported ({e})")

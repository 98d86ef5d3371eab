"""Shared test policy: a missing service skips on a developer's machine, fails in CI.

CI sets LIFTWATCH_REQUIRE_SERVICES=1 (see .ci/run); `require_binary` then turns what would
be a skip into a failure, so a missing install step can never pass as green.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_SERVICES = os.environ.get("LIFTWATCH_REQUIRE_SERVICES") == "1"


def service_missing(reason: str) -> NoReturn:
    """A service the test needs cannot run: skip on a developer's machine, fail under CI."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason}, and LIFTWATCH_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """The path of executable ``name``; skip the test without it, or fail under CI."""
    path = shutil.which(name)
    if path is None:
        service_missing(f"{name} is not installed")
    return path

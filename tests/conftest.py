"""Shared test policy: a missing service skips on a developer's machine, fails in CI.

CI sets LIFTWATCH_REQUIRE_SERVICES=1 (see .ci/run); `require_binary` then turns what would
be a skip into a failure, so a missing install step can never pass as green.
"""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRE_SERVICES = os.environ.get("LIFTWATCH_REQUIRE_SERVICES") == "1"


def require_binary(name: str) -> str:
    """The path of executable ``name``; skip the test without it, or fail under CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if REQUIRE_SERVICES:
            pytest.fail(f"{message}, and LIFTWATCH_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(message)
    return path

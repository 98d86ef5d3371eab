"""Which system packages the service-backed tests need and this machine lacks.

`make test` runs this first, so that a fresh machine is told at the start, in one line
per package and one install command, instead of finding a row of skipped tests at the
end. It only reads PATH (and Debian's PostgreSQL directory). Exit status 0, or 1 when
something is missing and LIFTWATCH_REQUIRE_SERVICES=1 (CI, where such a test fails).

    python3 scripts/check_system.py
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Need:
    """A Debian package, the programs that show it is installed, and what needs it."""

    package: str
    programs: tuple[str, ...]
    for_what: str


NEEDS = (
    Need("socat", ("socat",), "Modbus RTU over a pty pair (agent link and rig tests)"),
    Need("mosquitto", ("mosquitto",), "the MQTT tests (agent and northbound)"),
    Need("postgresql", ("initdb",), "every store test on PostgreSQL"),
    Need("chromium", ("chromium",), "the dashboard's browser tests (Playwright)"),
    Need("prometheus", ("promtool",), "the alerting rules' tests (promtool)"),
    Need("systemd", ("systemd-analyze",), "the agent's unit file check"),
)


def installed(need: Need, path: str | None = None) -> bool:
    """Whether one of ``need``'s programs is on ``path`` (default PATH); PostgreSQL also
    where Debian puts it (/usr/lib/postgresql/N/bin), as the tests look for it."""
    if any(shutil.which(p, path=path) for p in need.programs):
        return True
    return need.package == "postgresql" and any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


def report(missing: Sequence[Need]) -> str:
    """The lines that say what is missing and the one command that installs it all."""
    if not missing:
        return "system packages for the service-backed tests: all present"
    lines = ["these system packages are missing; the tests that need them will be skipped:"]
    lines += [f"  {n.package:<11} {n.for_what}" for n in missing]
    lines.append(f"install them: sudo apt-get install -y {' '.join(n.package for n in missing)}")
    return "\n".join(lines)


def main(path: str | None = None) -> int:
    """Print the report for ``path`` (default PATH); the exit status (see the module doc)."""
    missing = [n for n in NEEDS if not installed(n, path)]
    print(report(missing), file=sys.stderr if missing else sys.stdout)
    return 1 if missing and os.environ.get("LIFTWATCH_REQUIRE_SERVICES") == "1" else 0


if __name__ == "__main__":
    sys.exit(main())

"""A throwaway PostgreSQL cluster for tests and the ingest benchmark.

initdb into a fresh temporary directory, pg_ctl start listening only on a unix socket in
that directory (so no TCP port can collide), and stop and delete it all at the end.
initdb refuses to run as root: as root, the cluster belongs to the ``postgres`` system
user that the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import service_missing

PORT = 5432  # only names the socket file; nothing listens on TCP
START_TIMEOUT_S = 60


class ClusterUnavailableError(RuntimeError):
    """PostgreSQL server binaries or the unprivileged user they need are missing."""


@dataclass(frozen=True, slots=True)
class Cluster:
    """A running throwaway cluster; ``url(db)`` connects to database ``db`` on it."""

    socket_dir: Path
    user: str

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` over the unix socket."""
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}&port={PORT}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def server_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on PATH, else the newest Debian install."""
    found = shutil.which("initdb")
    if found is not None:
        return Path(found).resolve().parent
    candidates = sorted(
        (str(p) for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(candidates[-1]).parent if candidates else None


@contextlib.contextmanager
def throwaway_cluster(*, durable: bool = False) -> Iterator[Cluster]:
    """Run a fresh cluster for the duration of the block.

    ``durable`` keeps fsync on (benchmarks); tests turn it off: they never pull the plug
    on PostgreSQL itself. Raises `ClusterUnavailableError` when it cannot be run here.
    """
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise ClusterUnavailableError("PostgreSQL server binaries (initdb) are not installed")
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailableError(
                "running as root and there is no 'postgres' user to own the cluster"
            ) from None
        run_as = "postgres"
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="lw-pg-"))
    if run_as is not None:
        shutil.chown(root, run_as, run_as)
    data, log = root / "data", root / "server.log"
    user = "liftwatch"
    started = False
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            run_as,
        )
        options = f"-p {PORT} -k {root} -c listen_addresses='' -c max_connections=200"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "start",
            ],
            run_as,
        )
        started = True
        yield Cluster(root, user)
    finally:
        if started:
            with contextlib.suppress(subprocess.CalledProcessError):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], run_as)
        shutil.rmtree(root, ignore_errors=True)


def _run(argv: list[str], user: str | None) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, text=True, user=user, timeout=120)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{Path(argv[0]).name} failed: {exc.stderr.strip()}") from exc


def require_cluster_policy(reason: str) -> None:
    """Skip (a developer's machine) or fail (CI) for a cluster that cannot run: ``reason``."""
    service_missing(reason)

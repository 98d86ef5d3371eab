"""Fixtures of the fleet tests: one store suite over both backends.

`store_target` is a fresh, empty store for each test: a SQLite file, or a new database on
a throwaway PostgreSQL cluster started once per session. Without PostgreSQL the postgres
half skips on a developer's machine and fails in CI (LIFTWATCH_REQUIRE_SERVICES=1).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.pgcluster import (
    Cluster,
    ClusterUnavailableError,
    require_cluster_policy,
    throwaway_cluster,
)

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster | str]:
    """The session's cluster, or the reason there is none (tests then skip or fail)."""
    try:
        with throwaway_cluster() as cluster:
            yield cluster
    except ClusterUnavailableError as exc:
        yield str(exc)


@pytest.fixture
def pg_url(pg_cluster: Cluster | str) -> str:
    """The URL of a fresh, empty database on the session's cluster."""
    if isinstance(pg_cluster, str):
        require_cluster_policy(pg_cluster)
        raise AssertionError("unreachable")
    return pg_cluster.create_database(f"test_{next(_databases)}")


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What `fleet.store.open.open_store` takes, for a fresh store of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.db")
    return str(request.getfixturevalue("pg_url"))

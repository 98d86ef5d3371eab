"""Fixtures of the security probes: a PKI with three agents, and a fleet under mutual TLS
with FleetQuery asking for API tokens."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fleet.auth.passwords import hash_password
from fleet.auth.pki import init_ca, issue_agent, issue_server
from fleet.auth.roles import Role
from fleet.config import FleetConfig, StoreConfig
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore
from tests.fleet.harness import Fleet, running_fleet
from tests.fleet.test_tls import Pki

AGENTS = ("edge-1", "edge-2", "edge-3")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, the fleet's pair and agents edge-1..3 (key generation is the slow part)."""
    directory = tmp_path_factory.mktemp("pki")
    init_ca(directory)
    issue_server(directory, ["localhost", "127.0.0.1"])
    for agent_id in AGENTS:
        issue_agent(directory, agent_id)
    foreign = tmp_path_factory.mktemp("foreign-pki")
    init_ca(foreign, "Somebody Else's CA")
    issue_agent(foreign, "edge-1")
    return Pki(directory, foreign)


@dataclasses.dataclass(frozen=True)
class District:
    """A store prepared for the probes: units U1 (contractor C1) and U2 (C2); edge-1
    registered for U1, edge-2 for U2, edge-3 never; API tokens of a regulator and of a C1
    contractor."""

    db: Path
    regulator_token: str
    contractor_token: str


@pytest.fixture
def district(tmp_path: Path) -> District:
    """See `District`."""
    db = tmp_path / "fleet.db"
    store = SqliteStore.open(str(db))
    now = dt.datetime.now(dt.UTC)
    try:
        store.upsert_register(
            [RegisterEntry("U1", contractor="C1"), RegisterEntry("U2", contractor="C2")]
        )
        store.add_agent_units("edge-1", ["U1"])
        store.add_agent_units("edge-2", ["U2"])
        password = hash_password("correct horse battery")
        store.add_user("reg", Role.REGULATOR, password, now=now)
        store.add_user("c1", Role.CONTRACTOR, password, "C1", now=now)
        tokens = District(
            db,
            store.create_token("reg", "probe", now),
            store.create_token("c1", "probe", now),
        )
    finally:
        store.close()
    return tokens


@contextlib.asynccontextmanager
async def tls_fleet(pki: Pki, district: District) -> AsyncIterator[Fleet]:
    """A fleet serving ``district``'s store under mutual TLS, FleetQuery asking for tokens."""
    config = FleetConfig(store=StoreConfig(path=str(district.db)), tls=pki.tls)
    async with running_fleet(config, query_auth=True) as fleet:
        yield fleet


def query_channel(fleet: Fleet, pki: Pki, agent_id: str | None = None) -> Any:
    """A TLS channel to the FleetQuery listener, trusting our CA; with ``agent_id``, the
    channel also offers that agent's client certificate."""
    return grpc.aio.secure_channel(fleet.query_address, pki.credentials(agent_id))


def agent_channel(fleet: Fleet, pki: Pki, agent_id: str) -> Any:
    """A mutual-TLS channel to the agent port with ``agent_id``'s certificate."""
    return grpc.aio.secure_channel(fleet.address, pki.credentials(agent_id))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an API token."""
    return (("authorization", f"Bearer {token}"),)


async def with_timeout(awaitable: Any, seconds: float = 20) -> Any:
    """Await ``awaitable``, failing the probe rather than hanging it."""
    return await asyncio.wait_for(awaitable, seconds)

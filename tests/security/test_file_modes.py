"""An insider with a shell but not the fleet's account reads nothing: the SQLite
database (with its -wal and -shm files) is created 0600, and every private key the fleet
writes (PKI, history checkpoint key) is 0600, whatever the umask."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.auth.pki import init_ca, issue_agent, issue_server
from fleet.config import FleetConfig, StoreConfig
from fleet.history.checkpoint import generate_key
from fleet.store.sqlite import SqliteStore
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import running_fleet
from tests.fleet.test_tls import first_frame


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """A umask that would leave files group- and world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_database_and_its_wal_files_are_created_0600(tmp_path: Path) -> None:
    db = tmp_path / "fleet.db"
    config = FleetConfig(store=StoreConfig(path=str(db)))

    async def main_() -> dict[str, int]:
        async with running_fleet(config) as fleet:
            call = await fleet.connect(hello("edge-1", "U1"), batch(record(1)))
            assert (await first_frame(call)).HasField("welcome")
            assert (await first_frame(call)).ack.up_to_seq == 1
            await call.done_writing()
            # While the fleet holds the database open, its WAL files exist.
            return {p.name: _mode(p) for p in tmp_path.glob("fleet.db*")}

    modes = asyncio.run(main_())
    assert {"fleet.db", "fleet.db-wal", "fleet.db-shm"} <= set(modes), modes
    assert modes == dict.fromkeys(modes, 0o600)


def test_a_database_the_cli_creates_is_0600(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    SqliteStore.open(str(db)).close()
    assert _mode(db) == 0o600


def test_private_keys_are_0600(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    init_ca(pki)
    issue_server(pki, ["localhost"])
    issue_agent(pki, "edge-1")
    keys = sorted(pki.rglob("*.key"))
    assert [k.name for k in keys] == ["edge-1.key", "ca.key", "server.key"]
    assert [_mode(k) for k in keys] == [0o600] * 3
    # A key file someone opened up is tightened when its key is issued again.
    agent_key = pki / "agents" / "edge-1.key"
    agent_key.chmod(0o644)
    issue_agent(pki, "edge-1")
    assert _mode(agent_key) == 0o600
    generate_key(tmp_path / "history.key")
    assert _mode(tmp_path / "history.key") == 0o600

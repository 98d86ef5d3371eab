"""A stolen edge box against the release desk (probe ``update_reports_bounded``).

Each UpdateReport an agent sends is kept, one row per (agent, release). With edge-1's
identity an attacker sends reports about hundreds of made-up releases and one whose
release id is 100,000 characters long: none is kept (a release the fleet does not hold
is no rollout's business), only the connection's health report ("-") is, so a box cannot
grow the database a row per frame.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

from fleet.config import FleetConfig, StoreConfig
from protos.liftwatch.v1 import gateway_pb2
from tests.fleet.factories import hello
from tests.fleet.harness import Fleet, running_fleet
from tests.security.conftest import District, with_timeout
from tests.support import eventually

MADE_UP = 300


def _report(release_id: str, state: str, detail: str = "") -> gateway_pb2.AgentFrame:
    return gateway_pb2.AgentFrame(
        update_report=gateway_pb2.UpdateReport(release_id=release_id, state=state, detail=detail)
    )


def test_reports_about_releases_the_fleet_does_not_hold_are_not_kept(district: District) -> None:
    def rows() -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{district.db}?mode=ro", uri=True) as db:
            return db.execute(
                "SELECT release_id, detector_errors FROM update_reports WHERE agent_id = ?",
                ("edge-1",),
            ).fetchall()

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("edge-1", "U1"))
        assert (await call.read()).HasField("welcome")
        await call.write(_report("-", "health", json.dumps({"detector_errors": 0})))
        for n in range(MADE_UP):
            await call.write(_report(f"made-up-{n}", "failed", "x" * 1000))
        await call.write(_report("r" * 100_000, "rolled_back"))
        # Frames are taken in order: once this one is kept, every one before was seen.
        await call.write(_report("-", "health", json.dumps({"detector_errors": 7})))
        await eventually(rows, lambda r: ("-", 7) in r, "the last health report kept")
        await call.done_writing()

    async def main_() -> None:
        config = FleetConfig(store=StoreConfig(path=str(district.db)))
        async with running_fleet(config) as fleet:
            await scenario(fleet)

    asyncio.run(with_timeout(main_(), 90))
    assert rows() == [("-", 7)]

"""A stolen edge box against remote configuration (probe ``config_report_scope``).

District (`tests.security.conftest.District`): edge-1 runs U1, edge-2 runs U2. An applied
ConfigReport writes a ``config`` entry into the hash-chained history of each unit it
touched, as the agent names them. With edge-1's identity an attacker reports its own
document's version applied naming U2 and 40,000 units nobody runs, then reports a version of
edge-2's document applied (versions are numbered across documents, so they are easy to
guess). Only U1's history gets an entry, and edge-1's applied version stays its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from fleet.config import FleetConfig, StoreConfig
from fleet.configs import service
from fleet.store.configs import ConfigStore, agent_document
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import gateway_pb2
from tests.fleet.factories import hello
from tests.fleet.harness import Fleet, running_fleet
from tests.security.conftest import District, with_timeout
from tests.support import eventually

BUS = '[[bus]]\nname = "line"\nurl = "tcp://10.0.0.5:502"\n'


def _document(unit_id: str) -> str:
    return BUS + f'[[unit]]\nid = "{unit_id}"\nbus = "line"\nslave = 1\n'


async def _frame(call: Any) -> gateway_pb2.FleetFrame:
    frame = await asyncio.wait_for(call.read(), 20)
    assert frame is not grpc.aio.EOF, "stream ended without a frame"
    assert isinstance(frame, gateway_pb2.FleetFrame)
    return frame


def test_a_config_report_chains_only_the_reporting_agents_units(district: District) -> None:
    store = SqliteStore.open(str(district.db))
    try:
        own = service.set_document(store, agent_document("edge-1"), _document("U1"), 10)
        theirs = service.set_document(store, agent_document("edge-2"), _document("U2"), 20)
    finally:
        store.close()

    async def scenario(fleet: Fleet) -> None:
        owner = await fleet.connect(hello("edge-2", "U2"))
        assert (await _frame(owner)).HasField("welcome")
        thief_hello = hello("edge-1", "U1")
        thief_hello.hello.accepts_config = True
        thief = await fleet.connect(thief_hello)
        assert (await _frame(thief)).HasField("welcome")
        desired = (await _frame(thief)).desired_config
        assert desired.version == own, desired
        for version, document in ((own, "edge-1"), (theirs, "edge-2")):
            report = gateway_pb2.ConfigReport(
                document_id=agent_document(document),
                version=version,
                applied=True,
                # Any number of made-up units too: none may cost a lookup each.
                units_changed=[
                    "U1=changed",
                    "U2=changed",
                    *(f"ghost-{n}=added" for n in range(40_000)),
                ],
            )
            await thief.write(gateway_pb2.AgentFrame(config_report=report))

        def reported() -> int:
            opened = SqliteStore.open(str(district.db))
            try:
                state = ConfigStore(opened).states(["edge-1"])[0]
            finally:
                opened.close()
            return state.report_version

        await eventually(reported, lambda v: v == theirs, "edge-1's second report kept")
        for call in (owner, thief):
            await call.done_writing()

    async def main_() -> None:
        config = FleetConfig(store=StoreConfig(path=str(district.db)))
        async with running_fleet(config) as fleet:
            await scenario(fleet)

    asyncio.run(with_timeout(main_(), 60))
    store = SqliteStore.open(str(district.db))
    try:
        rows, _ = store.history("")
        state = ConfigStore(store).states(["edge-1"])[0]
    finally:
        store.close()
    entries = [(r.unit_id, json.loads(r.detail)["version"]) for r in rows if r.kind == "config"]
    assert entries == [("U1", own)], entries
    assert state.applied_version == own, state

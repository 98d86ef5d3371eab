"""A full disk under the fleet's store against this session's writes (probe
``fleet_disk_full``): an agent's batch with an Evidence, a dispatcher's on-demand request
and a contractor's records upload, each while the store's file system has not a byte
left. None may end the fleet or its other streams; each is refused or retried, nothing
half-written; once space is back the same agent's records are stored and the same
requests succeed.

The store lives on a small tmpfs (mounting needs root, as in tests/security/
test_disk_full.py; elsewhere this skips, and under LIFTWATCH_REQUIRE_SERVICES=1 fails).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from fleet.config import FleetConfig, StoreConfig
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.agent.test_outbox_disk_full import fill, mounted_tmpfs
from tests.fleet.factories import batch, evidence_record, hello, record
from tests.fleet.harness import Fleet, running_fleet
from tests.security.conftest import with_timeout

DISK_BYTES = 16 * 1024 * 1024
RECORDS = b"unit_id,date,start,end,type,workers\nU1,2026-03-01,09:00Z,10:00Z,annual,x\n"


def _hello() -> gateway_pb2.AgentFrame:
    frame = hello("edge-1", "U1")
    frame.hello.records_evidence = True
    return frame


def _post(fleet: Fleet, path: str, body: bytes, kind: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://{fleet.http}{path}", data=body, method="POST", headers={"Content-Type": kind}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _frame(call: Any) -> Any:
    return await asyncio.wait_for(call.read(), 30)


def test_a_full_disk_refuses_the_new_writes_and_nothing_is_lost(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "disk", DISK_BYTES) as disk:
        db = disk / "fleet.db"
        store = SqliteStore.open(str(db))
        try:
            store.upsert_register([RegisterEntry("U1", contractor="C1")])
        finally:
            store.close()
        config = FleetConfig(store=StoreConfig(path=str(db)))
        trap = record(2, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="trap")
        window = evidence_record(3, "U1", event_id="trap", samples=600)
        ask = (
            "/api/units/U1/evidence-requests",
            b'{"seconds": 5, "by": "desk"}',
            "application/json",
        )
        upload = ("/api/maintenance/records?contractor=C1", RECORDS, "text/csv")

        async def main_() -> dict[str, Any]:
            seen: dict[str, Any] = {}
            async with running_fleet(config, http=True) as fleet:
                agent = await fleet.connect(_hello(), batch(record(1, "U1")))
                assert (await _frame(agent)).HasField("welcome")
                assert (await _frame(agent)).ack.up_to_seq == 1
                filler = fill(disk)
                await agent.write(batch(trap, window))
                try:
                    seen["batch"] = await _frame(agent)
                except grpc.aio.AioRpcError as exc:
                    seen["batch"] = (exc.code(), exc.details())
                seen["ask"] = await asyncio.to_thread(_post, fleet, *ask)
                seen["upload"] = await asyncio.to_thread(_post, fleet, *upload)
                filler.unlink()
                # Space is back: the agent (on a new stream, as after any refusal) sends
                # what was not acked again; the requests are made again.
                again = await fleet.connect(_hello())
                welcome = await _frame(again)
                seen["committed"] = welcome.welcome.committed_seq
                await again.write(batch(trap, window))
                seen["ack"] = (await _frame(again)).ack.up_to_seq
                seen["ask_again"] = await asyncio.to_thread(_post, fleet, *ask)
                seen["upload_again"] = await asyncio.to_thread(_post, fleet, *upload)
                await again.done_writing()
            return seen

        seen = asyncio.run(with_timeout(main_(), 120))
        store = SqliteStore.open(str(db))
        try:
            evidence = store.event_evidence("trap")
        finally:
            store.close()
    assert seen["committed"] == 1, seen
    assert seen["ack"] == 3, seen
    assert evidence is not None and evidence.seq == 3
    # The agent's stream ends UNAVAILABLE naming the store (the agent retries); the two
    # web writes are refused 503 naming it (a bare 500 before).
    assert seen["batch"] == (grpc.StatusCode.UNAVAILABLE, "the fleet store failed"), seen
    for refused in (seen["ask"], seen["upload"]):
        assert refused[0] == 503, seen
        assert json.loads(refused[1])["error"].startswith("the fleet's store failed: "), seen
        assert "full" in refused[1], seen
    assert seen["ask_again"][0] == 202, seen
    assert seen["upload_again"][0] == 200 and json.loads(seen["upload_again"][1])["stored"] == 1

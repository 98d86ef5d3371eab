"""A contractor's big upload against ingest (probe ``records_upload_yields``).

``POST /api/maintenance/records`` takes up to 2 MB of CSV (about 48,000 rows), stored and
judged on the store's one thread, which ingest's writes share. One call for all of them
held that thread for about 7 s: an entrapment arriving meanwhile waited for its ack
behind a contractor's spreadsheet. The records are now taken a chunk at a time; an
entrapment sent once the first chunk is stored is acked while the upload goes on.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import urllib.request
from typing import Any

from fleet.config import FleetConfig, StoreConfig
from fleet.web.maintenance import MAX_RECORDS_BYTES
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import Fleet, running_fleet
from tests.security.conftest import District, with_timeout
from tests.support import eventually

ROWS = 48_000


def _csv() -> bytes:
    day = dt.date(2020, 1, 1)
    lines = ["unit_id,date,start,end,type,workers"]
    for n in range(ROWS):
        hour = 8 + n % 8
        date = day + dt.timedelta(days=n // 8)
        lines.append(f"U1,{date},{hour:02d}:00Z,{hour:02d}:30Z,half_monthly,x")
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) <= MAX_RECORDS_BYTES
    return body


def _upload(fleet: Fleet, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://{fleet.http}/api/maintenance/records?contractor=C1",
        data=body,
        method="POST",
        headers={"Content-Type": "text/csv"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_an_entrapment_is_acked_while_a_big_upload_is_being_stored(district: District) -> None:
    body = _csv()

    def stored() -> int:
        with sqlite3.connect(f"file:{district.db}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM maintenance_records").fetchone()[0])

    async def scenario(fleet: Fleet) -> tuple[int, tuple[int, Any]]:
        agent = await fleet.connect(hello("edge-1", "U1"))
        assert (await agent.read()).HasField("welcome")
        upload = asyncio.create_task(asyncio.to_thread(_upload, fleet, body))
        await eventually(stored, lambda n: n > 0, "the upload's first records stored")
        trap = record(1, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="trap")
        await agent.write(batch(trap))
        ack = await asyncio.wait_for(agent.read(), 60)
        assert ack.ack.up_to_seq == 1, ack
        at_ack = stored()
        await agent.done_writing()
        return at_ack, await upload

    async def main_() -> tuple[int, tuple[int, Any]]:
        config = FleetConfig(store=StoreConfig(path=str(district.db)))
        async with running_fleet(config, http=True) as fleet:
            return await scenario(fleet)

    at_ack, (status, answer) = asyncio.run(with_timeout(main_(), 300))
    assert status == 200, answer
    assert answer["stored"] == ROWS and not answer["problems"], {
        k: answer[k] for k in ("stored", "duplicates")
    }
    # The entrapment was written between the upload's chunks, not after all of them.
    assert 0 < at_ack < ROWS, at_ack

"""A unit given to another contractor (``units import`` in another process) is gone from
the old contractor's view at once, on every route (probe ``reassignment_immediate``):
the API, ``/history``, ``/live``, ``/coverage/history``, and an already open live stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleet.cli.main import main
from fleet.config import FleetConfig, StoreConfig
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import running_fleet
from tests.fleet.test_tls import first_frame
from tests.fleet.test_web_auth import Client, _read_events
from tests.security.conftest import District, with_timeout
from tests.support import eventually

HEADER = (
    "registration_code,building,address,street,use_unit,maintenance_contractor,install_date,"
    "rated_speed_m_s,rated_load_kg,landings,controller_model,car_in_group"
)
# Every route that shows one unit to its contractor.
ROUTES = (
    "/api/units/U1",
    "/api/units/U1/history",
    "/api/units/U1/live",
    "/api/events?unit=U1",
    "/api/coverage/history?unit=U1",
    "/api/firmware?history=U1",
)
ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT


async def _statuses(client: Client) -> dict[str, int]:
    return {path: (await client.get(path))[0] for path in ROUTES}


def test_reassignment_immediate(district: District, tmp_path: Path) -> None:
    store = SqliteStore.open(str(district.db))
    try:
        store.upsert_register([RegisterEntry("U3", contractor="C1")])
    finally:
        store.close()
    config = FleetConfig(store=StoreConfig(path=str(district.db)))
    register = tmp_path / "register.csv"
    register.write_text(f"{HEADER}\nU1,B1,a,S1,u,C2,,,,,,\n", encoding="utf-8")

    async def main_() -> tuple[dict[str, int], dict[str, int], list[str]]:
        async with running_fleet(config, http=True, auth=True) as fleet:
            call = await fleet.connect(
                hello("edge-1", "U1", "U3"), batch(record(1, "U1", event=ENTRAPMENT))
            )
            assert (await first_frame(call)).HasField("welcome")
            assert (await first_frame(call)).ack.up_to_seq == 1
            client = Client(fleet.http, token=district.contractor_token)
            before = await _statuses(client)
            browser = Client(fleet.http)
            assert await browser.login("c1", "correct horse battery") == 200
            stream = asyncio.create_task(
                _read_events(
                    fleet.http, browser.cookie, "/api/live?unit=U1&unit=U3", '"unit_id":"U3"'
                )
            )
            await eventually(
                lambda: asyncio.sleep(0, fleet.metrics.value("liftwatch_fleet_live_subscribers")),
                lambda n: n == 1,
            )
            # Another process gives U1 to C2, as an operator would.
            assert (
                await asyncio.to_thread(
                    main, ["units", "import", str(register), "--db", str(district.db)]
                )
                == 0
            )
            after = await _statuses(client)
            # The open stream: U1's event (sent first) must not reach it, U3's does.
            await call.write(
                batch(
                    record(2, "U1", event=ENTRAPMENT, event_id="e2"),
                    record(3, "U3", event=ENTRAPMENT, event_id="e3"),
                )
            )
            assert (await first_frame(call)).ack.up_to_seq == 3
            seen = await asyncio.wait_for(stream, 20)
            await call.done_writing()
            return before, after, seen

    before, after, seen = asyncio.run(with_timeout(main_(), 60))
    assert before == dict.fromkeys(ROUTES, 200)
    assert after == dict.fromkeys(ROUTES, 404), after
    assert any('"unit_id":"U3"' in line for line in seen)
    assert not any('"unit_id":"U1"' in line for line in seen), seen

"""Drain rate after an outage: an agent's outbox holding one hour of 8 cars, sent to a fleet.

Builds the outbox a one-hour fleet outage leaves behind (per car: a CarState every 2 s, as
a busy car changes state; Counters every 60 s; an event pair every 10 minutes), starts a
real fleet manager process on loopback with SQLite in a temporary directory, and times the
agent's real uplink from connect until the outbox is empty and the fleet holds every
record. Prints one JSON object::

    {"records", "seconds", "records_per_s", "fleet_records", "lost", "duplicated"}

Target: records_per_s >= 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from agent.outbox import Outbox
from agent.uplink import Uplink
from hil_tests.processes import start
from protos.liftwatch.v1 import gateway_pb2, records_pb2

CARS = 8
HOUR_S = 3600
AGENT_ID = "bench-replay"


def build_outbox(path: Path, hours: float) -> int:
    """Fill an outbox with ``hours`` of records for `CARS` cars; return how many."""
    box = Outbox(path, wall=lambda: 0.0)
    start = 1_790_000_000
    seconds = int(HOUR_S * hours)
    batch: list[records_pb2.Record] = []
    for t in range(0, seconds, 2):
        for car in range(1, CARS + 1):
            unit = f"REPLAY-{car}"
            r = records_pb2.Record(unit_id=unit)
            r.time.FromSeconds(start + t)
            s = r.car_state
            s.floor = (t // 20 + car) % 24
            s.position_mm = s.floor * 3000
            s.speed_mm_s = 1600 if t % 20 < 12 else 0
            s.moving = s.speed_mm_s > 0
            s.door = records_pb2.DOOR_STATE_CLOSED if s.moving else records_pb2.DOOR_STATE_OPEN
            s.mode = records_pb2.SERVICE_MODE_NORMAL
            s.occupied = bool(t % 3)
            batch.append(r)
            if t % 60 == 0:
                c = records_pb2.Record(unit_id=unit)
                c.time.FromSeconds(start + t)
                c.counters.trips = t // 20
                c.counters.door_cycles = t // 20
                batch.append(c)
            if t % 600 == 0:
                for phase in (records_pb2.PHASE_RAISED, records_pb2.PHASE_CLEARED):
                    e = records_pb2.Record(unit_id=unit)
                    e.time.FromSeconds(start + t + phase)
                    e.event.event_id = f"{unit}-{t}"
                    e.event.type = records_pb2.EVENT_TYPE_DOOR_HELD_OPEN
                    e.event.phase = phase
                    e.event.onset.FromSeconds(start + t)
                    batch.append(e)
        if len(batch) >= 5000:
            box.append(batch)
            batch = []
    if batch:
        box.append(batch)
    count = box.depth()
    box.close()
    return count


def hello() -> gateway_pb2.Hello:
    h = gateway_pb2.Hello(agent_id=AGENT_ID, agent_version="bench")
    for car in range(1, CARS + 1):
        h.units.add(unit_id=f"REPLAY-{car}")
    return h


async def measure(hours: float, work: Path) -> dict[str, object]:
    outbox_path = work / "outbox.db"
    records = build_outbox(outbox_path, hours)
    fleet_db = work / "fleet.db"
    config = work / "fleet.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:0"\n[store]\npath = "{fleet_db}"\n')
    fleet = await start("fleet", "fleet", ["serve", "--config", str(config)], work)
    try:
        box = Outbox(outbox_path)
        uplink = Uplink(box, hello, [str(fleet.ready["grpc"])], max_batch_records=500)
        began = time.perf_counter()
        task = asyncio.create_task(uplink.run())
        # The outbox has no change notification; 2 ms polling bounds the timing error.
        while box.depth():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        seconds = time.perf_counter() - began
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        box.close()
    finally:
        await fleet.stop()
    with sqlite3.connect(fleet_db) as db:
        seqs = [s for (s,) in db.execute("SELECT seq FROM records WHERE agent_id = ?", (AGENT_ID,))]
        doubled = db.execute(
            "SELECT count(*) FROM (SELECT event_id, phase FROM events "
            "GROUP BY event_id, phase HAVING count(*) > 1)"
        ).fetchone()[0]
    lost = len(set(range(1, records + 1)) - set(seqs))
    return {
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds),
        "fleet_records": len(seqs),
        "lost": lost,
        "duplicated": int(doubled) + (len(seqs) - len(set(seqs))),
        "cars": CARS,
        "outage_hours": hours,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--hours", type=float, default=1.0, help="outage length (default 1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        result = asyncio.run(measure(args.hours, Path(tmp)))
    print(json.dumps(result))
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

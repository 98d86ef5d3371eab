"""Northbound forwarding through a platform outage (issue 21, item 5).

A real store (SQLite file, or ``--db postgres`` on a throwaway cluster) receives events
from an agent's batches (each committed event, and each alarm step of an alarm type,
chained into the unit's history as in production); the real `Forwarder` sends them over
HTTP to the reference platform of hil_tests, which validates every message against the
schema derived from the mapping. Part-way through, the platform goes down for
``--down-s`` seconds (its port closed, kept-alive connections cut) while events keep
arriving; then it comes back and the backlog drains.

Prints one JSON object: ``sent`` (messages the platform took, once each), ``platform_down_s``,
``lost`` (history entries the mapping sends that never arrived), ``duplicated`` (a key
arriving a second time), ``out_of_order`` (a unit's entry arriving after a later one of
the same unit), ``dead_lettered``, ``drain_s`` (from the platform's return until the
last entry arrived), and what the run was: records, units, store, invalid messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from fleet.clock import utc_now
from fleet.northbound.config import PlatformConfig
from fleet.northbound.forwarder import Forwarder, NorthboundMetrics
from fleet.northbound.mapping import load_mapping, resolve
from fleet.store.base import ControllerIdentity, UnitClaim
from fleet.store.northbound import NorthboundOutbox
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from hil_tests.northbound_platform import running_platform
from protos.liftwatch.v1 import records_pb2

TYPES = (
    records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE,
    records_pb2.EVENT_TYPE_ENTRAPMENT,
    records_pb2.EVENT_TYPE_OVERTRAVEL_TOP,
    records_pb2.EVENT_TYPE_SAFETY_CIRCUIT_OPEN,
    records_pb2.EVENT_TYPE_MODE_CHANGE,
)


def _record(seq: int, unit: str, at: dt.datetime) -> records_pb2.Record:
    kind = TYPES[seq % len(TYPES)]
    message = records_pb2.Record(seq=seq, unit_id=unit)
    message.time.FromDatetime(at)
    message.event.CopyFrom(
        records_pb2.Event(
            event_id=f"ev-{seq}",
            type=kind,
            phase=records_pb2.PHASE_RAISED,
            floor=seq % 12,
            reason="bench",
            gb_code=43 if kind == records_pb2.EVENT_TYPE_MODE_CHANGE else 0,
            at_landing=bool(seq % 2),
        )
    )
    message.event.onset.FromDatetime(at - dt.timedelta(seconds=1))
    return message


async def _feed(worker: StoreWorker, units: list[str], first: int, count: int, per_s: float) -> int:
    """Commit ``count`` events from ``first`` on, in batches of 10, ``per_s`` a second."""
    seq = first
    batch = 10
    for start in range(0, count, batch):
        n = min(batch, count - start)
        now = utc_now()
        records = [_record(seq + i, units[(seq + i) % len(units)], now) for i in range(n)]
        await worker.commit_batch("bench-agent", records, now)
        seq += n
        await asyncio.sleep(n / per_s)
    return seq


async def _run(args: argparse.Namespace, target: str) -> dict[str, Any]:
    mapping = load_mapping(resolve(args.mapping, Path.cwd()))
    schemas = {m.path: mapping.json_schema()[m.name] for m in mapping.messages.values()}
    units = [f"BENCH-{i:03d}" for i in range(args.units)]
    worker = await StoreWorker.open(lambda: open_store(target))
    claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in units]
    await worker.register_hello("bench-agent", "0.1.0", claims, utc_now())
    with running_platform(schemas, key_field=mapping.key_field) as platform:
        config = PlatformConfig(
            name="bench",
            mapping=args.mapping,
            url=platform.url,
            start="beginning",
            rate_per_s=args.rate,
            retry_initial_s=0.5,
            retry_max_s=args.retry_max_s,
            poll_s=0.05,
            batch=500,
        )
        config = dataclasses.replace(config, loaded=mapping)
        forwarder = Forwarder(worker, config, utc_now, NorthboundMetrics(CollectorRegistry()))
        task = asyncio.create_task(forwarder.run())
        before = args.records // 5
        during = args.records - before
        seq = await _feed(worker, units, 1, before, args.feed_per_s)
        platform.down()
        down_at = time.monotonic()
        feed_s = args.down_s * 0.9
        await _feed(worker, units, seq, during, during / feed_s)
        await asyncio.sleep(max(0.0, args.down_s - (time.monotonic() - down_at)))
        platform.up()
        down_s = time.monotonic() - down_at
        up_at = time.monotonic()

        async def backlog() -> int:
            status = await worker.call(lambda s: NorthboundOutbox(_sql(s)).status("bench"))
            return status.backlog

        # The backlog lives in the store: polled, as the status command reads it.
        while await backlog() > 0 and time.monotonic() - up_at < args.timeout_s:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        received = platform.log.snapshot()
        drain_s = (max(r.at for r in received) - up_at) if received else 0.0
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        entries = await worker.call(lambda s: _history(_sql(s)))
        letters = await worker.call(
            lambda s: NorthboundOutbox(_sql(s)).dead_letters("bench", None, 1_000_000)
        )
    await worker.close()
    expected: dict[str, tuple[str, int]] = {}
    for unit, seq_no, at_us, kind, detail in entries:
        rendered = mapping.render(config.source_id, unit, seq_no, at_us, kind, detail)
        if rendered is not None:
            expected[rendered.key] = (unit, seq_no)
    got = {r.key for r in received}
    last: dict[str, int] = {}
    out_of_order = 0
    for r in received:
        unit, seq_no = expected.get(r.key, ("?", 0))
        if seq_no < last.get(unit, 0):
            out_of_order += 1
        last[unit] = max(last.get(unit, 0), seq_no)
    dead = {d.message_key for d in letters}
    return {
        "sent": len(got),
        "platform_down_s": round(down_s, 1),
        "lost": len(set(expected) - got - dead),
        "duplicated": len(platform.log.duplicates),
        "out_of_order": out_of_order,
        "dead_lettered": len(dead),
        "drain_s": round(drain_s, 2),
        "records": args.records,
        "history_entries_sent_by_mapping": len(expected),
        "units": args.units,
        "store": "postgres" if target.startswith("postgresql") else "sqlite",
        "mapping": args.mapping,
        "invalid": len(platform.log.invalid),
        "rate_per_s": args.rate,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def _sql(store: object) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def _history(store: SqlStore) -> list[tuple[str, int, int, str, str]]:
    rows = store._execute(
        "SELECT unit_id, seq, at_us, kind, detail FROM unit_history ORDER BY unit_id, seq"
    ).fetchall()
    return [(str(u), int(q), int(a), str(k), str(d)) for u, q, a, k, d in rows]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints one JSON object (``--json``) or a line of it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1200, help="events committed (1200)")
    parser.add_argument("--units", type=int, default=40, help="units they come from (40)")
    parser.add_argument("--down-s", type=float, default=65.0, help="platform outage (65 s)")
    parser.add_argument("--feed-per-s", type=float, default=200.0, help="events/s before it")
    parser.add_argument("--rate", type=float, default=0.0, help="rate_per_s (0: no limit)")
    parser.add_argument("--retry-max-s", type=float, default=5.0, help="retry_max_s (5)")
    parser.add_argument("--mapping", default="gbt24476", help="gbt24476, chongqing or a file")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="give up draining")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if args.db == "postgres":
            # Run as a script, the repository root (the test helpers) is not on the path.
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.fleet.pgcluster import throwaway_cluster

            cluster = stack.enter_context(throwaway_cluster(durable=True))
            target = cluster.create_database("northbound_bench")
        else:
            target = str(Path(tmp) / "fleet.db")
        result = asyncio.run(_run(args, target))
    print(json.dumps(result) if args.json else result)
    bad = result["lost"] or result["duplicated"] or result["out_of_order"]
    return 1 if bad or result["sent"] < 1000 else 0


if __name__ == "__main__":
    sys.exit(main())

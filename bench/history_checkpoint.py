"""History checkpoint cost at district scale: what serve's scheduled round and a full
``verify-history --checkpoint`` take on the store.

A fresh store (SQLite in a temporary directory, or ``--db postgresql://...``) gets
``--units`` registered units (one register entry each), a Hello for all of them through
``--agents`` agents (coverage and firmware entries), and ``--events`` event records spread
over the units (each an event entry; alarm types also raise and chain an alarm). Then, on
the store's own thread as serve runs it:

* ``write_ms``: read every head and write the signed checkpoint file;
* ``check_ms``: `fleet.history.verify.check_checkpoint`, serve's per-round check (the heads
  and one indexed row per checkpointed unit), which holds the store thread;
* ``verify_ms``: `fleet.history.verify.verify_store` with the checkpoint, the CLI's full
  check (every chain rehashed, every events and alarms row cross-checked).

Prints one JSON object::

    {"backend", "units", "entries", "events", "write_ms", "check_ms", "verify_ms",
     "problems"}

``problems`` must be 0 (an honest store). Run: ``python bench/history_checkpoint.py
--units 10000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.history.checkpoint import (
    generate_key,
    load_private_key,
    read_checkpoint,
    write_checkpoint,
)
from fleet.history.verify import check_checkpoint, verify_store
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.open import open_store
from protos.liftwatch.v1 import records_pb2

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
TYPES = (
    records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE,
    records_pb2.EVENT_TYPE_ALARM_BUTTON,
    records_pb2.EVENT_TYPE_DOOR_HELD_OPEN,
)


def _event(seq: int, unit_id: str, kind: int) -> records_pb2.Record:
    message = records_pb2.Record(seq=seq, unit_id=unit_id)
    message.time.FromDatetime(T0 + dt.timedelta(seconds=seq))
    message.event.CopyFrom(
        records_pb2.Event(event_id=f"e{seq}", type=kind, phase=records_pb2.PHASE_RAISED, floor=1)
    )
    return message


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)


def main() -> None:
    """Build the store, time the three steps, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--db", help="a postgresql:// URL of an empty database (default SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        target = args.db or str(Path(tmp) / "fleet.db")
        store = open_store(target)
        units = [f"U{n:05d}" for n in range(args.units)]
        store.upsert_register([RegisterEntry(u, building="B", contractor="C") for u in units], T0)
        per_agent = max(1, len(units) // args.agents)
        for index in range(0, len(units), per_agent):
            claims = [
                UnitClaim(u, ControllerIdentity(model="RC-3000"))
                for u in units[index : index + per_agent]
            ]
            store.register_hello(f"a{index // per_agent}", "0.1.0", claims, T0)
        for start in range(0, args.events, 1000):
            batch = [
                _event(seq + 1, units[seq % len(units)], TYPES[seq % len(TYPES)])
                for seq in range(start, min(start + 1000, args.events))
            ]
            store.commit_batch("a0", batch, T0)
        key = Path(tmp) / "k"
        generate_key(key)
        signing = load_private_key(key)
        path = Path(tmp) / "cp.json"

        began = time.perf_counter()
        write_checkpoint(path, store.history_heads(), T0, signing)
        write_ms = _ms(began)
        checkpoint = read_checkpoint(path, signing.public_key())
        began = time.perf_counter()
        problems = check_checkpoint(store, checkpoint)
        check_ms = _ms(began)
        began = time.perf_counter()
        found = verify_store(store, "", checkpoint)
        verify_ms = _ms(began)
        store.close()
    print(
        json.dumps(
            {
                "backend": "postgres" if args.db else "sqlite",
                "units": len(checkpoint.heads),
                "entries": found.entries,
                "events": args.events,
                "write_ms": write_ms,
                "check_ms": check_ms,
                "verify_ms": verify_ms,
                "problems": len(problems) + len(found.problems),
            }
        )
    )


if __name__ == "__main__":
    main()

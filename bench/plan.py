"""The maintenance plan by need over a district: how long `maintenance_plan` takes.

Builds a real store (SQLite, or ``--db postgres URL``) with the synthetic register
(hil_tests/data/units-sample.csv, 10,525 units); ``--with-data N`` of them get a supported
visit (a derived visit and a record judged supported, 10 days ago), two Counters records
(at the visit and now) and, for every tenth, a lift fault since the visit; another tenth
of them are in the on-demand programme. Then the plan is computed for every unit, timed.
Prints one JSON object: ``units``, ``with_data``, ``plan_s``, ``overdue``, ``stretched``
(on-demand units whose interval passed 15 days), ``loadavg_1m``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path

from fleet.reports.plan import maintenance_plan
from fleet.reports.plan_config import PlanConfig
from fleet.store.base import ControllerIdentity, UnitClaim
from fleet.store.maintenance import NewRecord, UnitDerivation, VerdictChange, VisitRow
from fleet.store.open import open_store
from fleet.store.sql import SqlStore, to_us
from fleet.units.registry import read_register
from protos.liftwatch.v1 import records_pb2

REGISTER = Path(__file__).resolve().parents[1] / "hil_tests" / "data" / "units-sample.csv"


def _record(seq: int, unit_id: str, at: dt.datetime, trips: int) -> records_pb2.Record:
    message = records_pb2.Record(seq=seq, unit_id=unit_id)
    message.time.FromDatetime(at)
    message.counters.trips = trips
    message.counters.door_cycles = trips * 2
    message.counters.run_hours = trips // 60
    message.counters.door_close_trend = 1.0
    return message


def _fill(store: SqlStore, unit_ids: list[str], now: dt.datetime) -> None:
    visit_end = now - dt.timedelta(days=10)
    start = visit_end - dt.timedelta(hours=1)
    store.register_hello("bench", "1", [UnitClaim(u, ControllerIdentity()) for u in unit_ids], now)
    seq = 0
    records = []
    for i, unit in enumerate(unit_ids):
        records.append(_record(seq := seq + 1, unit, visit_end, 100_000))
        records.append(
            _record(seq := seq + 1, unit, now - dt.timedelta(hours=1), 100_000 + 150 * (i % 50))
        )
        if i % 10 == 0:
            fault = records_pb2.Record(seq=(seq := seq + 1), unit_id=unit)
            fault.time.FromDatetime(now - dt.timedelta(days=2))
            fault.event.CopyFrom(
                records_pb2.Event(event_id=f"f{i}", type=records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE,
                                  phase=records_pb2.PHASE_RAISED)
            )  # fmt: skip
            records.append(fault)
    for chunk in range(0, len(records), 500):
        store.commit_batch("bench", records[chunk : chunk + 500], now)
    derivations = [
        UnitDerivation(u, "bench", (VisitRow(None, u, to_us(start), to_us(visit_end), 3600.0,
                                             "inspection", 6, 4, 8, to_us(visit_end)),), "")
        for u in unit_ids
    ]  # fmt: skip
    visits = store.save_derivation("bench", seq, derivations)
    ids = store.add_maintenance_records(
        [
            NewRecord(
                v.unit_id,
                "C",
                "half_monthly",
                v.start_us,
                v.end_us or v.start_us,
                "",
                "csv",
                "bench",
                to_us(now),
            )
            for v in visits
        ],
        now,
    )
    store.set_verdicts(
        [
            VerdictChange(record_id, "supported", "", "{}", visit.id)
            for record_id, visit in zip(ids, visits, strict=True)
            if record_id is not None
        ],
        now,
    )


def main() -> None:
    """Run the bench and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="", help="a postgresql:// URL (default: a SQLite file)")
    parser.add_argument(
        "--with-data", type=int, default=2000, help="units with visits and counters"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (always)")
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as scratch:
        store = open_store(args.db or str(Path(scratch) / "fleet.db"))
        try:
            register = read_register(REGISTER)
            store.upsert_register(register.entries, now)
            with_data = [e.unit_id for e in register.entries[: args.with_data]]
            _fill(store, with_data, now)
            policy = PlanConfig(on_demand_units=tuple(with_data[5::10]))
            started = time.perf_counter()
            plan = maintenance_plan(store, policy, now)
            elapsed = time.perf_counter() - started
        finally:
            store.close()
    print(
        json.dumps(
            {
                "units": len(plan),
                "with_data": len(with_data),
                "plan_s": round(elapsed, 2),
                "overdue": sum(1 for e in plan if e.overdue),
                "stretched": sum(1 for e in plan if e.on_demand and e.interval_days > 15),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()

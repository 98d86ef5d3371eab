"""Storage per car-day, measured (issue 18, item 2): the demo's traffic through the real
fleet store's ingest write, retention on a virtual clock; prints one JSON object.

    python bench/storage.py --json                    # SQLite
    python bench/storage.py --db postgres --json      # a throwaway PostgreSQL cluster

1. **Capture** (``--capture-s``, 120 s): the demo runs for real (`hil_tests.system`: the
   fleet, the emulator's four cars of the demo building with their traffic, an agent
   polling them over Modbus TCP). What the fleet stored of its cars is the traffic mix
   at the demo's rates: every record, its kind, time and payload as the agent sent it.
   ``--capture FILE`` reuses a capture (the fleet.db of an earlier run, which
   ``--save-capture FILE`` keeps).
2. **Replay on a virtual clock**: the capture, repeated end to end with its times moved
   on, fills ``--days`` (window + 2 = 16) days of ``--cars`` (4) cars, one agent per
   four cars, through `SqlStore.write` (the write the fleet's ingest committer makes:
   the same statements, (agent_id, seq) stored once, the derived tables and history).
   At the end of each virtual day the visit derivation and a retention run follow, with
   the virtual time as ``now`` (explicit clocks, as everywhere in the fleet).
3. **Measure** the bytes of the tables and their indexes (SQLite: the dbstat table;
   PostgreSQL: pg_total_relation_size): ``raw_bytes_per_car_day`` is the raw records
   (table ``records`` with its indexes) per car per day of the window they hold;
   ``longterm_bytes_per_car_day`` is what folding keeps (``unit_hours``,
   ``records_kept``) per car per folded day: on SQLite the bytes in use of their pages,
   on PostgreSQL the live rows' bytes with their tuple and index overheads (a few cars'
   two folded days fill only a few pages of each table and index, so whole pages,
   ``longterm_page_bytes``, would measure the page size, and on PostgreSQL the row
   versions the hour rows' updates leave until autovacuum; a district's tables fill
   their pages as the raw table's do). ``district_year_gb``: 10,525 units after a
   year: the window's raw records plus a year of long-term, in GB (10^9 bytes);
   ``district_year_gb_without_retention`` what a year of raw records takes.

Also reported: the capture's rate (records per car per second, by kind), the raw bytes
per record, and ``compact_estimate_bytes_per_car_day``: what the raw window would take
as per-unit one-minute batches of the same payloads, zlib-compressed (level 6): an
estimate from the same records, for the decision whether to store raw records that way
(not what the store does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the repo's packages and test helpers

from fleet.reports.maintenance_config import MaintenanceConfig  # noqa: E402
from fleet.reports.visits import derive_visits  # noqa: E402
from fleet.store.base import BatchOp, ControllerIdentity, HelloOp, UnitClaim  # noqa: E402
from fleet.store.open import open_store  # noqa: E402
from fleet.store.postgres import PostgresStore  # noqa: E402
from fleet.store.retention import Retention  # noqa: E402
from fleet.store.sql import SqlStore, from_us, to_us  # noqa: E402
from protos.liftwatch.v1 import records_pb2  # noqa: E402

DISTRICT_UNITS = 10_525
WINDOW_DAYS = 14  # [retention] window_days' default
DAY_US = 86_400_000_000
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
RAW_TABLES = ("records",)
LONGTERM_TABLES = ("unit_hours", "records_kept")
CARS_PER_AGENT = 4


# -- 1. capture -------------------------------------------------------------------------


def capture(seconds: float, work: Path) -> Path:
    """Run the demo system for ``seconds``; the path of its fleet database."""
    from hil_tests.system import demo_spec, running_system

    async def run() -> None:
        async with running_system(demo_spec(), work):
            await asyncio.sleep(seconds)

    asyncio.run(run())
    return work / "fleet.db"


def read_capture(path: Path) -> tuple[dict[str, list[tuple[int, str, bytes]]], float]:
    """Per car: its records (time µs, kind, payload) in seq order, skipping the first and
    last 10 s (start-up, shut-down); and the span of time they cover, seconds."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT unit_id, time_us, kind, payload FROM records ORDER BY agent_id, seq"
    ).fetchall()
    conn.close()
    if not rows:
        raise SystemExit(f"{path}: no records captured")
    first = min(int(r[1]) for r in rows) + 10_000_000
    last = max(int(r[1]) for r in rows) - 10_000_000
    cars: dict[str, list[tuple[int, str, bytes]]] = defaultdict(list)
    for unit_id, time_us, kind, payload in rows:
        if first <= int(time_us) < last and kind != "evidence":
            cars[str(unit_id)].append((int(time_us) - first, str(kind), bytes(payload)))
    return dict(cars), (last - first) / 1e6


# -- 2. replay --------------------------------------------------------------------------


def replay(
    store: SqlStore,
    cars: dict[str, list[tuple[int, str, bytes]]],
    span_s: float,
    n_cars: int,
    days: int,
    window_days: int,
) -> dict[str, Any]:
    """Fill ``days`` days of ``n_cars`` cars with the captured records; derive and run
    retention at the end of each day. Returns the run's counts and timings."""
    sources = sorted(cars)
    span_us = int(span_s * 1e6)
    agents: dict[str, list[str]] = defaultdict(list)
    for n in range(n_cars):
        agents[f"bench-agent-{n // CARS_PER_AGENT}"].append(f"bench-car-{n}")
    for agent_id, units in agents.items():
        claims = tuple(UnitClaim(u, ControllerIdentity()) for u in units)
        store.write([HelloOp(agent_id, "bench", claims)], START)
    seqs = dict.fromkeys(agents, 0)
    rules = MaintenanceConfig().verdicts
    written = 0
    ingest_s = fold_s = derive_s = 0.0
    folded = deleted = 0
    # Each car replays one captured car's stream, shifted a little so cars differ.
    plan = {
        unit: (agent_id, cars[sources[i % len(sources)]], (i * 7_919_000) % span_us)
        for agent_id, units in agents.items()
        for i, unit in enumerate(units)
    }
    for day in range(days):
        day_start = to_us(START) + day * DAY_US
        # One minute of every car at a time, as one group of batches (one per agent).
        for minute in range(24 * 60):
            lo = day_start + minute * 60_000_000
            hi = lo + 60_000_000
            ops: dict[str, list[records_pb2.Record]] = defaultdict(list)
            for unit, (agent_id, stream, shift) in plan.items():
                for at, kind, payload in _window(stream, span_us, shift, lo, hi):
                    record = records_pb2.Record.FromString(payload)
                    seqs[agent_id] += 1
                    record.seq = seqs[agent_id]
                    record.unit_id = unit
                    record.time.FromMicroseconds(at)
                    if kind == "event":
                        record.event.event_id = f"{unit}-{record.seq}"
                        record.event.onset.FromMicroseconds(at)
                    ops[agent_id].append(record)
            if not ops:
                continue
            started = time.perf_counter()
            store.write([BatchOp(a, tuple(r)) for a, r in sorted(ops.items())], from_us(hi))
            ingest_s += time.perf_counter() - started
            written += sum(len(r) for r in ops.values())
        now = from_us(day_start + DAY_US)
        started = time.perf_counter()
        derive_visits(store, rules, now)
        derive_s += time.perf_counter() - started
        started = time.perf_counter()
        retention = Retention(store)
        held = retention.acquire("bench", to_us(now), 3600)
        assert held is not None
        result = retention.run(held, to_us(now), window_days * DAY_US, 2000)
        retention.release(held)
        fold_s += time.perf_counter() - started
        folded += result.folded
        deleted += result.deleted
    return {
        "records_written": written,
        "records_folded": folded,
        "records_deleted": deleted,
        "ingest_s": round(ingest_s, 1),
        "derive_s": round(derive_s, 1),
        "retention_s": round(fold_s, 1),
    }


def _window(
    stream: list[tuple[int, str, bytes]], span_us: int, shift: int, lo: int, hi: int
) -> Iterator[tuple[int, str, bytes]]:
    """The records of ``stream`` (repeated every ``span_us``, moved on by ``shift``)
    whose time falls in [lo, hi), by time."""
    base = lo - (lo - shift) % span_us  # where the repeat covering lo began
    while base < hi:
        for offset, kind, payload in stream:
            at = base + offset
            if lo <= at < hi:
                yield at, kind, payload
        base += span_us


# -- 3. measure -------------------------------------------------------------------------


def table_bytes(store: SqlStore, tables: tuple[str, ...]) -> tuple[int, int]:
    """Bytes of ``tables`` with their indexes (and, on PostgreSQL, TOAST): the pages they
    take, and of those the bytes in use (SQLite: page size less unused bytes; PostgreSQL:
    the pages, no finer figure without the pgstattuple extension)."""
    if isinstance(store, PostgresStore):
        pages = sum(
            int(store._execute("SELECT pg_total_relation_size(?)", (t,)).fetchone()[0])
            for t in tables
        )
        return pages, sum(_pg_row_bytes(store, t) for t in tables)
    total = used = 0
    for table in tables:
        names = [table] + [
            str(r[0])
            for r in store._execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)
            ).fetchall()
        ]
        for name in names:
            row = store._execute(
                "SELECT SUM(pgsize), SUM(pgsize - unused) FROM dbstat WHERE name = ?", (name,)
            ).fetchone()
            total += int(row[0] or 0)
            used += int(row[1] or 0)
    return total, used


# The key columns of each index of the long-term tables (PostgreSQL's estimate below).
_INDEX_KEYS = {
    "records": (("agent_id", "seq"), ("unit_id", "kind", "time_us")),
    "unit_hours": (("unit_id", "hour_us"),),
    "records_kept": (("agent_id", "seq"), ("unit_id", "kind", "time_us")),
}


def _pg_row_bytes(store: SqlStore, table: str) -> int:
    """PostgreSQL: the bytes ``table``'s live rows take, counted row by row: each row's
    size (pg_column_size) plus 28 bytes of tuple header and line pointer, and per index
    entry its key columns plus 12 bytes. An estimate of what a district's full pages
    hold: a few cars' tables take whole 8 kB pages and keep the row versions their
    updates left until autovacuum runs."""
    keys = _INDEX_KEYS[table]
    sizes = ", ".join(
        f"COALESCE(SUM({' + '.join(f'pg_column_size(t.{c})' for c in key)}), 0)" for key in keys
    )
    row = store._execute(
        f"SELECT COUNT(*), COALESCE(SUM(pg_column_size(t.*)), 0), {sizes} FROM {table} t"
    ).fetchone()
    count = int(row[0])
    return int(row[1]) + 28 * count + sum(int(k) + 12 * count for k in row[2:])


def compact_estimate(store: SqlStore) -> int:
    """Bytes the raw records now held would take as per-unit one-minute batches of their
    payloads, zlib level 6, with the key columns (unit, minute, first seq, count: 40 B)."""
    total = 0
    rows = store._execute(
        "SELECT unit_id, time_us / 60000000, payload FROM records ORDER BY unit_id, time_us"
    ).fetchall()
    groups: dict[tuple[str, int], list[bytes]] = defaultdict(list)
    for unit_id, minute, payload in rows:
        groups[(str(unit_id), int(minute))].append(bytes(payload))
    for payloads in groups.values():
        blob = b"".join(len(p).to_bytes(2, "little") + p for p in payloads)
        total += len(zlib.compress(blob, 6)) + 40
    return total


def measure(args: argparse.Namespace, target: str, capture_path: Path) -> dict[str, Any]:
    """The whole bench on the store at ``target``."""
    cars, span_s = read_capture(capture_path)
    kinds: Counter[str] = Counter(k for stream in cars.values() for _, k, _ in stream)
    per_car_s = {k: round(n / len(cars) / span_s, 4) for k, n in sorted(kinds.items())}
    store = open_store(target)
    try:
        run = replay(store, cars, span_s, args.cars, args.days, args.window_days)
        raw, _ = table_bytes(store, RAW_TABLES)
        longterm_pages, longterm = table_bytes(store, LONGTERM_TABLES)
        raw_rows = int(store._execute("SELECT COUNT(*) FROM records").fetchone()[0])
        oldest = store._execute("SELECT MIN(time_us) FROM records").fetchone()[0]
        end_us = to_us(START) + args.days * DAY_US
        raw_days = (end_us - int(oldest)) / DAY_US
        folded_days = (int(oldest) - to_us(START)) / DAY_US
        compact = compact_estimate(store)
    finally:
        store.close()
    raw_per_car_day = raw / args.cars / raw_days
    longterm_per_car_day = longterm / args.cars / folded_days if folded_days > 0 else None
    year_gb = None
    if longterm_per_car_day is not None:
        year_gb = (
            DISTRICT_UNITS * (raw_per_car_day * args.window_days + longterm_per_car_day * 365) / 1e9
        )
    return {
        "db": args.db,
        "cars": args.cars,
        "days": args.days,
        "window_days": args.window_days,
        "capture_s": round(span_s, 1),
        "capture_cars": len(cars),
        "records_per_car_s": round(sum(kinds.values()) / len(cars) / span_s, 4),
        "records_per_car_s_by_kind": per_car_s,
        **run,
        "raw_records_held": raw_rows,
        "raw_bytes": raw,
        "raw_bytes_per_record": round(raw / raw_rows, 1) if raw_rows else None,
        "raw_days_held": round(raw_days, 2),
        "raw_bytes_per_car_day": round(raw_per_car_day),
        "longterm_bytes": longterm,
        "longterm_page_bytes": longterm_pages,
        "folded_days": round(folded_days, 2),
        "longterm_bytes_per_car_day": (
            None if longterm_per_car_day is None else round(longterm_per_car_day)
        ),
        "district_units": DISTRICT_UNITS,
        "district_year_gb": None if year_gb is None else round(year_gb, 1),
        "district_year_gb_without_retention": round(
            DISTRICT_UNITS * raw_per_car_day * 365 / 1e9, 1
        ),
        "compact_estimate_bytes_per_car_day": round(compact / args.cars / raw_days),
    }


@contextlib.contextmanager
def _store(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(work / "bench.db")
        return
    from tests.fleet.pgcluster import throwaway_cluster

    with throwaway_cluster(durable=True) as cluster:
        yield cluster.create_database("storage")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/storage.py",
        description="Bytes per car-day of the fleet's store: the demo's traffic (captured "
        "from the real demo system) replayed through the store's ingest write over "
        "--days virtual days, retention run at the end of each day; prints "
        "raw_bytes_per_car_day, longterm_bytes_per_car_day and district_year_gb (10,525 "
        "units, the window's raw records plus a year of long-term).",
    )
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite", help="store")
    parser.add_argument("--cars", type=int, default=4, help="cars replayed (4: the demo's)")
    parser.add_argument(
        "--days", type=int, default=WINDOW_DAYS + 2, help="virtual days (window + 2 = 16)"
    )
    parser.add_argument(
        "--window-days", type=int, default=WINDOW_DAYS, help="retention window (14)"
    )
    parser.add_argument(
        "--capture-s", type=float, default=120.0, help="seconds of the real demo to capture"
    )
    parser.add_argument(
        "--capture", type=Path, help="a fleet.db captured before (skips running the demo)"
    )
    parser.add_argument(
        "--save-capture", type=Path, help="copy the demo's fleet.db here (for --capture)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the bench; print its figures."""
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        work = Path(tmp)
        path = args.capture or capture(args.capture_s, work / "demo")
        if args.save_capture is not None:
            shutil.copyfile(path, args.save_capture)
        with _store(args.db, work) as target:
            result = measure(args, target, path)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

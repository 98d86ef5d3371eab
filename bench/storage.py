"""Storage per car-day, measured (issue 18, item 2): the demo's traffic through the real
fleet store's ingest write, the visit derivation and retention (compaction, folding) on
a virtual clock; prints one JSON object.

    python bench/storage.py --capture CAPTURE.db --json                 # SQLite
    python bench/storage.py --capture CAPTURE.db --db postgres --json   # throwaway cluster

1. **Capture** (``--capture-s``, 1800 s): the demo runs for real (`hil_tests.system`: the
   fleet, the emulator's four cars of the demo building with their traffic, an agent
   polling them over Modbus TCP). What the fleet stored of its cars is the traffic mix
   at the demo's rates: every record, its kind, time and payload as the agent sent it.
   ``--capture FILE`` reuses a capture (the fleet.db of an earlier run, which
   ``--save-capture FILE`` keeps).

   Why half an hour: the replay repeats the capture, and compaction compresses each
   (unit, hour, kind) batch with zlib, which finds repeats only within its last 32 kB.
   A car sends about 0.67 car states a second of about 88 bytes each, so a 2-minute
   capture is about 7 kB of car states per car: an hour's batch holds 30 copies of it,
   each within reach of the one before, and zlib codes all but the first as
   back-references, bytes no real hour gives. A 30-minute capture is about 105 kB of
   car states per car, more than the window: the hour's two copies are out of each
   other's reach, and car states (most of the bytes) compress as a real hour's would.
   The small batches can still match their first half-hour: Counters and link status
   (one each per car every 30 s, about 5 kB a half-hour) and the time column.
2. **Replay on a virtual clock**: the capture, repeated end to end with its times moved
   on, fills ``--days`` (window + 2 = 16) days of ``--cars`` (4) cars, one agent per
   four cars, through `SqlStore.write` (the write the fleet's ingest committer makes:
   the same statements, (agent_id, seq) stored once, the derived tables and history).
   Every ``[retention] interval_s`` (3600, as serve runs it) of virtual time the visit
   derivation and a retention run follow, with the virtual time as ``now`` (explicit
   clocks, as everywhere in the fleet) and the config's defaults: ``compact_after_s``
   (3600: the records of each hour ended an hour ago move from ``records`` into their
   (unit, hour, kind) batch in ``record_batches``), ``window_days``, ``batch_records``. On
   PostgreSQL ``VACUUM records, record_batches`` follows each run: what autovacuum does
   in the real hour between two runs (compaction deletes most of ``records`` every hour;
   a batch rewritten by a later transaction of the same run leaves its old version in
   the day's partition), so that both reuse their pages as they would in service
   instead of growing for want of a vacuum the virtual clock leaves no time for. The
   last run is at the replay's very end (on the hour): ``records`` (the hot table) then
   holds the last hour of the window, 1/336 of it, uncompressed, and that hour is
   counted in the raw bytes (in service, between hourly runs, it holds one to two
   hours).
3. **Measure** the bytes of the tables and their indexes (SQLite: the dbstat table;
   PostgreSQL: pg_total_relation_size, of each partition of ``record_batches``, with
   TOAST): ``raw_bytes_per_car_day`` is the raw records (``records`` and
   ``record_batches`` with their indexes, the pages they take) per car per day of the
   window they hold (from the oldest raw record in either table to the end);
   ``longterm_bytes_per_car_day`` is what folding keeps (``unit_hours``,
   ``unit_keys``, ``records_kept``) per car per folded day: on SQLite the bytes in use
   of their pages, on PostgreSQL the live rows' bytes with their tuple and index
   overheads (a few cars' two folded days fill only a few pages of each table and
   index, so whole pages, ``longterm_page_bytes``, would measure the page size, and
   on PostgreSQL the row versions the hour rows' updates leave until autovacuum; a
   district's tables fill their pages as the raw tables do). ``district_year_gb``:
   10,525 units after a year: the window's raw records plus a year of long-term, in GB
   (10^9 bytes);
   ``district_year_gb_without_retention`` what a year of raw records takes when
   retention never runs (``interval_s = 0``: neither compacted nor folded), at
   ``uncompacted_bytes_per_record``: the pages of ``records`` per row just before the
   first compaction (its first hour, as ingest appended it; also given per car-day,
   ``uncompacted_bytes_per_car_day``, the raw figure before compaction was built).

   The end is on a day boundary, just after the oldest day's batches were folded: on
   PostgreSQL a day's partition is dropped only once its last hour is folded, so across
   a day the batches take up to one day's more pages than measured here (1/14); SQLite
   reuses the freed pages at once.

Also reported: the capture's rate (records per car per second, by kind); retention's
counts over the replay (records compacted, folded, deleted; batches written; partitions
dropped; ``failed_agents`` and ``damaged_batches``, which retention logs and skips: 0 in
a sound run, else records stayed uncompacted); the records held in ``records``
(``hot_records_held``) and in batches (``batched_records_held``, ``batches_held``) with
their bytes (``hot_bytes``, ``batch_bytes``); the raw bytes per record.
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
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: the repo's packages and test helpers

from fleet.config import RetentionConfig  # noqa: E402
from fleet.reports.maintenance_config import MaintenanceConfig  # noqa: E402
from fleet.reports.visits import derive_visits  # noqa: E402
from fleet.store.base import BatchOp, ControllerIdentity, HelloOp, UnitClaim  # noqa: E402
from fleet.store.open import open_store  # noqa: E402
from fleet.store.postgres import PostgresStore  # noqa: E402
from fleet.store.retention import Retention  # noqa: E402
from fleet.store.sql import SqlStore, from_us, to_us  # noqa: E402
from protos.liftwatch.v1 import records_pb2  # noqa: E402

DISTRICT_UNITS = 10_525
WINDOW_DAYS = RetentionConfig().window_days
DAY_US = 86_400_000_000
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
LONGTERM_TABLES = ("unit_hours", "unit_keys", "records_kept")
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
    config: RetentionConfig,
) -> dict[str, Any]:
    """Fill ``days`` days of ``n_cars`` cars with the captured records; derive and run
    retention every ``config.interval_s``. Returns the run's counts and timings, and the
    uncompacted cost of a record (``records`` before the first compaction)."""
    agents = _agents(store, n_cars)
    span_us = int(span_s * 1e6)
    plan = _plan(agents, cars, span_us)
    seqs = dict.fromkeys(agents, 0)
    rules = MaintenanceConfig().verdicts
    interval_us = int(config.interval_s * 1e6)
    written = 0
    timings = dict.fromkeys(("ingest_s", "derive_s", "retention_s"), 0.0)
    totals: Counter[str] = Counter()
    uncompacted: tuple[int, int] | None = None
    longterm_by_day: list[int] = []
    for minute in range(days * 24 * 60):
        lo = to_us(START) + minute * 60_000_000
        hi = lo + 60_000_000
        # One minute of every car at a time, as one group of batches (one per agent).
        ops = _minute(plan, span_us, seqs, lo, hi)
        if ops:
            started = time.perf_counter()
            store.write([BatchOp(a, tuple(r)) for a, r in sorted(ops.items())], from_us(hi))
            timings["ingest_s"] += time.perf_counter() - started
            written += sum(len(r) for r in ops.values())
        if (hi - to_us(START)) % interval_us:
            continue
        started = time.perf_counter()
        derive_visits(store, rules, from_us(hi))
        timings["derive_s"] += time.perf_counter() - started
        if uncompacted is None:
            # Nothing compacted yet: ``records`` holds rows only as ingest appended them.
            uncompacted = (table_bytes(store, ("records",)), _count(store, "records"))
        started = time.perf_counter()
        totals.update(_retention_run(store, hi, config))
        timings["retention_s"] += time.perf_counter() - started
        since = hi - to_us(START)
        if since % DAY_US == 0 and since > config.window_days * DAY_US:
            # Each day's end once folding has begun: what a lift keeps for life grows by
            # the difference (`measure`'s steady-state figure).
            longterm_by_day.append(used_bytes(store, LONGTERM_TABLES))
    assert uncompacted is not None, "the replay is shorter than one retention interval"
    return {
        "records_written": written,
        **{f"records_{k}": totals[k] for k in ("compacted", "folded", "deleted")},
        "batches_written": totals["batches"],
        "partitions_dropped": totals["partitions_dropped"],
        # Skipped and logged by retention: any here would leave records uncompacted.
        "failed_agents": totals["failed_agents"],
        "damaged_batches": totals["damaged_batches"],
        "retention_runs": totals["runs"],
        **{k: round(v, 1) for k, v in timings.items()},
        "longterm_by_day": longterm_by_day,
        "uncompacted_bytes": uncompacted[0],
        "uncompacted_records": uncompacted[1],
    }


def _agents(store: SqlStore, n_cars: int) -> dict[str, list[str]]:
    """Register one agent per four cars (its Hello); agent id -> its units."""
    agents: dict[str, list[str]] = defaultdict(list)
    for n in range(n_cars):
        agents[f"bench-agent-{n // CARS_PER_AGENT}"].append(f"bench-car-{n}")
    for agent_id, units in agents.items():
        claims = tuple(UnitClaim(u, ControllerIdentity()) for u in units)
        store.write([HelloOp(agent_id, "bench", claims)], START)
    return agents


# unit -> (its agent, the captured stream it replays, the stream's shift in µs)
_Plan = dict[str, tuple[str, list[tuple[int, str, bytes]], int]]


def _plan(
    agents: dict[str, list[str]], cars: dict[str, list[tuple[int, str, bytes]]], span_us: int
) -> _Plan:
    """Each car replays one captured car's stream, shifted a little so cars differ."""
    sources = sorted(cars)
    return {
        unit: (agent_id, cars[sources[i % len(sources)]], (i * 7_919_000) % span_us)
        for agent_id, units in agents.items()
        for i, unit in enumerate(units)
    }


def _minute(
    plan: _Plan, span_us: int, seqs: dict[str, int], lo: int, hi: int
) -> dict[str, list[records_pb2.Record]]:
    """Every car's records of [lo, hi) as each agent sends them: per agent, numbered on
    from ``seqs``, with the car's unit, the replayed time and (events) a fresh id."""
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
    return ops


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


def _retention_run(store: SqlStore, now_us: int, config: RetentionConfig) -> Counter[str]:
    """One retention run at ``now_us`` as serve makes it (lease, compaction, folding,
    partitions dropped), with ``config``'s window, compaction age and batch size; on
    PostgreSQL the VACUUM autovacuum would make before the next run."""
    retention = Retention(store)
    held = retention.acquire("bench", now_us, config.lease_s)
    assert held is not None, "nobody else runs retention on the bench's store"
    result = retention.run(
        held,
        now_us,
        config.window_days * DAY_US,
        config.batch_records,
        compact_after_us=int(config.compact_after_s * 1e6),
    )
    retention.release(held)
    if isinstance(store, PostgresStore):
        store._execute("VACUUM records, record_batches")
    return Counter(
        runs=1,
        compacted=result.compacted,
        batches=result.batches,
        folded=result.folded,
        deleted=result.deleted,
        partitions_dropped=result.partitions_dropped,
        failed_agents=result.failed_agents,
        damaged_batches=result.damaged_batches,
    )


# -- 3. measure -------------------------------------------------------------------------


def table_bytes(store: SqlStore, tables: tuple[str, ...]) -> int:
    """Bytes of the pages ``tables`` take with their indexes (SQLite: dbstat; PostgreSQL:
    pg_total_relation_size, TOAST included, summed over a partitioned table's
    partitions: the parent itself has no storage)."""
    if isinstance(store, PostgresStore):
        return sum(
            int(
                store._execute(
                    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                    "WHERE c.oid = ?::regclass "
                    "OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = ?::regclass)",
                    (t, t),
                ).fetchone()[0]
            )
            for t in tables
        )
    return _dbstat(store, tables)[0]


def used_bytes(store: SqlStore, tables: tuple[str, ...]) -> int:
    """Bytes in use of ``tables`` and their indexes: SQLite, the pages less their unused
    bytes; PostgreSQL, the live rows counted (`_pg_row_bytes`)."""
    if isinstance(store, PostgresStore):
        return sum(_pg_row_bytes(store, t) for t in tables)
    return _dbstat(store, tables)[1]


def _dbstat(store: SqlStore, tables: tuple[str, ...]) -> tuple[int, int]:
    """SQLite: the bytes of the pages of ``tables`` and their indexes (overflow pages
    included), and of those the bytes in use."""
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
    "unit_hours": (("unit_no", "hour_us"),),
    "unit_keys": (("unit_no",), ("unit_id",)),
    "records_kept": (("agent_id", "seq"), ("unit_id", "kind", "time_us")),
}


def _pg_row_bytes(store: SqlStore, table: str) -> int:
    """PostgreSQL: the bytes ``table``'s live rows take, counted row by row: each row as
    a tuple on its page (pg_column_size of the whole row, which already holds the 24-byte
    tuple header, rounded up to 8 bytes) plus its 4-byte line pointer, and per index
    entry the 8-byte index tuple header and its key columns, rounded up to 8, plus a line
    pointer. An estimate of what a district's full pages hold: a few cars' tables take
    whole 8 kB pages and keep the row versions their updates left until autovacuum runs.
    (Before 2026-12-07 this added 28 bytes a row on top of pg_column_size, counting the
    tuple header twice: 576 bytes per car-day too many long-term.)"""
    keys = _INDEX_KEYS[table]
    sizes = ", ".join(
        "COALESCE(SUM((8 + "
        + " + ".join(f"pg_column_size(t.{c})" for c in key)
        + " + 7) / 8 * 8 + 4), 0)"
        for key in keys
    )
    row = store._execute(
        "SELECT COUNT(*), COALESCE(SUM((pg_column_size(t.*) + 7) / 8 * 8 + 4), 0)"
        f"{', ' if sizes else ''}{sizes} FROM {table} t"
    ).fetchone()
    return sum(int(v) for v in row[1:])


def _count(store: SqlStore, table: str) -> int:
    return int(store._execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def raw_held(store: SqlStore) -> dict[str, Any]:
    """The raw records the store holds: in ``records`` (hot) and in batches, their bytes,
    and the oldest one's time (µs; None: none)."""
    batched, batches, oldest_batch = store._execute(
        "SELECT COALESCE(SUM(records), 0), COUNT(*), MIN(start_us) FROM record_batches"
    ).fetchone()
    oldest_hot = store._execute("SELECT MIN(time_us) FROM records").fetchone()[0]
    found = [int(t) for t in (oldest_hot, oldest_batch) if t is not None]
    return {
        "hot_records_held": _count(store, "records"),
        "batched_records_held": int(batched),
        "batches_held": int(batches),
        "hot_bytes": table_bytes(store, ("records",)),
        "batch_bytes": table_bytes(store, ("record_batches",)),
        "oldest_us": min(found) if found else None,
    }


def measure(args: argparse.Namespace, target: str, capture_path: Path) -> dict[str, Any]:
    """The whole bench on the store at ``target``."""
    cars, span_s = read_capture(capture_path)
    kinds: Counter[str] = Counter(k for stream in cars.values() for _, k, _ in stream)
    per_car_s = {k: round(n / len(cars) / span_s, 4) for k, n in sorted(kinds.items())}
    config = replace(RetentionConfig(), window_days=args.window_days)
    store = open_store(target)
    try:
        run = replay(store, cars, span_s, args.cars, args.days, config)
        held = raw_held(store)
        longterm_pages = table_bytes(store, LONGTERM_TABLES)
        longterm = used_bytes(store, LONGTERM_TABLES)
    finally:
        store.close()
    if held["oldest_us"] is None:
        raise SystemExit("no raw records held at the end: nothing to measure")
    end_us = to_us(START) + args.days * DAY_US
    raw_days = (end_us - held["oldest_us"]) / DAY_US
    folded_days = (held["oldest_us"] - to_us(START)) / DAY_US
    raw = held["hot_bytes"] + held["batch_bytes"]
    raw_rows = held["hot_records_held"] + held["batched_records_held"]
    raw_per_car_day = raw / args.cars / raw_days
    longterm_per_car_day = longterm / args.cars / folded_days if folded_days > 0 else None
    # What each further folded day adds: the all-in figure above also holds what a unit
    # keeps once (its newest car state and link reading, its first counters, its
    # controller info), which two folded days cannot amortize as a lift's life does.
    by_day = run.pop("longterm_by_day")
    steady = (by_day[-1] - by_day[0]) / args.cars / (len(by_day) - 1) if len(by_day) > 1 else None
    records_per_car_day = run["records_written"] / args.cars / args.days
    uncompacted_per_record = run["uncompacted_bytes"] / run["uncompacted_records"]
    year_gb = None
    if longterm_per_car_day is not None:
        # A year's long-term: what each day adds, plus what a unit keeps once.
        daily = steady if steady is not None else longterm_per_car_day
        once = max(0.0, longterm / args.cars - daily * folded_days)
        year_gb = DISTRICT_UNITS * (raw_per_car_day * args.window_days + daily * 365 + once) / 1e9
    del held["oldest_us"]
    return {
        "db": args.db,
        "cars": args.cars,
        "days": args.days,
        "window_days": args.window_days,
        "compact_after_s": config.compact_after_s,
        "retention_interval_s": config.interval_s,
        "capture_s": round(span_s, 1),
        "capture_cars": len(cars),
        "records_per_car_s": round(sum(kinds.values()) / len(cars) / span_s, 4),
        "records_per_car_s_by_kind": per_car_s,
        **run,
        **held,
        "raw_bytes": raw,
        "raw_bytes_per_record": round(raw / raw_rows, 1) if raw_rows else None,
        "raw_days_held": round(raw_days, 2),
        "raw_bytes_per_car_day": round(raw_per_car_day),
        "uncompacted_bytes_per_record": round(uncompacted_per_record, 1),
        "uncompacted_bytes_per_car_day": round(uncompacted_per_record * records_per_car_day),
        "longterm_bytes": longterm,
        "longterm_page_bytes": longterm_pages,
        "folded_days": round(folded_days, 2),
        "longterm_steady_bytes_per_car_day": None if steady is None else round(steady),
        "longterm_bytes_per_car_day": (
            None if longterm_per_car_day is None else round(longterm_per_car_day)
        ),
        "district_units": DISTRICT_UNITS,
        "district_year_gb": None if year_gb is None else round(year_gb, 1),
        "district_year_gb_without_retention": round(
            DISTRICT_UNITS * uncompacted_per_record * records_per_car_day * 365 / 1e9, 1
        ),
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
        "--days virtual days, the visit derivation and retention (compaction into "
        "hourly batches, folding) run every hour as serve runs them; prints "
        "raw_bytes_per_car_day (rows and batches), longterm_bytes_per_car_day and "
        "district_year_gb (10,525 units, the window's raw records plus a year of "
        "long-term).",
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
        "--capture-s",
        type=float,
        default=1800.0,
        help="seconds of the real demo to capture (1800: more than zlib's window per "
        "unit-hour batch, see the module docstring)",
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

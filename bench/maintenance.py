"""Maintenance truth on a synthetic month: records judged against the controllers' data.

Builds a month of maintenance over units of the district register (../shared/data/):
for each unit four records (TSG T5002 types), each one of

- a **real** visit (inspection mode for at least the type's minimum, with runs at
  inspection speed and door cycles, inside watched normal service): expected supported;
- a **short** visit (under 40 % of the minimum, watched throughout): too_short;
- an **invented** visit (the lift watched in normal service all through): contradicted;
- a **gap**: normal service, but the agent read nothing for 10-20 minutes inside the
  claimed window: cannot_tell (a gap in watching anywhere);

and units that are **unwatched** (no agent) or **blind** (their profile cannot see the
service mode: Hello lists MODE_CHANGE as undetectable, car states say mode UNKNOWN):
cannot_tell.

Through the real fleet: the car-state, counters and link-status records are generated
directly (not by emulating hundreds of controllers for a month) into one agent outbox per
machine room (four units), and the agent's own uplink (`agent.uplink.Uplink`) streams each
outbox to a `liftwatch-fleet serve` process over gRPC: its gateway, group commit and store.
The register is the fleet's `[registry] csv`. Then each contractor's records go in as a
CSV through `liftwatch-fleet maintenance records import` (with a few bad rows and rows for
another contractor's units, which must be refused by line), `maintenance audit` derives
the visits and judges every record, and `maintenance records list --json` is compared
with the generator's ground truth. Prints one JSON object:
``{"records", "wrong_verdicts", "verdicts": {"supported", "too_short", "contradicted",
"cannot_tell"}, ...}``; exit status 1 when a verdict is wrong or a bad row was taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from agent.outbox import Outbox
from agent.uplink import Uplink
from hil_tests.processes import start
from protos.liftwatch.v1 import gateway_pb2, records_pb2

M = records_pb2
ROOT = Path(__file__).resolve().parent.parent
REGISTER = ROOT.parent / "shared" / "data" / "units-sample.csv"
SITE = zoneinfo.ZoneInfo("Asia/Shanghai")
MINUTES = {"half_monthly": 45, "quarterly": 60, "half_yearly": 90, "annual": 120}
KINDS = ("half_monthly", "half_monthly", "half_monthly", "quarterly", "half_yearly", "annual")
EXPECTED = {
    "real": "supported",
    "short": "too_short",
    "invented": "contradicted",
    "gap": "cannot_tell",
    "unwatched": "cannot_tell",
    "blind": "cannot_tell",
}
STATE_EVERY_S = 30  # an agent sends at least every 10 s; 30 stays inside the 60 s watch gap
COUNTERS_EVERY_S = 120
LINK_EVERY_S = 300
UNITS_PER_AGENT = 4
# Every wire event type (the enum's values are its members; typed as such for extend).
ALL_TYPES = cast("tuple[records_pb2.EventType, ...]", tuple(v for v in M.EventType.values() if v))


@dataclass
class Unit:
    """One unit of the synthetic month and what its agent will send."""

    unit_id: str
    contractor: str
    kind: str  # watched, unwatched, blind
    records: list[records_pb2.Record] = field(default_factory=list)


@dataclass(frozen=True)
class Claim:
    """A record the contractor files, and the verdict the generator knows it deserves."""

    unit_id: str
    contractor: str
    kind: str
    start: dt.datetime
    end: dt.datetime
    scenario: str


def _record(unit: Unit, at: dt.datetime) -> records_pb2.Record:
    record = records_pb2.Record(unit_id=unit.unit_id)
    record.time.FromDatetime(at)
    unit.records.append(record)
    return record


def _play(
    unit: Unit,
    begin: dt.datetime,
    end: dt.datetime,
    visit: tuple[dt.datetime, dt.datetime] | None,
    gap: tuple[dt.datetime, dt.datetime] | None,
) -> None:
    """Records of ``unit`` from ``begin`` to ``end``: normal service, inspection during
    ``visit`` (a run and a door cycle every few samples), nothing during ``gap``."""
    blind = unit.kind == "blind"
    at = begin
    step = 0
    while at < end:
        step += 1
        if gap is not None and gap[0] <= at < gap[1]:
            at += dt.timedelta(seconds=STATE_EVERY_S)
            continue
        inspecting = visit is not None and visit[0] <= at < visit[1]
        state = _record(unit, at).car_state
        if blind:
            state.mode = M.SERVICE_MODE_UNKNOWN
        elif inspecting:
            state.mode = M.SERVICE_MODE_INSPECTION
        else:
            state.mode = M.SERVICE_MODE_NORMAL
        phase = step % 4
        state.moving = phase == 1
        state.speed_mm_s = (300 if inspecting else 1600) if state.moving else 0
        state.floor = 1 + step // 4 % 8
        state.door = M.DOOR_STATE_OPEN if phase == 3 else M.DOOR_STATE_CLOSED
        seconds = int((at - begin).total_seconds())
        if seconds % COUNTERS_EVERY_S == 0:
            _record(unit, at).counters.trips = 50_000 + step
        if seconds % LINK_EVERY_S == 0:
            _record(unit, at).link_status.up = True
        at += dt.timedelta(seconds=STATE_EVERY_S)


def build(units_n: int, month: dt.datetime, rng: random.Random) -> tuple[list[Unit], list[Claim]]:
    """The units (from the register), their records and the claims with ground truth."""
    with REGISTER.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if r["maintenance_contractor"]][:units_n]
    units: list[Unit] = []
    claims: list[Claim] = []
    for index, row in enumerate(rows):
        kind = "unwatched" if index % 10 == 9 else "blind" if index % 20 == 4 else "watched"
        unit = Unit(row["registration_code"], row["maintenance_contractor"], kind)
        units.append(unit)
        for k in range(4):
            day = month + dt.timedelta(days=1 + 7 * k + rng.randrange(5))
            local = dt.datetime.combine(day.date(), dt.time(9 + rng.randrange(7)), SITE)
            record_kind = rng.choice(KINDS)
            minimum = MINUTES[record_kind]
            claimed = dt.timedelta(minutes=minimum + rng.randrange(0, 31, 5))
            start_at = local.astimezone(dt.UTC)
            end_at = start_at + claimed
            scenario = (
                kind if kind != "watched" else rng.choice(("real", "short", "invented", "gap"))
            )
            visit = gap = None
            if scenario == "real":
                begin = start_at + dt.timedelta(minutes=rng.randrange(-15, 11))
                visit = (begin, begin + dt.timedelta(minutes=minimum + rng.randrange(5, 31)))
            elif scenario == "short":
                length = max(3, int(minimum * rng.uniform(0.1, 0.4)))
                begin = start_at + dt.timedelta(minutes=rng.randrange(0, 20))
                visit = (begin, begin + dt.timedelta(minutes=length))
            elif scenario == "gap":
                begin = start_at + dt.timedelta(minutes=rng.randrange(5, 30))
                gap = (begin, begin + dt.timedelta(minutes=rng.randrange(10, 21)))
            if kind != "unwatched":
                _play(
                    unit,
                    start_at - dt.timedelta(hours=1),
                    end_at + dt.timedelta(hours=1),
                    visit,
                    gap,
                )
            claims.append(
                Claim(unit.unit_id, unit.contractor, record_kind, start_at, end_at, scenario)
            )
    return units, claims


def _hello(agent_id: str, units: list[Unit]) -> gateway_pb2.Hello:
    hello = gateway_pb2.Hello(agent_id=agent_id, agent_version="bench")
    for unit in units:
        described = hello.units.add(unit_id=unit.unit_id)
        described.controller.profile = "bench"
        if unit.kind == "blind":
            described.detectable.extend(t for t in ALL_TYPES if t != M.EVENT_TYPE_MODE_CHANGE)
            described.undetectable.append(M.EVENT_TYPE_MODE_CHANGE)
        else:
            described.detectable.extend(ALL_TYPES)
    return hello


async def _drain(outbox_path: Path, hello: gateway_pb2.Hello, endpoint: str) -> None:
    box = Outbox(outbox_path)
    uplink = Uplink(box, lambda: hello, [endpoint], max_batch_records=500)
    task = asyncio.create_task(uplink.run())
    try:
        while box.depth():  # noqa: ASYNC110  (the outbox has no change notification)
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        box.close()


async def ingest(units: list[Unit], work: Path, register: Path, parallel: int) -> int:
    """Stream every watched unit's records through a real fleet; returns how many."""
    db = work / "fleet.db"
    config = work / "fleet.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:0"\n[store]\npath = "{db}"\n'
        f'[registry]\ncsv = "{register}"\n[maintenance.verdicts]\nderive_interval_s = 0\n'
    )
    fleet = await start("fleet", "fleet", ["serve", "--config", str(config)], work)
    sent = 0
    try:
        endpoint = str(fleet.ready["grpc"])
        watched = [u for u in units if u.kind != "unwatched"]
        rooms = [watched[i : i + UNITS_PER_AGENT] for i in range(0, len(watched), UNITS_PER_AGENT)]
        jobs = []
        for number, room in enumerate(rooms):
            path = work / f"outbox-{number}.db"
            box = Outbox(path, wall=lambda: 0.0)
            records = sorted(
                (r for u in room for r in u.records), key=lambda r: (r.time.seconds, r.time.nanos)
            )
            for chunk in range(0, len(records), 5000):
                box.append(records[chunk : chunk + 5000])
            sent += len(records)
            box.close()
            jobs.append((path, _hello(f"bench-room-{number}", room)))
        for first in range(0, len(jobs), parallel):
            await asyncio.gather(
                *(_drain(p, h, endpoint) for p, h in jobs[first : first + parallel])
            )
    finally:
        await fleet.stop()
    return sent


def _cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fleet", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"liftwatch-fleet {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _site(moment: dt.datetime) -> tuple[str, str]:
    local = moment.astimezone(SITE)
    return local.date().isoformat(), local.strftime("%H:%M")


def file_records(claims: list[Claim], work: Path, db: Path) -> tuple[int, int]:
    """Each contractor's CSV through ``maintenance records import``, with bad rows and a
    row for another contractor's unit: (rows refused, refused rows that were bad)."""
    by_contractor: dict[str, list[Claim]] = {}
    for claim in claims:
        by_contractor.setdefault(claim.contractor, []).append(claim)
    names = sorted(by_contractor)
    refused = planted = 0
    for index, name in enumerate(names):
        path = work / f"records-{index}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(["registration_code", "date", "start", "end", "type", "workers"])
            for claim in by_contractor[name]:
                day, begin = _site(claim.start)
                _, end = _site(claim.end)
                out.writerow([claim.unit_id, day, begin, end, claim.kind, "张三;李四"])
            other = by_contractor[names[(index + 1) % len(names)]][0]
            if len(names) > 1:
                out.writerow([other.unit_id, "2026-01-01", "09:00", "10:00", "annual", "x"])
                planted += 1
            out.writerow([claim.unit_id, "2026-01-01", "09:00", "08:00", "annual", "x"])
            out.writerow([claim.unit_id, "2026-01-01", "09:00", "10:00", "monthly", "x"])
            planted += 2
        result = json.loads(
            _cli("maintenance", "records", "import", str(path), "--contractor", name,
                 "--db", str(db), "--json")
        )  # fmt: skip
        refused += len(result["problems"])
    return refused, planted


def run(units_n: int, seed: int, parallel: int, keep: Path | None = None) -> dict[str, object]:
    """Build, ingest, file and judge the synthetic month; compare with ground truth."""
    rng = random.Random(seed)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today - dt.timedelta(days=35)
    units, claims = build(units_n, month, rng)
    with tempfile.TemporaryDirectory(prefix="bench-maintenance-") as tmp:
        work = Path(tmp) if keep is None else keep
        work.mkdir(parents=True, exist_ok=True)
        register = work / "register.csv"
        with REGISTER.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
        wanted = {u.unit_id for u in units}
        with register.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([rows[0], *[r for r in rows[1:] if r[0] in wanted]])
        began = time.perf_counter()
        sent = asyncio.run(ingest(units, work, register, parallel))
        ingest_s = time.perf_counter() - began
        db = work / "fleet.db"
        began = time.perf_counter()
        refused, planted = file_records(claims, work, db)
        audit = json.loads(_cli("maintenance", "audit", "--db", str(db), "--json"))
        judge_s = time.perf_counter() - began
        listed = json.loads(
            _cli("maintenance", "records", "list", "--db", str(db), "--json", "--limit", "0")
        )["records"]
    truth = {
        (c.unit_id, c.kind, c.start.isoformat(timespec="milliseconds").replace("+00:00", "Z")): c
        for c in claims
    }
    wrong: list[dict[str, object]] = []
    verdicts: Counter[str] = Counter()
    for record in listed:
        claim = truth.get((record["unit_id"], record["kind"], record["start"]))
        verdicts[record["verdict"]] += 1
        if claim is None or EXPECTED[claim.scenario] != record["verdict"]:
            wrong.append(
                {
                    "unit_id": record["unit_id"],
                    "start": record["start"],
                    "scenario": None if claim is None else claim.scenario,
                    "verdict": record["verdict"],
                    "evidence": record["evidence"],
                }
            )
    missing = len(truth) - len(listed)
    return {
        "records": len(listed),
        "wrong_verdicts": len(wrong) + max(missing, 0),
        "verdicts": {
            v: verdicts[v] for v in ("supported", "too_short", "contradicted", "cannot_tell")
        },
        "scenarios": dict(Counter(c.scenario for c in claims)),
        "units": len(units),
        "agents": (sum(u.kind != "unwatched" for u in units) + UNITS_PER_AGENT - 1)
        // UNITS_PER_AGENT,
        "fleet_records_sent": sent,
        "rows_refused": refused,
        "bad_rows_planted": planted,
        "audit_changed": audit["changed"],
        "ingest_s": round(ingest_s, 1),
        "import_and_judge_s": round(judge_s, 1),
        "wrong": wrong[:10],
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON object; 1 when a verdict is wrong."""
    parser = argparse.ArgumentParser(
        description="Synthetic month of maintenance records judged through the real fleet "
        "(see the module docstring): prints records, wrong_verdicts and the verdict counts."
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--units", type=int, default=300, help="units (4 records each; 300)")
    parser.add_argument("--seed", type=int, default=17, help="random seed (17)")
    parser.add_argument("--parallel", type=int, default=8, help="agents streaming at once (8)")
    parser.add_argument(
        "--keep", type=Path, help="work in this directory and keep it (fleet.db, CSVs, logs)"
    )
    args = parser.parse_args(argv)
    result = run(args.units, args.seed, args.parallel, args.keep)
    print(json.dumps(result, ensure_ascii=False))
    ok = result["wrong_verdicts"] == 0 and result["rows_refused"] == result["bad_rows_planted"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Maintenance truth (issue 17, items 1-3): visits derived from stored car-state records,
records taken by line, and the verdicts, on both stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import io
import json
import zoneinfo
from collections.abc import Iterator

import pytest

from fleet.history.verify import verify_store
from fleet.read.maintenance import RecordView, last_supported_visit, verdict_shares
from fleet.read.scope import EVERY_UNIT, Scope
from fleet.reports.compute import scorecard_report
from fleet.reports.fault_rate import Period
from fleet.reports.maintenance import parse_records, take_records
from fleet.reports.maintenance_config import MaintenanceConfig
from fleet.reports.visits import derive_visits
from fleet.store.base import BatchOp, ControllerIdentity, HelloOp, RegisterEntry, UnitClaim
from fleet.store.maintenance import HEALTH_TERM
from fleet.store.open import open_store
from fleet.store.sql import RECORDS_HEALTH_INDEX, SqlStore
from fleet.store.sqlite import SqliteStore
from fleet.units.coverage import CoverageConfig
from protos.liftwatch.v1 import records_pb2

M = records_pb2
DAY = dt.datetime(2026, 3, 2, 0, 0, tzinfo=dt.UTC)
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
CONFIG = MaintenanceConfig()


class Feed:
    """Records of one agent, numbered in order, as the agent would send them."""

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id
        self.seq = 0
        self.records: list[records_pb2.Record] = []

    def _new(self, unit_id: str, at: dt.datetime) -> records_pb2.Record:
        self.seq += 1
        record = records_pb2.Record(seq=self.seq, unit_id=unit_id)
        record.time.FromDatetime(at)
        self.records.append(record)
        return record

    def play(
        self,
        unit_id: str,
        start: dt.datetime,
        minutes: float,
        mode: int,
        *,
        every_s: int = 10,
        moving_every: int = 0,
    ) -> dt.datetime:
        """Car states every ``every_s`` for ``minutes`` in ``mode`` (in inspection with a
        run and a door cycle every ``moving_every`` samples), counters and link status each
        minute; returns the end."""
        steps = int(minutes * 60 // every_s)
        for i in range(steps):
            at = start + dt.timedelta(seconds=i * every_s)
            state = self._new(unit_id, at).car_state
            state.mode = mode  # type: ignore[assignment]
            state.floor = 1 + (i // max(moving_every, 1)) % 5 if moving_every else 1
            phase = i % moving_every if moving_every else 1
            state.moving = moving_every > 0 and phase == 0
            state.door = M.DOOR_STATE_OPEN if moving_every and phase == 2 else M.DOOR_STATE_CLOSED
            if (i * every_s) % 60 == 0:
                self._new(unit_id, at).counters.trips = 1000 + i
                self._new(unit_id, at).link_status.up = True
        return start + dt.timedelta(seconds=steps * every_s)

    def send(self, store: SqlStore) -> None:
        """Commit everything not sent yet through the store's ingest write."""
        store.write([BatchOp(self.agent_id, tuple(self.records))], DAY + dt.timedelta(days=30))
        self.records = []


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    opened = open_store(store_target)
    opened.upsert_register(
        [RegisterEntry(u, contractor="C1") for u in ("U1", "U2", "U3", "BLIND")]
        + [RegisterEntry("OTHER", contractor="C2")]
    )
    mode = M.EVENT_TYPE_MODE_CHANGE
    claims = (
        UnitClaim("U1", ControllerIdentity(), detectable=(mode,)),
        UnitClaim("U2", ControllerIdentity(), detectable=(mode,)),
        UnitClaim("U3", ControllerIdentity(), detectable=(mode,)),
        UnitClaim("BLIND", ControllerIdentity(), undetectable=(mode,)),
    )
    opened.write([HelloOp("A1", "1.0", claims)], DAY)
    yield opened
    opened.close()


def test_a_visit_is_derived_once_whatever_the_split(store: SqlStore) -> None:
    feed = Feed("A1")
    at = feed.play("U1", DAY, 20, M.SERVICE_MODE_NORMAL)
    at = feed.play("U1", at, 10, M.SERVICE_MODE_STOPPED)
    middle = feed.play("U1", at, 25, M.SERVICE_MODE_INSPECTION, moving_every=6)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, DAY)
    (open_visit,) = store.visits(unit_id="U1")
    assert open_visit.end_us is None  # still going on
    at = feed.play("U1", middle, 20, M.SERVICE_MODE_INSPECTION, moving_every=6)
    end = feed.play("U1", at, 20, M.SERVICE_MODE_NORMAL)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, DAY)
    derive_visits(store, CONFIG.verdicts, DAY)  # nothing new: nothing changes
    (visit,) = store.visits(unit_id="U1")
    assert visit.id == open_visit.id
    assert visit.mode == "inspection"
    assert visit.duration_s == pytest.approx(55 * 60)
    assert visit.unwatched_s == 0
    assert visit.inspection_runs == 45 * 6 // 6
    assert visit.door_cycles == 45
    assert visit.landings_visited == 5
    assert end > at
    kinds = [row.kind for row in store.history("U1")[0]]
    assert kinds.count("visit") == 1
    assert verify_store(store, "U1").problems == ()

    # The same records in one go, on another unit: the same visit.
    again = Feed("A2")
    at = again.play("U2", DAY, 20, M.SERVICE_MODE_NORMAL)
    at = again.play("U2", at, 10, M.SERVICE_MODE_STOPPED)
    at = again.play("U2", at, 45, M.SERVICE_MODE_INSPECTION, moving_every=6)
    again.play("U2", at, 20, M.SERVICE_MODE_NORMAL)
    again.send(store)
    derive_visits(store, CONFIG.verdicts, DAY)
    (other,) = store.visits(unit_id="U2")
    fields = ("duration_s", "mode", "inspection_runs", "landings_visited", "door_cycles")
    assert [getattr(other, f) for f in fields] == [getattr(visit, f) for f in fields]


def _site(text: str) -> str:
    """A site wall-clock time HH:MM of ``DAY``-relative UTC ``text``."""
    moment = dt.datetime.fromisoformat(f"2026-03-02T{text}+00:00").astimezone(SHANGHAI)
    return moment.strftime("%H:%M")


def test_each_record_gets_the_verdict_its_data_gives(store: SqlStore) -> None:
    feed = Feed("A1")
    # U1: a real 50-minute visit 02:00-02:50, and normal service 06:00-09:00.
    at = feed.play("U1", DAY + dt.timedelta(hours=1), 60, M.SERVICE_MODE_NORMAL)
    at = feed.play("U1", at, 50, M.SERVICE_MODE_INSPECTION, moving_every=6)
    feed.play("U1", at, 70, M.SERVICE_MODE_NORMAL)
    feed.play("U1", DAY + dt.timedelta(hours=6), 180, M.SERVICE_MODE_NORMAL)
    # U2: a 10-minute visit 02:00-02:10 inside watched normal service.
    at = feed.play("U2", DAY + dt.timedelta(hours=1), 60, M.SERVICE_MODE_NORMAL)
    at = feed.play("U2", at, 10, M.SERVICE_MODE_INSPECTION, moving_every=6)
    feed.play("U2", at, 110, M.SERVICE_MODE_NORMAL)
    # U3: watched 06:00-06:40 and 07:30-09:00: a 50-minute silence.
    feed.play("U3", DAY + dt.timedelta(hours=6), 40, M.SERVICE_MODE_NORMAL)
    feed.play("U3", DAY + dt.timedelta(hours=7, minutes=30), 90, M.SERVICE_MODE_NORMAL)
    # BLIND: its profile cannot see the mode.
    feed.play("BLIND", DAY + dt.timedelta(hours=6), 180, M.SERVICE_MODE_UNKNOWN)
    feed.send(store)
    derive_visits(store, CONFIG.verdicts, DAY)
    csv_text = (
        "unit_id,date,start,end,type,workers\n"
        f"U1,2026-03-02,{_site('02:05')},{_site('02:45')},half_monthly,张三\n"
        f"U2,2026-03-02,{_site('02:00')},{_site('02:50')},quarterly,李四\n"
        "U1,2026-03-02,07:00+00:00,08:00+00:00,半月,王五\n"
        f"U3,2026-03-02,{_site('07:00')},{_site('08:00')},half_monthly,赵六\n"
        f"BLIND,2026-03-02,{_site('07:00')},{_site('08:00')},annual,钱七\n"
        f"OTHER,2026-03-02,{_site('07:00')},{_site('08:00')},annual,孙八\n"
        "U1,2026-03-02,25:00,26:00,annual,x\n"
        "U1,2026-03-02,09:00,08:00,annual,x\n"
        "U1,2026-03-02,09:00,10:00,monthly,x\n"
        "NOPE,2026-03-02,09:00,10:00,annual,x\n"
    )
    found, problems = parse_records(io.StringIO(csv_text), "t.csv", SHANGHAI)
    result = take_records(
        store,
        found,
        problems,
        contractor="C1",
        uploaded_by="c1-user",
        source="csv",
        now=DAY + dt.timedelta(days=1),
        config=CONFIG,
    )
    assert [(p.line, p.reason.split(":")[0]) for p in result.problems] == [
        (7, "unit 'OTHER' unknown (not among C1's units)"),
        (8, "cannot read the time"),
        (9, "end 2026-03-02T00"),
        (10, "type"),
        (11, "unit 'NOPE' unknown (not among C1's units)"),
    ]
    assert len(result.stored) == 5
    records = sorted(store.maintenance_records(), key=lambda r: r.id)
    assert [(r.unit_id, r.kind, r.verdict, r.verdict_reason) for r in records] == [
        ("U1", "half_monthly", "supported", "visit_meets_minimum"),
        ("U2", "quarterly", "too_short", "too_short"),
        ("U1", "half_monthly", "contradicted", "watched_normal"),
        ("U3", "half_monthly", "cannot_tell", "gap"),
        ("BLIND", "annual", "cannot_tell", "cannot_see_mode"),
    ]
    supported, _, contradicted = records[:3]
    evidence = json.loads(contradicted.evidence)
    assert evidence["watched"]["records"] > 0
    assert supported.visit_id is not None
    assert last_supported_visit(store, "U1") == store.visit(supported.visit_id)
    assert last_supported_visit(store, "U2") is None
    view = RecordView.of(contradicted, "zh")
    assert "一直正常运行" in view.evidence
    (share,) = verdict_shares(store, EVERY_UNIT)
    assert (share.contractor, share.records, share.contradicted) == ("C1", 5, 1)
    assert verdict_shares(store, Scope("C2", "c2")) == []
    # The contractor scorecard counts its records by verdict.
    span = Period(DAY.date(), DAY.date() + dt.timedelta(days=1))
    cards = {c.contractor: c for c in scorecard_report(store, span, DAY, CoverageConfig())}
    c1 = cards["C1"]
    assert (c1.maintenance_records, c1.maintenance_supported, c1.maintenance_too_short) == (5, 1, 1)
    assert (c1.maintenance_contradicted, c1.maintenance_cannot_tell) == (1, 2)
    assert cards["C2"].maintenance_records == 0
    kinds = [row.kind for row in store.history("U1")[0]]
    assert verify_store(store, "U1").problems == ()  # the chain takes the new kinds
    assert kinds.count("maintenance_record") == 2
    assert kinds.count("maintenance_verdict") == 2

    # The same upload again stores nothing twice; judging again changes nothing.
    again = take_records(
        store,
        found,
        [],
        contractor="C1",
        uploaded_by="c1-user",
        source="csv",
        now=DAY + dt.timedelta(days=2),
        config=CONFIG,
    )
    assert (again.stored, again.duplicates) == ((), 5)


def test_a_gap_in_an_otherwise_normal_window_is_never_contradicted(store: SqlStore) -> None:
    """Normal service watched before and after, but the link down in the middle."""
    feed = Feed("A1")
    feed.play("U1", DAY, 60, M.SERVICE_MODE_NORMAL)
    middle = feed._new("U1", DAY + dt.timedelta(minutes=60))
    middle.link_status.up = False
    feed.play("U1", DAY + dt.timedelta(minutes=60, seconds=10), 120, M.SERVICE_MODE_NORMAL)
    feed.send(store)
    found, _ = parse_records(
        io.StringIO(
            "unit_id,date,start,end,type,workers\nU1,2026-03-02,00:40Z,01:40Z,half_monthly,x\n"
        ),
        "t.csv",
        SHANGHAI,
    )
    take_records(
        store,
        found,
        [],
        contractor="C1",
        uploaded_by="u",
        source="api",
        now=DAY,
        config=CONFIG,
    )
    (record,) = store.maintenance_records()
    assert (record.verdict, record.verdict_reason) == ("cannot_tell", "link_lost")


def test_the_health_reads_name_the_partial_index_term(store: SqlStore) -> None:
    """SQLite takes the partial index records_health only for a query holding its WHERE
    term as written; the link-state and health reads must, or they scan every record."""
    assert RECORDS_HEALTH_INDEX.endswith(f"WHERE {HEALTH_TERM}")
    if isinstance(store, SqliteStore):
        plan = store._execute(
            f"EXPLAIN QUERY PLAN SELECT time_us FROM records WHERE unit_id = ? AND "
            f"{HEALTH_TERM} AND kind = 'link_status' AND time_us < ? ORDER BY time_us",
            ("U1", 0),
        ).fetchall()
        assert "records_health" in str(plan)


def test_a_lift_left_in_inspection_for_a_day_supports_nothing(store: SqlStore) -> None:
    """A session longer than max_visit_hours is an outage: cannot tell, not supported."""
    feed = Feed("A1")
    at = feed.play("U1", DAY, 30, M.SERVICE_MODE_NORMAL, every_s=30)
    at = feed.play("U1", at, 13 * 60, M.SERVICE_MODE_INSPECTION, every_s=30)
    feed.play("U1", at, 30, M.SERVICE_MODE_NORMAL, every_s=30)
    feed.send(store)
    found, _ = parse_records(
        io.StringIO(
            "unit_id,date,start,end,type,workers\nU1,2026-03-02,05:00Z,06:00Z,half_monthly,x\n"
        ),
        "t.csv",
        SHANGHAI,
    )
    take_records(
        store, found, [], contractor="C1", uploaded_by="u", source="api", now=DAY, config=CONFIG
    )
    (record,) = store.maintenance_records()
    assert (record.verdict, record.verdict_reason) == ("cannot_tell", "long_outage")

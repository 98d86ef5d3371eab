"""The maintenance plan by need (issue 17, item 4): due dates, their reasons in both
languages, the exports, and the inputs read from a real store of each backend."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.reports.plan import (
    Anchor,
    UnitInputs,
    Usage,
    entry_json,
    fold,
    ics_text,
    maintenance_plan,
    plan_ics,
    plan_unit,
    why,
)
from fleet.reports.plan_config import PlanConfig
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.maintenance import NewRecord, UnitDerivation, VerdictChange, VisitRow
from fleet.store.open import open_store
from fleet.store.sql import SqlStore, to_us
from protos.liftwatch.v1 import records_pb2

TODAY = dt.date(2026, 12, 7)
NOW = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
VISIT = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)  # 14 days before TODAY
YOUNG = dt.date(2018, 1, 1)
POLICY = PlanConfig(on_demand_units=("OD",))
SUPPORTED = Anchor(VISIT, True, "visit")


def _inputs(
    unit_id: str = "OD",
    *,
    usage: Usage | None = None,
    faults: tuple[dt.datetime, ...] = (),
    install: dt.date | None = YOUNG,
    anchor: Anchor | None = SUPPORTED,
) -> UnitInputs:
    return UnitInputs(unit_id, "C1", install, anchor, usage, faults)


def _usage(trips: int, *, close_trend: float | None = None) -> Usage:
    return Usage(trips, trips * 2, trips // 100, None, close_trend)


def test_a_unit_outside_the_programme_keeps_15_days() -> None:
    entry = plan_unit(_inputs("STD", usage=_usage(100)), POLICY, TODAY)
    assert entry.due == VISIT.date() + dt.timedelta(days=15)
    assert entry.days_left == 1 and not entry.on_demand


def test_a_lightly_used_on_demand_unit_stretches_by_its_own_rate() -> None:
    # 2,800 trips in 14 days = 200 a day: 6,000 trips are reached on day 30.
    entry = plan_unit(_inputs(usage=_usage(2800)), POLICY, TODAY)
    assert entry.interval_days == 30
    assert entry.due == VISIT.date() + dt.timedelta(days=30)
    # 4,100 trips in 14 days: the limit is reached on day 20.
    busier = plan_unit(_inputs(usage=_usage(4100)), POLICY, TODAY)
    assert busier.interval_days == 20
    assert "4100 trips since the last verified visit (limit 6000)" in why(busier, "en")
    assert "自上次经核实的维保以来运行 4100 次（上限 6000）" in why(busier, "zh")
    # Heavy use never goes below the standard interval.
    heavy = plan_unit(_inputs(usage=_usage(9000)), POLICY, TODAY)
    assert heavy.interval_days == 15


def test_a_door_trend_or_a_fault_shortens_it_at_once() -> None:
    trend = plan_unit(_inputs(usage=_usage(1000, close_trend=1.12)), POLICY, TODAY)
    assert trend.interval_days == 7 and trend.overdue
    assert "door closing time up 12.0 % on its baseline" in why(trend, "en")
    assert "关门时间比基线长 12.0%" in why(trend, "zh")
    fault_at = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
    fault = plan_unit(_inputs(usage=_usage(1000), faults=(fault_at,)), POLICY, TODAY)
    assert fault.due == dt.date(2026, 12, 2)
    assert fault.days_left == -5
    assert why(fault, "en").startswith("overdue by 5 days: ")
    assert why(fault, "zh").startswith("已逾期 5 天：")


def test_no_stretch_when_old_of_unknown_age_or_usage_unknown() -> None:
    old = plan_unit(_inputs(usage=_usage(10), install=dt.date(2005, 1, 1)), POLICY, TODAY)
    assert old.interval_days == 15 and "aged 21 years" in why(old, "en")
    unknown_age = plan_unit(_inputs(usage=_usage(10), install=None), POLICY, TODAY)
    assert unknown_age.interval_days == 15 and "install date unknown" in why(unknown_age, "en")
    no_counters = plan_unit(_inputs(usage=None), POLICY, TODAY)
    assert no_counters.interval_days == 15 and "usage unknown" in why(no_counters, "en")


def test_without_a_supported_visit_it_says_so() -> None:
    unverified = plan_unit(
        _inputs(anchor=Anchor(VISIT, False, "record"), usage=_usage(10)), POLICY, TODAY
    )
    assert "no verified visit: counted from the last record the fleet knows" in why(
        unverified, "en"
    )
    assert "未经核实" in why(unverified, "zh")
    nothing = plan_unit(_inputs(anchor=None), POLICY, TODAY)
    assert nothing.due == TODAY
    assert why(nothing, "en") == "due today: no maintenance visit or record known"
    body = entry_json(nothing, "en")
    assert {"unit_id", "due", "why"} <= set(body)


def test_ics_text_is_escaped_and_lines_folded_at_75_octets() -> None:
    assert ics_text("a;b,c\\d\ne") == "a\\;b\\,c\\\\d\\ne"
    long = "DESCRIPTION:" + "维保" * 60
    folded = fold(long)
    physical = folded.split("\r\n")
    assert all(len(p.encode()) <= 75 for p in physical)
    assert all(p.startswith(" ") for p in physical[1:])
    assert "".join(p.removeprefix(" ") for p in physical) == long
    entry = plan_unit(_inputs(usage=_usage(4100)), POLICY, TODAY)
    ics = plan_ics([entry], "zh", NOW)
    assert ics.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n")
    assert ics.endswith("END:VCALENDAR\r\n")
    assert "DTSTART;VALUE=DATE:20261213\r\n" in ics
    assert "\n" not in ics.replace("\r\n", "")


# -- from a real store --------------------------------------------------------------------


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend."""
    opened = open_store(store_target)
    yield opened
    opened.close()


def _counters(
    seq: int, unit_id: str, at: dt.datetime, trips: int, close_trend: float = 1.0
) -> records_pb2.Record:
    message = records_pb2.Record(seq=seq, unit_id=unit_id)
    message.time.FromDatetime(at)
    message.counters.trips = trips
    message.counters.door_cycles = trips * 2
    message.counters.run_hours = trips // 100
    message.counters.door_close_trend = close_trend
    return message


def test_the_plan_reads_supported_visits_counters_and_faults(store: SqlStore) -> None:
    store.upsert_register(
        [
            RegisterEntry("OD", contractor="C1", install_date=YOUNG),
            RegisterEntry("STD", contractor="C2", install_date=YOUNG),
            RegisterEntry("NEW", contractor="C2", install_date=YOUNG),
        ],
        VISIT,
    )
    store.register_hello(
        "a1",
        "1.0",
        [UnitClaim("OD", ControllerIdentity()), UnitClaim("STD", ControllerIdentity())],
        VISIT,
    )
    store.commit_batch(
        "a1",
        [
            _counters(1, "OD", VISIT - dt.timedelta(hours=1), 10_000),
            _counters(2, "OD", NOW - dt.timedelta(hours=1), 12_800),
            _counters(3, "STD", VISIT, 500),
            _counters(4, "STD", NOW - dt.timedelta(hours=1), 700, close_trend=1.2),
        ],
        NOW,
    )
    ids = store.add_maintenance_records(
        [
            NewRecord(
                "OD",
                "C1",
                "half_monthly",
                to_us(VISIT - dt.timedelta(hours=1)),
                to_us(VISIT),
                "",
                "csv",
                "c1",
                to_us(VISIT),
            ),
            NewRecord(
                "STD",
                "C2",
                "half_monthly",
                to_us(VISIT - dt.timedelta(hours=1)),
                to_us(VISIT),
                "",
                "csv",
                "c2",
                to_us(VISIT),
            ),
        ],
        NOW,
    )
    assert ids[0] is not None
    (visit,) = store.save_derivation(
        "a1",
        4,
        [
            UnitDerivation(
                "OD",
                "a1",
                (
                    VisitRow(
                        None,
                        "OD",
                        to_us(VISIT - dt.timedelta(minutes=50)),
                        to_us(VISIT),
                        3000.0,
                        "inspection",
                        4,
                        3,
                        6,
                        to_us(VISIT),
                    ),
                ),
                "",
            )
        ],
    )
    store.set_verdicts([VerdictChange(ids[0], "supported", "", "{}", visit.id)], NOW)
    plan = {e.unit_id: e for e in maintenance_plan(store, POLICY, NOW)}
    assert plan["OD"].anchor == Anchor(VISIT, True, "visit")
    assert plan["OD"].interval_days == 30  # 2,800 trips in 14 days
    assert plan["STD"].anchor is not None and not plan["STD"].anchor.verified
    assert plan["STD"].interval_days == 7  # its door closing time is 20 % up
    assert plan["NEW"].due == NOW.date()
    assert list(plan) == ["STD", "NEW", "OD"]  # soonest due first
    only_c1 = maintenance_plan(store, POLICY, NOW, contractor="C1")
    assert [e.unit_id for e in only_c1] == ["OD"]


def test_the_plan_command_prints_units_with_due_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleet.cli.main import main

    db = tmp_path / "fleet.db"
    opened = open_store(str(db))
    opened.upsert_register([RegisterEntry("U1", contractor="C1")], VISIT)
    opened.close()
    assert main(["maintenance", "plan", "--db", str(db), "--json", "--lang", "en"]) == 0
    body = json.loads(capsys.readouterr().out)
    (unit,) = body["units"]
    assert unit["unit_id"] == "U1" and unit["why"].startswith("due today")
    # --json is the definition the API's plan lists its units with (one per response).
    from fleet.cli.plan import PlanListing
    from fleet.read.shape import schema_of
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate

    spec = openapi_spec()
    validate(body, schema_of(PlanListing), spec, "plan --json")
    assert "due_this_week" not in body
    assert main(["maintenance", "plan", "--db", str(db), "--json", "--week"]) == 0
    week = json.loads(capsys.readouterr().out)
    validate(week, schema_of(PlanListing), spec, "plan --json --week")
    assert week["due_this_week"] == {"C1": ["U1"]}
    assert main(["maintenance", "plan", "--db", str(db), "--format", "ics"]) == 0
    assert "BEGIN:VEVENT" in capsys.readouterr().out
    assert main(["maintenance", "plan", "--db", str(db), "--format", "csv", "--overdue"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("unit_id,")

"""The fault rate the district publishes and the claims audit, over real stores (both
backends where the store does the work): lift faults only, exposure before rank, rates
for short periods, CSV safe for spreadsheets; "cannot see", "overstated", site time and
the reader's language, end to end through Hello, the CLI and the JSON API."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import urllib.request
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.main import main
from fleet.config import ConfigError, FleetConfig, ReportsConfig, StoreConfig, load_config
from fleet.csv_cells import safe_cell
from fleet.reports.claims import (
    SEVERITY,
    Claim,
    audit_claim,
    parse_claims,
    render,
    verdict_json,
)
from fleet.reports.compute import fault_rate_report, service_life_report
from fleet.reports.fault_rate import DAYS_PER_MONTH, LOW, QUALIFIED, Period, period
from fleet.store.base import ControllerIdentity, RegisterEntry, UnitClaim
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.taxonomy import EVENT_CLASSES, is_lift_fault
from protos.liftwatch.v1 import gateway_pb2, records_pb2
from tests.fleet.factories import T0, batch, record
from tests.fleet.harness import Fleet, run

_T = records_pb2
DAY = dt.timedelta(days=1)
NOT_LIFT_FAULTS = (
    _T.EVENT_TYPE_ALARM_BUTTON,
    _T.EVENT_TYPE_DOOR_HELD_OPEN,
    _T.EVENT_TYPE_POWER_FAILURE,
    _T.EVENT_TYPE_MODE_CHANGE,
    _T.EVENT_TYPE_CONTROLLER_LINK_LOST,
    _T.EVENT_TYPE_DOOR_SLOWING,
)


def counters(seq: int, unit: str, at: dt.datetime, trips: int) -> records_pb2.Record:
    """A Counters record of ``unit`` at ``at`` with the controller's trip counter."""
    message = record(seq, unit, time=at)
    message.counters.trips = trips
    return message


def watched_for(
    first_seq: int, unit: str, start: dt.datetime, days: int, trips_per_day: int
) -> list[records_pb2.Record]:
    """Counters every half hour for ``days`` days from ``start``: fully watched."""
    slots = days * 48
    return [
        counters(
            first_seq + k,
            unit,
            start + dt.timedelta(minutes=30 * k),
            1000 + trips_per_day * k // 48,
        )
        for k in range(slots)
    ]


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend with U1..U3 registered, watched by a1."""
    opened = open_store(store_target)
    opened.upsert_register(
        [
            RegisterEntry("U1", building="B1", street="S1", contractor="C1"),
            RegisterEntry("U2", building="B2", street="S1", contractor="C1"),
            RegisterEntry("U3", building="=HYPERLINK(1)", street="S2", contractor="C2"),
        ],
        T0,
    )
    claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in ("U1", "U2", "U3")]
    opened.register_hello("a1", "0.1.0", claims, T0)
    yield opened
    opened.close()


def _event(seq: int, unit: str, kind: int, at: dt.datetime, event_id: str) -> records_pb2.Record:
    return record(seq, unit, time=at, event=kind, event_id=event_id)  # type: ignore[arg-type]


# -- the fault rate ---------------------------------------------------------------------


def test_only_lift_faults_count(store: SqlStore) -> None:
    """Alarm-button presses, doors held by passengers, mains failures, mode changes, link
    losses and a slowing door are not faults of the lift; a door that fails to close is."""
    events = [
        _event(10 + n, "U1", kind, T0 + dt.timedelta(minutes=n), f"e{n}")
        for n, kind in enumerate([*NOT_LIFT_FAULTS, *NOT_LIFT_FAULTS])
    ]
    events.append(_event(99, "U1", _T.EVENT_TYPE_DOOR_CLOSE_FAILURE, T0, "door"))
    store.commit_batch("a1", events, T0)
    rows = fault_rate_report(store, "unit", period(T0.date(), T0.date() + DAY, T0.date()))
    u1 = next(r for r in rows if r.name == "U1")
    assert (u1.faults, u1.by_type) == (1, {"DOOR_CLOSE_FAILURE": 1})
    assert not any(is_lift_fault(k) for k in NOT_LIFT_FAULTS)


def test_one_fault_in_nine_trips_never_tops_the_list(store: SqlStore) -> None:
    """U3: 1 fault in 9 trips (111 per 1,000); U1: 2 faults in 2,000 trips (1 per 1,000).
    U1 has the exposure and is ranked first; U3 is marked low and comes after it."""
    records = [
        counters(1, "U3", T0, 500),
        counters(2, "U3", T0 + dt.timedelta(hours=5), 509),
        _event(3, "U3", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, T0 + dt.timedelta(hours=1), "u3"),
        counters(4, "U1", T0, 10_000),
        counters(5, "U1", T0 + dt.timedelta(hours=5), 12_000),
        _event(6, "U1", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, T0 + dt.timedelta(hours=1), "a"),
        _event(7, "U1", _T.EVENT_TYPE_DOOR_CLOSE_FAILURE, T0 + dt.timedelta(hours=2), "b"),
    ]
    store.commit_batch("a1", records, T0)
    span = period(T0.date(), T0.date() + DAY, T0.date())
    rows = {r.name: r for r in fault_rate_report(store, "unit", span)}
    ranked = [r.name for r in fault_rate_report(store, "unit", span)]
    assert rows["U3"].per_1000_trips is not None and rows["U1"].per_1000_trips is not None
    assert rows["U3"].per_1000_trips > rows["U1"].per_1000_trips  # worse, but unproven
    assert (rows["U1"].trips, rows["U1"].exposure) == (2000, QUALIFIED)
    assert (rows["U3"].trips, rows["U3"].exposure) == (9, LOW)
    assert ranked.index("U1") < ranked.index("U3")
    assert ranked[0] == "U1"
    # With a lower bar both are ranked, and then the per-trip rate decides.
    lenient = fault_rate_report(store, "unit", span, ReportsConfig(min_trips=5))
    assert lenient[0].name == "U3"


def test_watched_days_count_the_half_hours_the_agent_read_the_controller(
    store: SqlStore,
) -> None:
    """Two Counters in one half-hour count once; a third in another half-hour adds one:
    2 of 48 half-hours. A unit without a trip count but watched long enough is ranked."""
    store.commit_batch(
        "a1",
        [
            counters(1, "U2", T0, 0),
            counters(2, "U2", T0 + dt.timedelta(minutes=10), 0),
            counters(3, "U2", T0 + dt.timedelta(minutes=100), 0),
        ],
        T0,
    )
    span = period(T0.date(), T0.date() + DAY, T0.date())
    u2 = next(r for r in fault_rate_report(store, "unit", span) if r.name == "U2")
    assert u2.watched_days == round(2 / 48, 2)
    assert (u2.trips, u2.per_1000_trips, u2.exposure) == (None, None, LOW)
    rules = ReportsConfig(min_watched_days=2 / 48)
    u2 = next(r for r in fault_rate_report(store, "unit", span, rules) if r.name == "U2")
    assert u2.exposure == QUALIFIED


@pytest.mark.parametrize("days", [7, 1])
def test_faults_per_unit_month_for_a_period_shorter_than_a_month(
    store: SqlStore, days: int
) -> None:
    """U1 watched the whole period with 3 faults: 3 faults per ``days``/30.44 months."""
    records = watched_for(1, "U1", T0.replace(hour=0), days, trips_per_day=480)
    records += [
        _event(5000 + n, "U1", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, T0 + dt.timedelta(hours=n), str(n))
        for n in range(3)
    ]
    store.commit_batch("a1", records, T0)
    span = period(T0.date(), T0.date() + days * DAY, T0.date())
    u1 = next(r for r in fault_rate_report(store, "unit", span) if r.name == "U1")
    assert u1.watched_days == days
    assert u1.per_unit_month == pytest.approx(3 / (days / DAYS_PER_MONTH), abs=1e-4)
    assert u1.per_month == pytest.approx(3 / (days / DAYS_PER_MONTH), abs=1e-3)
    # A month of it would be about 13 faults a week's rate, 91 a day's: never just 3.
    assert u1.per_unit_month is not None and u1.per_unit_month > 3


def test_per_month_counts_today_only_as_far_as_it_went() -> None:
    """A one-day period that is today, at noon, has lasted half a day."""
    span = Period(T0.date(), T0.date() + DAY)
    noon = dt.datetime.combine(T0.date(), dt.time(12), dt.UTC)
    assert span.months_until(noon) == pytest.approx(0.5 / DAYS_PER_MONTH)
    assert span.months_until(noon + 2 * DAY) == pytest.approx(span.months)
    assert span.months_until(None) == pytest.approx(span.months)


def test_fault_rate_csv_states_what_counts_and_is_spreadsheet_safe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fleet.db"
    opened = open_store(str(db))
    opened.upsert_register([RegisterEntry("U3", building="=HYPERLINK(1)", contractor="C2")], T0)
    opened.register_hello("a1", "0.1", [UnitClaim("U3", ControllerIdentity())], T0)
    opened.commit_batch("a1", [_event(1, "U3", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, T0, "d")], T0)
    opened.close()
    argv = ["report", "fault-rate", "--by", "building", "--csv", "--db", str(db)]
    assert main([*argv, "--since", "2026-03-01", "--until", "2026-03-02"]) == 0
    text = capsys.readouterr().out
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Counted (lift faults):" in c and "ENTRAPMENT" in c for c in comments)
    not_counted = next(c for c in comments if "ALARM_BUTTON" in c)
    assert "usage" in not_counted and "Counted (lift faults)" not in not_counted
    assert not any("," in c for c in comments)  # one cell each, never split
    body_text = "".join(line for line in io.StringIO(text) if not line.startswith("#"))
    data = list(csv.DictReader(io.StringIO(body_text)))
    assert data[0]["name"] == "'=HYPERLINK(1)"
    assert (data[0]["faults"], data[0]["exposure"]) == ("1", LOW)
    body = csv.reader(line for line in text.splitlines() if not line.startswith("#"))
    assert next(body) == ["rank", "name", "units", "faults", "trips", "watched_days",
                          "exposure", "faults_per_1000_trips", "faults_per_month",
                          "faults_per_unit_month"]  # fmt: skip


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_formula_like_cells_are_prefixed(text: str) -> None:
    assert safe_cell(text) == "'" + text
    assert safe_cell("B1 " + text) == "B1 " + text
    assert safe_cell(-1) == "-1" and safe_cell("-1") == "'-1"  # numbers are not formulas


def test_fault_rate_json_carries_the_classification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fleet.db"
    open_store(str(db)).close()
    assert main(["report", "fault-rate", "--json", "--db", str(db)]) == 0
    report = json.loads(capsys.readouterr().out)
    counted = set(report["classification"]["counted"])
    not_counted = {t for c in report["classification"]["not_counted"] for t in c["types"]}
    names = {records_pb2.EventType.Name(t).removeprefix("EVENT_TYPE_") for t in EVENT_CLASSES}
    assert counted | not_counted == names and not counted & not_counted
    assert "ALARM_BUTTON" in not_counted and "ENTRAPMENT" in counted
    assert report["ranking"]["min_trips"] == ReportsConfig().min_trips


# -- the claims audit -------------------------------------------------------------------


def _watched(store: SqlStore, unit: str, seconds: int = 3600, first_seq: int = 1) -> None:
    """``unit`` watched from T0 for ``seconds`` (a sample every 10 s)."""
    samples = [
        record(first_seq + k, unit, time=T0 + dt.timedelta(seconds=10 * k))
        for k in range(seconds // 10 + 1)
    ]
    store.commit_batch("a1", samples, T0)


def _claim(unit: str, at: dt.datetime, kind: int) -> Claim:
    return Claim(2, unit, at, kind)


WINDOW = dt.timedelta(minutes=5)
GAP = dt.timedelta(seconds=30)


def test_a_claim_the_unit_cannot_see_is_cannot_tell_never_contradicts(store: SqlStore) -> None:
    """U1's agent says (Hello) it cannot detect ENTRAPMENT: watched and quiet, a claimed
    entrapment is "cannot tell: this unit cannot see ENTRAPMENT"; a door fault it can see
    is contradicted."""
    seen = tuple(t for t in EVENT_CLASSES if t != _T.EVENT_TYPE_ENTRAPMENT)
    claim = UnitClaim(
        "U1", ControllerIdentity(), detectable=seen, undetectable=(_T.EVENT_TYPE_ENTRAPMENT,)
    )
    store.register_hello("a1", "0.1.0", [claim], T0)
    _watched(store, "U1")
    at = T0 + dt.timedelta(minutes=20)
    trapped = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_ENTRAPMENT), WINDOW, GAP)
    assert (trapped.verdict, trapped.reason.code) == ("cannot_tell", "cannot_see")
    assert render(trapped.reason, "en") == (
        "this unit cannot see ENTRAPMENT: its agent reports that the unit's signals cannot "
        "detect it"
    )
    assert "困人" in render(trapped.reason, "zh")
    door = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_DOOR_CLOSE_FAILURE), WINDOW, GAP)
    assert door.verdict == "contradicts"
    # A type the agent listed neither way (newer than the agent) it cannot see either.
    store.register_hello(
        "a1", "0.1.0", [UnitClaim("U1", ControllerIdentity(), detectable=(1, 2))], T0
    )
    levelling = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_LEVELLING_FAULT), WINDOW, GAP)
    assert levelling.reason.code == "cannot_see"


def test_entrapment_claimed_where_the_lift_had_a_door_open_failure_is_overstated(
    store: SqlStore,
) -> None:
    _watched(store, "U1")
    at = T0 + dt.timedelta(minutes=20)
    door = _event(900, "U1", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, at + dt.timedelta(minutes=1), "dof-7")
    store.commit_batch("a1", [door], T0)
    verdict = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_ENTRAPMENT), WINDOW, GAP)
    assert (verdict.verdict, verdict.cites) == ("overstated", "dof-7")
    shown = verdict_json(verdict, "en")
    assert shown["cites"] == "dof-7" and "dof-7" in str(shown["evidence"])
    assert "DOOR_OPEN_FAILURE" in str(shown["evidence"])
    assert "开门故障" in str(verdict_json(verdict, "zh")["evidence"])
    # A fault as severe as the one watched, but another: the data cannot tell.
    same = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_DOOR_CLOSE_FAILURE), WINDOW, GAP)
    assert SEVERITY[_T.EVENT_TYPE_DOOR_CLOSE_FAILURE] == SEVERITY[_T.EVENT_TYPE_DOOR_OPEN_FAILURE]
    assert (same.verdict, same.reason.code) == ("cannot_tell", "other_events")


def test_an_alarm_press_does_not_make_a_claimed_entrapment_overstated(store: SqlStore) -> None:
    """What passengers do is no evidence the claim was inflated."""
    _watched(store, "U1")
    at = T0 + dt.timedelta(minutes=20)
    store.commit_batch("a1", [_event(900, "U1", _T.EVENT_TYPE_ALARM_BUTTON, at, "press")], T0)
    verdict = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_ENTRAPMENT), WINDOW, GAP)
    assert (verdict.verdict, verdict.reason.code) == ("cannot_tell", "other_events")


def test_overstated_needs_the_window_watched(store: SqlStore) -> None:
    """A lesser fault in a window with a gap in the records: the claimed one may have
    happened unseen, so the data cannot tell."""
    _watched(store, "U1", seconds=600)  # watched only the first 10 minutes
    at = T0 + dt.timedelta(minutes=12)
    store.commit_batch("a1", [_event(900, "U1", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, at, "dof")], T0)
    verdict = audit_claim(store, _claim("U1", at, _T.EVENT_TYPE_ENTRAPMENT), WINDOW, GAP)
    assert verdict.verdict == "cannot_tell"


def test_a_claim_time_without_an_offset_is_site_time() -> None:
    """16:06:40 written on a Shanghai work order is 08:06:40 UTC; an offset is kept."""
    shanghai = zoneinfo.ZoneInfo("Asia/Shanghai")
    lines = [
        "unit_id,time,fault_type\n",
        "U1,2026-03-01T16:06:40,entrapment\n",
        "U1,2026-03-01 16:06:40,entrapment\n",
        "U1,2026-03-01T16:06:40+09:00,entrapment\n",
        "U1,2026-03-01T08:06:40Z,entrapment\n",
    ]
    claims, problems = parse_claims(lines, "test", shanghai)
    assert problems == []
    utc = [c.time for c in claims]
    assert utc[0] == utc[1] == utc[3] == dt.datetime(2026, 3, 1, 8, 6, 40, tzinfo=dt.UTC)
    assert utc[2] == dt.datetime(2026, 3, 1, 7, 6, 40, tzinfo=dt.UTC)


def test_the_cli_reads_a_naive_claim_time_in_the_configured_time_zone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The door fault is at 08:06:40 UTC; a claim written 16:06:40 (Shanghai, the default
    [http] time_zone) finds it within a 1-minute window; read as UTC it would not."""
    db = tmp_path / "fleet.db"
    opened = open_store(str(db))
    opened.register_hello("a1", "0.1", [UnitClaim("U2", ControllerIdentity())], T0)
    at = T0 + dt.timedelta(seconds=400)
    opened.commit_batch("a1", [_event(1, "U2", _T.EVENT_TYPE_DOOR_CLOSE_FAILURE, at, "d1")], T0)
    opened.close()
    claims = tmp_path / "claims.csv"
    claims.write_text("unit_id,time,fault_type\nU2,2026-03-01T16:06:40,DOOR_CLOSE_FAILURE\n")
    argv = ["audit", "claims", str(claims), "--db", str(db), "--window", "1", "--json"]
    assert main([*argv, "--lang", "en"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["claims"][0]["verdict"] == "supported"
    assert report["claims"][0]["time"] == "2026-03-01T08:06:40.000Z"
    config = tmp_path / "fleet.toml"
    config.write_text(f'[store]\npath = "{db.name}"\n[http]\ntime_zone = "UTC"\n')
    assert main(["audit", "claims", str(claims), "--config", str(config), "--window", "1",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["claims"][0]["verdict"] != "supported"


# -- end to end: Hello stores what a unit cannot see; the API answers in the reader's language


def test_hello_undetectable_reaches_the_audit_over_the_api(tmp_path: Path) -> None:
    async def scenario(fleet: Fleet) -> None:
        descriptor = gateway_pb2.UnitDescriptor(
            unit_id="U7",
            detectable=[
                _T.EventType.Name(t) for t in EVENT_CLASSES if t != _T.EVENT_TYPE_ENTRAPMENT
            ],
            undetectable=["EVENT_TYPE_ENTRAPMENT"],
        )
        frame = gateway_pb2.AgentFrame(
            hello=gateway_pb2.Hello(agent_id="a7", agent_version="0.2.0", units=[descriptor])
        )
        fleet.clock.now = T0 + dt.timedelta(minutes=15)  # the records' time is no skew
        call = await fleet.connect(frame)
        assert (await call.read()).WhichOneof("frame") == "welcome"
        samples = [record(k + 1, "U7", time=T0 + dt.timedelta(seconds=10 * k)) for k in range(90)]
        await call.write(batch(*samples))
        assert (await call.read()).ack.up_to_seq == 90
        await call.done_writing()
        body = b"unit_id,time,fault_type\nU7,2026-03-01T16:07:00,ENTRAPMENT\n"

        def post(query: str, accept: str) -> Any:
            request = urllib.request.Request(
                f"http://{fleet.http}/api/reports/claims?window_min=2&max_gap_s=30{query}",
                data=body,
                headers={"Content-Type": "text/csv", "Accept-Language": accept},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=10) as reply:
                return json.loads(reply.read())

        zh = await asyncio.to_thread(post, "", "zh-CN,zh;q=0.9")
        en = await asyncio.to_thread(post, "&lang=en", "zh-CN")
        assert zh["lang"] == "zh" and en["lang"] == "en"
        for audit in (zh, en):
            assert audit["claims"][0]["verdict"] == "cannot_tell", audit
            assert audit["claims"][0]["reason"]["code"] == "cannot_see"
        assert "无法监测困人" in zh["claims"][0]["evidence"]
        assert en["claims"][0]["evidence"].startswith("this unit cannot see ENTRAPMENT")
        from fleet.web.openapi import openapi_spec
        from tests.fleet.test_api import validate

        spec = openapi_spec()
        schema = spec["paths"]["/api/reports/claims"]["post"]["responses"]["200"]["content"]
        for audit in (zh, en):
            validate(audit, schema["application/json"]["schema"], spec, "claims audit")

    run(FleetConfig(store=StoreConfig(path=str(tmp_path / "fleet.db"))), scenario, http=True)


def test_reports_config_keys_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text("[reports]\nmin_trips = 500\nmin_watched_days = 7.5\n")
    assert load_config(path).reports == ReportsConfig(min_trips=500, min_watched_days=7.5)
    path.write_text('[reports]\nmin_trips = -1\nmin_watched_days = "a month"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any(p.startswith("reports.min_trips") for p in caught.value.problems)
    assert any(p.startswith("reports.min_watched_days") for p in caught.value.problems)


def test_service_life_puts_a_low_exposure_unit_after_the_others_of_its_bracket(
    store: SqlStore,
) -> None:
    """U1 and U3, both past 15 years: U3's 1 fault in 9 trips does not put it first."""
    store.upsert_register(
        [
            RegisterEntry("U1", install_date=dt.date(2005, 1, 1)),
            RegisterEntry("U3", install_date=dt.date(2006, 1, 1)),
        ],
        T0,
    )
    store.commit_batch(
        "a1",
        [
            counters(1, "U3", T0, 500),
            counters(2, "U3", T0 + dt.timedelta(hours=5), 509),
            _event(3, "U3", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, T0 + dt.timedelta(hours=1), "u3"),
            counters(4, "U1", T0, 10_000),
            counters(5, "U1", T0 + dt.timedelta(hours=5), 12_000),
            _event(6, "U1", _T.EVENT_TYPE_DOOR_OPEN_FAILURE, T0 + dt.timedelta(hours=1), "a"),
        ],
        T0,
    )
    span = period(T0.date(), T0.date() + DAY, T0.date())
    rows = service_life_report(store, span, T0.date())
    assert [(r.unit_id, r.flag, r.exposure) for r in rows[:2]] == [
        ("U1", "assess_15", QUALIFIED),
        ("U3", "assess_15", LOW),
    ]
    # Each row as the API shows it, against its definition's generated schema.
    from fleet.reports.service_life import life_json
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate

    spec = openapi_spec()
    for row in rows:
        validate(life_json(row), {"$ref": "#/components/schemas/ServiceLifeRow"}, spec)
    assert life_json(rows[0])["install_date"] == rows[0].install_date.isoformat()  # type: ignore[union-attr]

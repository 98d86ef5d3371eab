"""The lifecycle side: the hash-chained history (tampered with directly in the database,
both backends), alarms through their disposal steps, and the reports."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleet.reports.compute import fault_rate_report, scorecard_report, verify_history
from fleet.reports.fault_rate import period
from fleet.reports.scorecard import rescue_s, scorecard_json
from fleet.store.base import (
    AlarmActionError,
    AlarmReasonRequiredError,
    ControllerIdentity,
    DispatchPlan,
    RegisterEntry,
    UnitClaim,
)
from fleet.store.chain import KINDS, canonical, detail_entry_hash, entry_hash
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.units.coverage import CoverageConfig
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record

ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT
PLAN = DispatchPlan(("hook",), ("boss",), escalate_after_s=60, lease_s=10)


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend with U1, U2 registered, watched by a1, and some
    history: a Hello, firmware, an entrapment raised and cleared, a door fault."""
    opened = open_store(store_target)
    opened.upsert_register(
        [
            RegisterEntry("U1", building="B1", street="S1", contractor="C1"),
            RegisterEntry("U2", building="B1", street="S1", contractor="C2"),
        ],
        T0,
    )
    claims = [UnitClaim(u, ControllerIdentity(model="RC-3000")) for u in ("U1", "U2")]
    opened.register_hello("a1", "0.1.0", claims, T0)
    later = T0 + dt.timedelta(seconds=40)
    opened.commit_batch(
        "a1",
        [
            record(1, "U1", firmware="3.1.4"),
            record(2, "U1", time=later, event=ENTRAPMENT, event_id="trap"),
            record(3, "U2", time=later, event=records_pb2.EVENT_TYPE_DOOR_CLOSE_FAILURE),
        ],
        later,
    )
    yield opened
    opened.close()


def _problems(store: SqlStore) -> list[tuple[str, int, str]]:
    return [(p.unit_id, p.seq, p.what) for p in verify_history(store)[2]]


def test_history_chains_every_change_and_verifies(store: SqlStore) -> None:
    rows, heads = store.history("U1")
    kinds = [r.kind for r in rows]
    assert kinds[0] == "register"
    assert {"coverage", "firmware", "event", "alarm"} <= set(kinds)
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert heads[0].seq == len(rows) and heads[0].hash == rows[-1].hash
    assert _problems(store) == []
    # Re-importing an unchanged register adds nothing; a change is recorded.
    store.upsert_register([RegisterEntry("U1", building="B1", street="S1", contractor="C1")], T0)
    assert len(store.history("U1")[0]) == len(rows)
    store.upsert_register([RegisterEntry("U1", building="B1", street="S1", contractor="C9")], T0)
    newest = store.history("U1")[0][-1]
    assert newest.kind == "register" and '"changed":["contractor"]' in newest.detail


def test_an_edited_row_is_named(store: SqlStore) -> None:
    store._execute(
        "UPDATE unit_history SET detail = '{\"forged\":1}' WHERE unit_id = 'U1' AND seq = 2"
    )
    assert _problems(store) == [("U1", 2, "edited")]


def test_an_edited_row_with_a_recomputed_hash_is_named(store: SqlStore) -> None:
    # The forger recomputes the row's own hash: the next row's prev_hash gives it away.
    from fleet.store.chain import entry_hash

    rows, _ = store.history("U1")
    row = rows[1]
    forged = entry_hash("U1", row.seq, row.at_us + 1, row.kind, {"x": 1}, row.prev_hash)
    store._execute(
        "UPDATE unit_history SET at_us = ?, detail = ?, hash = ? WHERE id = ?",
        (row.at_us + 1, '{"x":1}', forged, row.row_id),
    )
    assert _problems(store) == [("U1", 3, "edited")]


def test_deleted_rows_are_named(store: SqlStore) -> None:
    last = store.history("U1")[0][-1].seq
    store._execute("DELETE FROM unit_history WHERE unit_id = 'U1' AND seq IN (2, ?)", (last,))
    assert _problems(store) == [("U1", 2, "deleted"), ("U1", last, "deleted")]


def test_an_inserted_row_is_named(store: SqlStore) -> None:
    last = store.history("U2")[0][-1]
    store._execute(
        "INSERT INTO unit_history (unit_id, seq, at_us, kind, detail, prev_hash, hash) "
        "VALUES ('U2', ?, ?, 'event', '{}', ?, ?)",
        (last.seq + 1, last.at_us, last.hash, "f" * 64),
    )
    problems = _problems(store)
    assert ("U2", last.seq + 1, "inserted") in problems


def test_alarm_goes_through_its_disposal_steps(store: SqlStore, store_target: str) -> None:
    (alarm,) = store.alarms()
    assert (alarm.unit_id, alarm.type, alarm.state) == ("U1", ENTRAPMENT, "raised")
    now = T0 + dt.timedelta(seconds=41)
    (send,) = store.claim_deliveries(PLAN, now)
    assert (send.target, send.attempt, send.escalation) == ("hook", 1, False)
    assert store.claim_deliveries(PLAN, now) == []  # leased
    store.delivery_done(send, "HTTP 500", now, now + dt.timedelta(seconds=1))
    (again,) = store.claim_deliveries(PLAN, now + dt.timedelta(seconds=1))
    assert again.attempt == 2
    store.delivery_done(again, "", now, now + dt.timedelta(seconds=60))
    assert store.alarms()[0].state == "dispatched"
    # Not acknowledged within a minute: the escalation target gets it too.
    late = T0 + dt.timedelta(seconds=101)
    sends = store.claim_deliveries(PLAN, late)
    assert {(s.target, s.escalation) for s in sends} == {("boss", True), ("hook", False)}
    with pytest.raises(AlarmActionError, match="alarm 999 does not exist"):
        store.alarm_action(999, "ack", "ops", late)
    with pytest.raises(AlarmActionError, match="is dispatched; on_site needs it acknowledged"):
        store.alarm_action(alarm.alarm_id, "on_site", "ops", late)
    store.alarm_action(alarm.alarm_id, "ack", "dispatcher Li", late)
    assert store.claim_deliveries(PLAN, late + dt.timedelta(hours=1)) == []  # no more repeats
    store.alarm_action(alarm.alarm_id, "on_site", "rescuer Wang", late)
    store.commit_batch(
        "a1",
        [record(4, "U1", event=ENTRAPMENT, phase=records_pb2.PHASE_CLEARED, event_id="trap")],
        late,
    )
    store.alarm_action(alarm.alarm_id, "resolve", "rescuer Wang", late + dt.timedelta(minutes=5))
    store.close()
    reopened = open_store(store_target)  # alarms survive a restart
    try:
        (done,) = reopened.alarms()
        assert done.state == "resolved" and done.closed_by == "rescuer Wang"
        assert done.acknowledged_by == "dispatcher Li" and done.cleared is not None
        assert done.onset is not None and done.closed is not None
        assert (done.closed - done.onset).total_seconds() == pytest.approx(
            391
        )  # onset T0+10 s, resolved T0+401 s
        steps = [r.detail for r in reopened.history("U1")[0] if r.kind == "alarm"]
        assert [s.split('"step":"')[1].split('"')[0] for s in steps] == [
            "raised",
            "dispatched",
            "escalated",
            "acknowledged",
            "on_site",
            "cleared",
            "resolved",
        ]
        assert [p for p in verify_history(reopened)[2]] == []
    finally:
        reopened.close()


def test_fault_rate_counts_faults_per_trips(store: SqlStore) -> None:
    counters = []
    for seq, (unit, day, trips) in enumerate(
        [("U1", 0, 1000), ("U1", 0, 1400), ("U1", 1, 1500), ("U2", 0, 10), ("U2", 0, 110)], 10
    ):
        message = record(seq, unit, time=T0 + dt.timedelta(days=day))
        message.counters.trips = trips
        counters.append(message)
    store.commit_batch("a1", counters, T0)
    rows = fault_rate_report(
        store, "unit", period(T0.date(), T0.date() + dt.timedelta(days=30), T0.date())
    )
    assert [(r.name, r.faults, r.trips, r.per_1000_trips) for r in rows] == [
        ("U2", 1, 100, 10.0),
        ("U1", 1, 500, 2.0),
    ]
    first_day = fault_rate_report(store, "street", period(T0.date(), None, T0.date()))
    assert (first_day[0].name, first_day[0].faults, first_day[0].trips) == ("S1", 2, 500)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(
    unit_id=st.text(),
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    at_us=st.integers(min_value=0, max_value=2**62),
    kind=st.sampled_from(KINDS),
    detail=st.dictionaries(st.text(), _JSON, max_size=4),
    prev_hash=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
def test_the_history_hash_is_sha256_of_the_canonical_entry(
    unit_id: str, seq: int, at_us: int, kind: str, detail: dict[str, Any], prev_hash: str
) -> None:
    # The store writes with detail_entry_hash (the detail encoded once); the definition is
    # the canonical JSON of the whole entry, which any verifier can recompute.
    body = {
        "unit_id": unit_id,
        "seq": seq,
        "at_us": at_us,
        "kind": kind,
        "detail": detail,
        "prev_hash": prev_hash,
    }
    expected = hashlib.sha256(canonical(body).encode()).hexdigest()
    assert entry_hash(unit_id, seq, at_us, kind, detail, prev_hash) == expected
    text = canonical(detail)
    assert detail_entry_hash(unit_id, seq, at_us, kind, text, prev_hash) == expected


def _trap(store: SqlStore, seq: int, event_id: str, at: dt.datetime, phase: Any) -> None:
    """An ENTRAPMENT record of U1 (onset 30 s before ``at``), committed at ``at``."""
    store.commit_batch(
        "a1", [record(seq, "U1", time=at, event=ENTRAPMENT, phase=phase, event_id=event_id)], at
    )


def test_an_alarm_closed_while_its_event_is_raised_needs_a_reason(
    store: SqlStore, store_target: str
) -> None:
    (alarm,) = store.alarms()
    late = T0 + dt.timedelta(minutes=5)
    store.alarm_action(alarm.alarm_id, "ack", "dispatcher Li", late)
    for action in ("resolve", "false_alarm"):
        with pytest.raises(AlarmReasonRequiredError, match="ENTRAPMENT event is still raised"):
            store.alarm_action(alarm.alarm_id, action, "rescuer Wang", late, reason="  ")
    assert store.alarms()[0].state == "acknowledged"  # refused: nothing changed
    why = "passenger out by the stairs, confirmed by phone; controller still reports it"
    closed = store.alarm_action(alarm.alarm_id, "resolve", "rescuer Wang", late, reason=why)
    assert (closed.state, closed.close_reason, closed.cleared) == ("resolved", why, None)
    # The event clears later: the alarm shows it, but its rescue time stays unwatched.
    _trap(store, 9, "trap", late + dt.timedelta(minutes=1), records_pb2.PHASE_CLEARED)
    store.close()
    reopened = open_store(store_target)
    try:
        (done,) = reopened.alarms()
        assert done.close_reason == why and done.cleared is not None
        assert rescue_s(done) is None
        (entry,) = [
            json.loads(r.detail)
            for r in reopened.history("U1")[0]
            if r.kind == "alarm" and '"resolved"' in r.detail
        ]
        assert (entry["event"], entry["reason"], entry["by"]) == ("raised", why, "rescuer Wang")
        assert verify_history(reopened)[2] == []
    finally:
        reopened.close()


def test_the_scorecard_times_rescues_from_onset_to_clear(store: SqlStore) -> None:
    # Fixture: entrapment "trap" raised at T0+40 s (onset T0+10 s). Three more:
    # "slow" cleared after 20 minutes, "forced" closed while raised, "prank" a false alarm.
    start = T0 + dt.timedelta(hours=1)
    for seq, name in enumerate(("slow", "forced", "prank"), 20):
        _trap(store, seq, name, start, records_pb2.PHASE_RAISED)
    ids = {a.event_id: a.alarm_id for a in store.alarms()}
    trap_clear = T0 + dt.timedelta(seconds=130)
    slow_clear = start + dt.timedelta(minutes=20)
    _trap(store, 30, "trap", trap_clear, records_pb2.PHASE_CLEARED)
    _trap(store, 31, "slow", slow_clear, records_pb2.PHASE_CLEARED)
    desk = start + dt.timedelta(hours=3)  # the desk closes everything much later
    for event_id in ("trap", "slow", "forced"):
        store.alarm_action(ids[event_id], "ack", "Li", desk)
        store.alarm_action(ids[event_id], "resolve", "Li", desk, reason="by phone")
    store.alarm_action(ids["prank"], "false_alarm", "Li", desk, reason="kids on the button")
    span = period(T0.date(), T0.date() + dt.timedelta(days=1), T0.date())
    cards = {c.contractor: c for c in scorecard_report(store, span, desk, CoverageConfig())}
    card = cards["C1"]
    onset_of = {a.event_id: a.onset for a in store.alarms()}
    expected = [
        (trap_clear - onset_of["trap"]).total_seconds(),  # type: ignore[operator]
        (slow_clear - onset_of["slow"]).total_seconds(),  # type: ignore[operator]
    ]
    assert (card.entrapments, card.closed_while_raised, card.false_alarms) == (4, 2, 1)
    assert card.max_rescue_s == max(expected)
    assert card.mean_rescue_s == round(sum(expected) / 2, 1)
    assert scorecard_json(card)["closed_while_raised"] == 2
    from fleet.web.openapi import openapi_spec
    from tests.fleet.test_api import validate

    spec = openapi_spec()
    for shown in cards.values():
        validate(scorecard_json(shown), {"$ref": "#/components/schemas/Scorecard"}, spec)
    # The cleared ones were closed without a reason: none was needed.
    by_event = {a.event_id: a for a in store.alarms()}
    assert by_event["trap"].close_reason == "" and by_event["slow"].close_reason == ""
    assert cards["C2"].closed_while_raised == 0 and cards["C2"].mean_rescue_s is None

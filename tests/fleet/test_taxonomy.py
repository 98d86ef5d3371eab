"""Classes and codes through the fleet (issue 13, section 2): `fleet.taxonomy` is complete
and agrees with docs/events.md and the agent's code table, and an agent's events come out
of the store, `liftwatch-fleet events`, the JSON API (and its CSV) and FleetQuery with
their GB/T code (never 0), regional platform codes and class.

The agent's records are built by the agent's own `agent.records.event_record`, as the
uplink sends them: the fleet and the agent may not import each other, so these tests are
where the two are held to one contract.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import re
import sqlite3
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.detect.events import Event, EventType, Phase
from agent.records import TimeBase, event_record
from fleet.cli.main import main
from fleet.config import FleetConfig, StoreConfig
from fleet.read.query import event_message
from fleet.read.views import EVENT_TABLE_COLUMNS
from fleet.store.base import EventQuery
from fleet.store.open import open_store
from fleet.store.sql import SqlStore
from fleet.store.sqlite import MIGRATIONS, SqliteStore
from fleet.taxonomy import (
    CHONGQING,
    FIXED_GB_CODES,
    EventClass,
    event_class,
    gb_code,
    platform_codes,
    shown_gb_code,
)
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, batch, hello
from tests.fleet.harness import Fleet, run
from tests.fleet.test_api import validate

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events.md"
WIRE_TYPES = [n for n in records_pb2.EventType.values() if n != records_pb2.EVENT_TYPE_UNSPECIFIED]
_W = records_pb2

# -- the taxonomy itself -----------------------------------------------------------------


def test_every_wire_event_type_has_a_class() -> None:
    missing = [records_pb2.EventType.Name(n) for n in WIRE_TYPES if event_class(n) is None]
    assert missing == []
    assert event_class(records_pb2.EVENT_TYPE_UNSPECIFIED) is None


def test_the_classes_a_fault_rate_depends_on() -> None:
    # What the issue names: passengers pressing the alarm, doors they hold, mains and
    # link losses are not faults of the lift; an entrapment is.
    assert event_class(_W.EVENT_TYPE_ALARM_BUTTON) is EventClass.USAGE
    assert event_class(_W.EVENT_TYPE_DOOR_HELD_OPEN) is EventClass.USAGE
    assert event_class(_W.EVENT_TYPE_POWER_FAILURE) is EventClass.EXTERNAL
    assert event_class(_W.EVENT_TYPE_CONTROLLER_LINK_LOST) is EventClass.MONITORING
    assert event_class(_W.EVENT_TYPE_DOOR_SLOWING) is EventClass.HEALTH
    assert event_class(_W.EVENT_TYPE_ENTRAPMENT) is EventClass.LIFT_FAULT


def test_platform_codes_are_chongqings_where_defined() -> None:
    for at_landing in (True, False, None):
        assert platform_codes(_W.EVENT_TYPE_OVERTRAVEL_BOTTOM, at_landing) == {CHONGQING: 91}
        assert platform_codes(_W.EVENT_TYPE_OVERTRAVEL_TOP, at_landing) == {CHONGQING: 92}
    assert platform_codes(_W.EVENT_TYPE_ENTRAPMENT, True) == {CHONGQING: 93}
    # 93 is entrapment at floor level: not between floors, not where nobody knows.
    assert platform_codes(_W.EVENT_TYPE_ENTRAPMENT, False) == {}
    assert platform_codes(_W.EVENT_TYPE_ENTRAPMENT, None) == {}
    others = set(WIRE_TYPES) - {
        _W.EVENT_TYPE_OVERTRAVEL_BOTTOM,
        _W.EVENT_TYPE_OVERTRAVEL_TOP,
        _W.EVENT_TYPE_ENTRAPMENT,
    }
    assert {n for n in others if platform_codes(n, True) or platform_codes(n, False)} == set()


def test_a_gb_code_is_never_zero() -> None:
    assert gb_code(0) is None
    assert gb_code(93) == 93
    for kind in [*WIRE_TYPES, _W.EVENT_TYPE_UNSPECIFIED, 999]:
        for stored in (None, 0):
            assert shown_gb_code(kind, stored) != 0
    assert 0 not in FIXED_GB_CODES.values()


def test_an_event_stored_without_a_code_shows_its_types_fixed_code_only() -> None:
    assert shown_gb_code(_W.EVENT_TYPE_ALARM_BUTTON, None) == 90
    assert shown_gb_code(_W.EVENT_TYPE_STOPPED_OUTSIDE_DOOR_ZONE, None) == 4
    # MODE_CHANGE's code is the mode entered: none can be told from the type.
    assert shown_gb_code(_W.EVENT_TYPE_MODE_CHANGE, None) is None
    assert shown_gb_code(_W.EVENT_TYPE_MODE_CHANGE, 42) == 42
    assert shown_gb_code(_W.EVENT_TYPE_OVERTRAVEL_TOP, None) is None


def _agent_type(wire: int) -> EventType:
    return EventType[records_pb2.EventType.Name(wire).removeprefix("EVENT_TYPE_")]


def test_fixed_codes_are_the_agents() -> None:
    # The fleet cannot import the agent: its table of fixed codes (for rows stored without
    # a code) must be the one the agent sends, MODE_CHANGE aside (its code is per mode).
    agent = {n: _agent_type(n).gb_code for n in WIRE_TYPES if n != _W.EVENT_TYPE_MODE_CHANGE}
    assert {n: c for n, c in agent.items() if c} == dict(FIXED_GB_CODES)


# -- docs/events.md, "Classes and codes" ---------------------------------------------------


def _docs_rows() -> dict[str, list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"^## Classes and codes\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/events.md has no '## Classes and codes' section"
    rows: dict[str, list[str]] = {}
    for line in match.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in {"event", ""} or set(cells[0]) <= {"-"}:
            continue
        assert len(cells) == 5, f"docs/events.md: {line!r} has {len(cells)} cells, not 5"
        assert cells[0] not in rows, f"docs/events.md: {cells[0]} listed twice"
        rows[cells[0]] = cells
    return rows


def test_docs_give_every_event_its_class_reason_and_codes() -> None:
    rows = _docs_rows()
    names = {records_pb2.EventType.Name(n).removeprefix("EVENT_TYPE_"): n for n in WIRE_TYPES}
    assert set(rows) == set(names)
    for name, (_, klass, reason, gb, platforms) in rows.items():
        kind = names[name]
        found = event_class(kind)
        assert found is not None and klass == found.value, (name, klass)
        assert len(reason) > 20, f"{name}: say why it is {klass}"
        if kind == _W.EVENT_TYPE_MODE_CHANGE:
            assert gb.startswith("40, 42–47"), gb
        else:
            assert (int(gb) if gb != "–" else None) == FIXED_GB_CODES.get(kind), (name, gb)
        listed = {p: int(c) for p, c in re.findall(r"(\w+) (\d+)", platforms)}
        assert listed == platform_codes(kind, True), (name, platforms)
        at_landing_only = "(at a landing)" in platforms
        assert (platform_codes(kind, False) != listed) == at_landing_only, (name, platforms)


# -- an agent's events through the fleet ---------------------------------------------------

AGENT_CLOCK = TimeBase(monotonic=1000.0, utc=T0.timestamp())


def _occurrence(
    kind: EventType,
    *,
    code: int | None = None,
    at_landing: bool | None = None,
    phase: Phase = Phase.RAISED,
) -> Event:
    return Event(kind, phase, 970.0, 1000.0, 3, "test", gb_code=code, at_landing=at_landing)


# (seq, unit, the agent's occurrence, (gb_code, platform_codes, class) the fleet shows)
AGENT_EVENTS: list[tuple[int, str, Event, tuple[int | None, dict[str, int], str]]] = [
    (
        1,
        "U1",
        _occurrence(EventType.ENTRAPMENT, at_landing=True),
        (None, {"chongqing": 93}, "lift_fault"),
    ),
    (2, "U2", _occurrence(EventType.ENTRAPMENT, at_landing=False), (None, {}, "lift_fault")),
    (3, "U1", _occurrence(EventType.MODE_CHANGE, code=42), (42, {}, "monitoring")),
    (4, "U1", _occurrence(EventType.ALARM_BUTTON), (90, {}, "usage")),
    (5, "U2", _occurrence(EventType.OVERTRAVEL_BOTTOM), (None, {"chongqing": 91}, "lift_fault")),
    (6, "U2", _occurrence(EventType.POWER_FAILURE), (41, {}, "external")),
    (7, "U1", _occurrence(EventType.STOPPED_OUTSIDE_DOOR_ZONE), (4, {}, "lift_fault")),
    (8, "U1", _occurrence(EventType.DOOR_SLOWING), (None, {}, "health")),
    (
        9,
        "U1",
        _occurrence(EventType.ENTRAPMENT, at_landing=True, phase=Phase.CLEARED),
        (None, {"chongqing": 93}, "lift_fault"),
    ),
]
EXPECTED = {seq: shown for seq, _, _, shown in AGENT_EVENTS}


def _agent_records() -> list[records_pb2.Record]:
    records = []
    for seq, unit_id, occurrence, _ in AGENT_EVENTS:
        event_id = (
            "ev-trapped"
            if occurrence.type is EventType.ENTRAPMENT and unit_id == "U1"
            else f"ev-{seq}"
        )
        record = event_record(unit_id, occurrence, event_id, AGENT_CLOCK)
        record.seq = seq
        records.append(record)
    return records


def _shown(event: dict[str, Any]) -> tuple[object, object, object]:
    return event["gb_code"], event["platform_codes"], event["class"]


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    opened = open_store(store_target)
    yield opened
    opened.close()


def test_the_store_keeps_what_the_agent_sent(store: SqlStore) -> None:
    store.commit_batch("a1", _agent_records(), T0)
    events = {e.seq: e for e in store.list_events(EventQuery())}
    assert {seq: e.gb_code for seq, e in events.items()} == {
        s: c for s, (c, _, _) in EXPECTED.items()
    }
    assert events[1].at_landing is True
    assert events[2].at_landing is False
    assert events[4].at_landing is None  # the agent could not tell: absent on the wire
    stored = store._execute("SELECT seq, gb_code FROM events ORDER BY seq").fetchall()
    # As sent: the wire's 0 is NULL, never 0; no fixed code is written in its place.
    assert [(int(s), c) for s, c in stored] == [
        (1, None),
        (2, None),
        (3, 42),
        (4, 90),
        (5, None),
        (6, 41),
        (7, 4),
        (8, None),
        (9, None),
    ]
    # FleetQuery's StoredEvent: the shown code on the Event, class and platform codes beside.
    messages = [event_message(e) for e in store.list_events(EventQuery())]
    shown = {
        int(m.seq): (m.event.gb_code or None, dict(m.platform_codes), m.event_class)
        for m in messages
    }
    assert shown == EXPECTED
    landed = {int(m.seq): m.event.at_landing for m in messages if m.event.HasField("at_landing")}
    assert landed == {1: True, 2: False, 9: True}
    # The claims audit's read gives the same.
    window = store.unit_events("U1", T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=1))
    assert [(e.seq, e.gb_code, e.at_landing) for e in window] == [
        (1, None, True),
        (3, 42, None),
        (4, 90, None),
        (7, 4, None),
        (8, None, None),
        (9, None, True),
    ]


def _cli_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_events_cli_shows_codes_and_class(
    store: SqlStore, store_target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.commit_batch("a1", _agent_records(), T0)
    events = _cli_json(capsys, ["events", "--db", store_target, "--json"])["events"]
    assert {e["seq"]: _shown(e) for e in events} == EXPECTED
    assert {e["seq"]: e["at_landing"] for e in events if e["unit_id"] == "U2"} == {
        2: False,
        5: None,
        6: None,
    }
    only = _cli_json(capsys, ["events", "--db", store_target, "--json", "--type", "alarm_button"])
    assert [(e["type"], e["class"], e["gb_code"]) for e in only["events"]] == [
        ("ALARM_BUTTON", "usage", 90)
    ]
    assert main(["events", "--db", store_target, "--type", "entrapment"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split()[:7] == [
        "TIME",
        "UNIT_ID",
        "TYPE",
        "CLASS",
        "GB_CODE",
        "PLATFORM_CODES",
        "PHASE",
    ]
    cells = {tuple(line.split()[1:6]) for line in lines}
    assert cells == {
        ("U1", "ENTRAPMENT", "lift_fault", "-", "chongqing:93"),
        ("U2", "ENTRAPMENT", "lift_fault", "-", "-"),
    }


def _sqlite_before_verdicts(path: Path) -> None:
    """A database as a fleet before migration "verdicts" left it, with old events in it."""
    verdicts = next(i for i, m in enumerate(MIGRATIONS) if "ADD COLUMN gb_code" in m)
    with sqlite3.connect(path) as conn:
        for index, migration in enumerate(MIGRATIONS[:verdicts]):
            conn.executescript(f"{migration}; PRAGMA user_version = {index + 1};")
        t = int(T0.timestamp() * 1_000_000)
        conn.executemany(
            "INSERT INTO events (agent_id, seq, unit_id, time_us, event_id, type, phase, "
            "onset_us, floor, reason, committed_us) VALUES ('a1', ?, 'U1', ?, ?, ?, 1, ?, 3, "
            "'old', ?)",
            [
                (1, t, "e1", _W.EVENT_TYPE_ALARM_BUTTON, t, t),
                (2, t, "e2", _W.EVENT_TYPE_MODE_CHANGE, t, t),  # an old agent sent 40 for any mode
                (3, t, "e3", _W.EVENT_TYPE_ENTRAPMENT, t, t),
                (4, t, "e4", _W.EVENT_TYPE_DOOR_CLOSE_FAILURE, t, t),
                (5, t, "e5", _W.EVENT_TYPE_OVERTRAVEL_TOP, t, t),
            ],
        )


def test_events_stored_before_the_migration_show_honest_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "old.db"
    _sqlite_before_verdicts(db)
    SqliteStore.open(str(db)).close()  # a new fleet migrates it
    events = _cli_json(capsys, ["events", "--db", str(db), "--json"])["events"]
    assert {e["type"]: (_shown(e), e["at_landing"]) for e in events} == {
        "ALARM_BUTTON": ((90, {}, "usage"), None),
        "MODE_CHANGE": ((None, {}, "monitoring"), None),
        # position unknown: no Chongqing 93 for an entrapment nobody placed
        "ENTRAPMENT": ((None, {}, "lift_fault"), None),
        "DOOR_CLOSE_FAILURE": ((2, {}, "lift_fault"), None),
        "OVERTRAVEL_TOP": ((None, {"chongqing": 92}, "lift_fault"), None),
    }


def _get_text(fleet: Fleet, path: str) -> str:
    with urllib.request.urlopen(f"http://{fleet.http}{path}", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/csv")
        return str(reply.read().decode("utf-8-sig"))


def test_api_and_its_csv_show_codes_and_class(store_target: str) -> None:
    config = FleetConfig(
        store=StoreConfig(path=store_target)
        if "://" not in store_target
        else StoreConfig(url=store_target)
    )

    async def scenario(fleet: Fleet) -> None:
        call = await fleet.connect(hello("a1", "U1", "U2"))
        assert (await call.read()).WhichOneof("frame") == "welcome"
        await call.write(batch(*_agent_records()))
        frame = await call.read()
        assert frame.ack.up_to_seq == len(AGENT_EVENTS)
        await call.done_writing()

        status, body = await fleet.get("/api/events")
        assert status == 200
        spec = openapi_spec()
        schema = spec["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
        validate(body, schema["application/json"]["schema"], spec)
        assert {e["seq"]: _shown(e) for e in body["events"]} == EXPECTED
        _, u2 = await fleet.get("/api/events?unit=U2&type=entrapment")
        assert [(_shown(e), e["at_landing"]) for e in u2["events"]] == [
            ((None, {}, "lift_fault"), False)
        ]

        text = await asyncio.to_thread(_get_text, fleet, "/api/events?format=csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert list(rows[0]) == list(EVENT_TABLE_COLUMNS)
        by_id = {(r["unit_id"], r["type"], r["phase"]): r for r in rows}
        trapped = by_id[("U1", "ENTRAPMENT", "RAISED")]
        assert (trapped["class"], trapped["gb_code"], trapped["platform_codes"]) == (
            "lift_fault",
            "",
            "chongqing:93",
        )
        assert trapped["at_landing"] == "True"
        mode = by_id[("U1", "MODE_CHANGE", "RAISED")]
        assert (mode["class"], mode["gb_code"], mode["platform_codes"]) == ("monitoring", "42", "")
        alarm = by_id[("U1", "ALARM_BUTTON", "RAISED")]
        assert (alarm["class"], alarm["gb_code"]) == ("usage", "90")

    run(config, scenario, http=True)

"""What `liftwatch-rig demo` prints (issue 19, item 10): a never-seen unit without empty
fields, and each alarm step as it is taken (in the dashboard or anywhere), once."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from fleet.store.base import AlarmRow
from hil_tests.demo import _alarm_steps, _unit_line

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def test_a_never_seen_unit_prints_no_empty_fields() -> None:
    never = {"status": "never_seen", "model": "", "firmware": "", "agent_version": ""}
    assert _unit_line(never) == "never_seen"
    seen = {"status": "online", "model": "RC-3000", "firmware": "3.1.2", "agent_version": "0.1.0"}
    assert _unit_line(seen) == "online, RC-3000, firmware 3.1.2, agent 0.1.0"


def test_each_alarm_step_is_printed_once_as_it_happens() -> None:
    raised = AlarmRow(1, "U2", "ev-1", "a1", 1, 3, "", T0, T0, "raised")
    printed: dict[int, tuple[str, ...]] = {}
    assert _alarm_steps([raised], printed) == ["ALARM 1 on U2: raised"]
    assert _alarm_steps([raised], printed) == []  # nothing new, nothing printed
    acked = replace(raised, state="acknowledged", acknowledged=T0, acknowledged_by="李伟")
    assert _alarm_steps([acked], printed) == ["ALARM 1 on U2: acknowledged by 李伟"]
    eta = T0 + dt.timedelta(minutes=20)
    sent = replace(acked, crew="张三", crew_eta=eta, crew_dispatched=T0, crew_dispatched_by="李伟")
    assert _alarm_steps([sent], printed) == [
        f"ALARM 1 on U2: crew dispatched: 张三, expected {eta:%H:%M} UTC"
    ]
    closed = replace(sent, state="false_alarm", closed=T0, closed_by="李伟", cleared=T0)
    assert _alarm_steps([closed], printed) == [
        "ALARM 1 on U2: event cleared (passenger out)",
        "ALARM 1 on U2: false alarm by 李伟",
    ]

"""An event's reason code and parameters (issue 19, item 4) at the fleet: stored as the
agent sent them on both backends, read back by every event read, served by /api/events
and the live stream; an older agent's event (no code) keeps only its English sentence, and
the history chain is unchanged by them (rows chained before the migration still verify).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from fleet.read.views import event_json
from fleet.reports.compute import verify_history
from fleet.store.base import EventQuery
from fleet.store.open import open_store
from fleet.store.reasons import params_of, params_text
from fleet.store.sql import SqlStore
from fleet.web.live import record_json
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, record


@pytest.fixture
def store(store_target: str) -> Iterator[SqlStore]:
    """A fresh store of each backend."""
    opened = open_store(store_target)
    yield opened
    opened.close()


def _coded(seq: int, event_id: str) -> records_pb2.Record:
    message = record(seq, event=records_pb2.EVENT_TYPE_DOOR_OPEN_WHILE_MOVING, event_id=event_id)
    message.event.reason = "doors opened while moving at 0.42 m/s"
    message.event.reason_code = "door_open_moving"
    message.event.reason_params["speed"] = "0.42"
    return message


def test_codes_are_stored_and_read_back_and_an_older_agents_event_has_none(
    store: SqlStore,
) -> None:
    older = record(2, event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="ev-old")
    store.commit_batch("a1", [_coded(1, "ev-new"), older], T0)
    by_id = {e.event_id: e for e in store.list_events(EventQuery())}
    new, old = by_id["ev-new"], by_id["ev-old"]
    assert (new.reason_code, new.reason_params) == ("door_open_moving", (("speed", "0.42"),))
    assert new.reason == "doors opened while moving at 0.42 m/s"  # kept for older readers
    assert (old.reason_code, old.reason_params, old.reason) == ("", (), "test")
    # The claims audit's read sees them too.
    (seen,) = [
        e
        for e in store.unit_events("U1", T0 - dt.timedelta(hours=1), T0 + dt.timedelta(hours=1))
        if e.event_id == "ev-new"
    ]
    assert seen.reason_params == (("speed", "0.42"),)
    shown = event_json(new)
    assert (shown["reason_code"], shown["reason_params"]) == ("door_open_moving", {"speed": "0.42"})
    assert (event_json(old)["reason_code"], event_json(old)["reason_params"]) == ("", {})
    # Not chained: the unit's history verifies with the codes stored beside it.
    assert verify_history(store)[2] == []


def test_the_live_stream_carries_the_code() -> None:
    message = record_json(_coded(1, "ev-1"))
    assert message is not None
    assert (message.data["reason_code"], message.data["reason_params"]) == (
        "door_open_moving",
        {"speed": "0.42"},
    )


def test_params_round_trip_and_a_hand_written_column_reads_as_none() -> None:
    assert params_text({}) == ""
    text = params_text({"s": "8", "floor": "3"})
    assert text == '{"floor":"3","s":"8"}'
    assert params_of(text) == (("floor", "3"), ("s", "8"))
    assert params_of("") == params_of(None) == params_of("[1]") == params_of("{not json") == ()

"""The live hub on its own: which subscription gets which committed record, and what
happens to a subscriber that stops reading."""

from __future__ import annotations

import asyncio

from fleet.store.base import BatchOp, HeartbeatOp
from fleet.web.live import QUEUE_LIMIT, LiveHub, LiveMessage, Subscription, UnitContractors
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import record


def _hub() -> LiveHub:
    contractors = UnitContractors()
    contractors.update({"U1": "A", "U2": "B"})
    return LiveHub(contractors, alarm_types=[records_pb2.EVENT_TYPE_ENTRAPMENT])


def _drain(subscription: Subscription) -> list[LiveMessage | None]:
    out: list[LiveMessage | None] = []
    while not subscription.queue.empty():
        out.append(subscription.queue.get_nowait())
    return out


def _kinds(subscription: Subscription) -> list[tuple[str, str]]:
    return [(m.kind, m.unit_id) for m in _drain(subscription) if m is not None]


def test_records_reach_the_subscriptions_in_scope_only() -> None:
    async def scenario() -> None:
        hub = _hub()
        everything = hub.subscribe()
        unit_page = hub.subscribe("", ["U2"])
        contractor_a = hub.subscribe("A", ["U1", "U2"])  # asks for U2 too: not its own
        stranger = hub.subscribe("C", [])
        hub.observe(
            [
                HeartbeatOp("a1"),
                BatchOp(
                    "a1",
                    (
                        record(1, "U1"),
                        record(2, "U2"),
                        record(3, "U2", event=records_pb2.EVENT_TYPE_ENTRAPMENT),
                        record(4, "U3", event=records_pb2.EVENT_TYPE_DOOR_SLOWING),
                        record(5, "U1", link_up=False),
                    ),
                ),
            ]
        )
        assert _kinds(everything) == [
            ("event", "U2"),
            ("alarms", "U2"),
            ("event", "U3"),
        ]
        assert _kinds(unit_page) == [
            ("car", "U2"),
            ("event", "U2"),
            ("alarms", "U2"),
            ("event", "U3"),
        ]
        # U3 has no known contractor: unscoped roles only (fail closed).
        assert _kinds(contractor_a) == [("car", "U1"), ("link", "U1")]
        assert _kinds(stranger) == []

    asyncio.run(scenario())


def test_a_subscriber_that_stops_reading_is_ended_not_fed_a_gap() -> None:
    async def scenario() -> None:
        hub = _hub()
        slow = hub.subscribe("", ["U1"])
        for seq in range(QUEUE_LIMIT + 10):
            hub.observe([BatchOp("a1", (record(seq + 1, "U1"),))])
        messages = _drain(slow)
        assert len(messages) == QUEUE_LIMIT + 1 and messages[-1] is None
        assert hub.subscribers == 0 and hub.dropped_subscribers == 1
        # A new page (the reconnect) gets a fresh stream.
        fresh = hub.subscribe("", ["U1"])
        hub.observe([BatchOp("a1", (record(99_999, "U1"),))])
        assert _kinds(fresh) == [("car", "U1")]

    asyncio.run(scenario())


def test_close_ends_every_stream() -> None:
    async def scenario() -> None:
        hub = _hub()
        first, second = hub.subscribe(), hub.subscribe("A")
        hub.close()
        assert _drain(first) == [None] and _drain(second) == [None]
        assert hub.subscribers == 0

    asyncio.run(scenario())


def test_messages_are_framed_as_server_sent_events() -> None:
    message = LiveMessage("event", "U1", {"unit_id": "U1", "reason": "困人 8 s"})
    assert message.sse() == 'event: event\ndata: {"unit_id":"U1","reason":"困人 8 s"}\n\n'.encode()

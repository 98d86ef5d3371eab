"""Live updates from every instance (issue 18, item 3): two instances' relays on one
PostgreSQL. What instance A commits reaches the pages of instance B: every event (and the
alarm change of an alarm type), and the car states of the units a page on B watches once
B announced them; a car state of a unit nobody watches is not relayed, and no instance
hands its own records to its hub twice."""

from __future__ import annotations

import asyncio
import contextlib
import functools

from fleet.store.base import BatchOp
from fleet.web.live import LiveHub, LiveMessage, Subscription, UnitContractors
from fleet.web.relay import LiveRelay, PostgresTransport
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import record
from tests.support import eventually


def _hub() -> LiveHub:
    return LiveHub(UnitContractors(), alarm_types=[records_pb2.EVENT_TYPE_ENTRAPMENT])


def _taken(subscription: Subscription, into: list[LiveMessage]) -> list[tuple[str, str]]:
    while not subscription.queue.empty():
        message = subscription.queue.get_nowait()
        if message is not None:
            into.append(message)
    return [(m.kind, m.unit_id) for m in into]


def test_what_one_instance_commits_reaches_the_pages_of_another(pg_url: str) -> None:
    async def scenario() -> None:
        hubs = {"A": _hub(), "B": _hub()}
        transport = functools.partial(PostgresTransport.connect, pg_url)
        relays = {name: LiveRelay(transport, hub, name) for name, hub in hubs.items()}
        tasks = [asyncio.create_task(r.run()) for r in relays.values()]
        try:
            page_on_b = hubs["B"].subscribe("", ["U1"])
            page_on_a = hubs["A"].subscribe("", ["U1"])
            # B's page watches U1: A learns so from B's announcement.
            await eventually(lambda: "U1" in relays["A"]._watched, what="A knows U1 watched")
            committed = [
                BatchOp(
                    "agent-a",
                    (
                        record(1, "U2", event=records_pb2.EVENT_TYPE_ENTRAPMENT),
                        record(2, "U1"),  # a car state of the watched unit
                        record(3, "U3"),  # a car state nobody watches
                    ),
                )
            ]
            hubs["A"].observe(committed)  # what A's own committer does ...
            relays["A"].observe(committed)  # ... and its relay, the next observer
            seen: list[LiveMessage] = []
            kinds = await eventually(
                lambda: _taken(page_on_b, seen),
                lambda k: len(k) >= 3,
                what="A's records on B's page",
            )
            assert sorted(kinds) == [("alarms", "U2"), ("car", "U1"), ("event", "U2")]
            assert relays["A"].sent == 2  # the event and U1's car state, not U3's
            # A's page got A's records once, from A's own committer only.
            assert sorted(_taken(page_on_a, [])) == sorted(kinds)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)

    asyncio.run(scenario())

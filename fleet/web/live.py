"""Live updates for the dashboard: what each group commit changed, fanned out to the
pages that may see it, as server-sent events (`fleet.web.dashboard` serves the stream).

The hub is a committer observer (`fleet.ingest.GroupCommitter.observers`): it runs after
the records are durable, so a page never shows what the store could still lose. Each
subscriber has a bounded queue; one that falls behind is ended rather than fed a gap, and
the page reconnects and re-reads the state (nothing silently missed). A contractor's
subscription only ever receives messages about units registered to that contractor;
a unit the hub cannot place (not yet in the register) goes to unscoped roles only.

Scope of "live": the commits of this process. With ``serve --workers N`` or several
fleets on one PostgreSQL, a page sees what its own process ingests; the pages re-read
the API every minute as a backstop (see app.js). PostgreSQL LISTEN/NOTIFY would lift
this; see docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from fleet.store.base import BatchOp, WriteOp
from fleet.taxonomy import gb_code
from fleet.views import event_codes_json, event_type_name, iso, phase_name
from protos.liftwatch.v1 import records_pb2

# A page that has not taken this many messages is too slow (or gone): end its stream.
QUEUE_LIMIT = 2_000


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One server-sent event: ``kind`` is its SSE event name ("car", "link",
    "counters", "event", "alarms"); ``data`` its JSON body."""

    kind: str
    unit_id: str
    data: Mapping[str, object]

    def sse(self) -> bytes:
        """The message framed as a server-sent event."""
        body = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return f"event: {self.kind}\ndata: {body}\n\n".encode()


# Per-unit kinds go only to subscriptions that asked for that unit (the unit page);
# events and alarm changes go to every subscription in scope (overview, lists).
UNIT_KINDS = frozenset({"car", "link", "counters"})
_UNIT_PAYLOADS = frozenset({"car_state", "link_status", "counters"})


class Subscription:
    """One page's stream: messages in scope, in commit order; None marks the end."""

    def __init__(self, scope: str, units: frozenset[str]) -> None:
        self.scope = scope
        self.units = units
        self.queue: asyncio.Queue[LiveMessage | None] = asyncio.Queue()
        self.ended = False

    def offer(self, message: LiveMessage) -> None:
        """Queue ``message``; a subscriber already too far behind is ended instead."""
        if self.ended:
            return
        if self.queue.qsize() >= QUEUE_LIMIT:
            self.end()
            return
        self.queue.put_nowait(message)

    def end(self) -> None:
        """End the stream (the page reconnects and re-reads)."""
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(None)


def car_json(unit_id: str, time: str | None, car: records_pb2.CarState) -> dict[str, object]:
    """A CarState as the unit page shows it (enum names without their prefixes)."""
    return {
        "unit_id": unit_id,
        "time": time,
        "floor": car.floor if car.HasField("floor") else None,
        "direction": records_pb2.Direction.Name(car.direction).removeprefix("DIRECTION_"),
        "moving": car.moving if car.HasField("moving") else None,
        "door": records_pb2.DoorState.Name(car.door).removeprefix("DOOR_STATE_"),
        "mode": records_pb2.ServiceMode.Name(car.mode).removeprefix("SERVICE_MODE_"),
        "occupied": car.occupied if car.HasField("occupied") else None,
        "load_percent": car.load_percent if car.HasField("load_percent") else None,
        "speed_mm_s": car.speed_mm_s if car.HasField("speed_mm_s") else None,
        "door_zone": car.door_zone if car.HasField("door_zone") else None,
    }


def link_json(unit_id: str, time: str | None, link: records_pb2.LinkStatus) -> dict[str, object]:
    """A LinkStatus record as JSON."""
    return {
        "unit_id": unit_id,
        "time": time,
        "up": link.up,
        "requests": link.requests,
        "responses": link.responses,
        "timeouts": link.timeouts,
        "crc_errors": link.crc_errors,
        "exception_responses": link.exception_responses,
        "implausible_values": link.implausible_values,
        "latency_ms_p50": link.latency_ms_p50,
    }


def counters_json(
    unit_id: str, time: str | None, counters: records_pb2.Counters
) -> dict[str, object]:
    """A Counters record as JSON (door medians in ms, trends as ratios)."""
    return {
        "unit_id": unit_id,
        "time": time,
        "trips": counters.trips,
        "door_cycles": counters.door_cycles,
        "run_hours": counters.run_hours,
        "door_open_median_ms": (
            counters.door_open_median_ms if counters.HasField("door_open_median_ms") else None
        ),
        "door_close_median_ms": (
            counters.door_close_median_ms if counters.HasField("door_close_median_ms") else None
        ),
        "door_open_trend": (
            round(counters.door_open_trend, 3) if counters.HasField("door_open_trend") else None
        ),
        "door_close_trend": (
            round(counters.door_close_trend, 3) if counters.HasField("door_close_trend") else None
        ),
        "reopenings_by_landing": {str(k): v for k, v in counters.reopenings_by_landing.items()},
    }


def record_json(record: records_pb2.Record) -> LiveMessage | None:
    """The live message of one committed record (None for kinds pages do not show)."""
    kind = record.WhichOneof("payload")
    unit_id = record.unit_id
    time = iso(record.time.ToDatetime(tzinfo=dt.UTC)) if record.HasField("time") else None
    if kind == "car_state":
        return LiveMessage("car", unit_id, car_json(unit_id, time, record.car_state))
    if kind == "event":
        event = record.event
        return LiveMessage(
            "event",
            unit_id,
            {
                "unit_id": unit_id,
                "time": time,
                "type": event_type_name(event.type),
                "phase": phase_name(event.phase),
                "event_id": event.event_id,
                "onset": (
                    iso(event.onset.ToDatetime(tzinfo=dt.UTC)) if event.HasField("onset") else None
                ),
                "floor": event.floor if event.HasField("floor") else None,
                "reason": event.reason,
                # the same codes and class as the stored event shows (/api/events)
                **event_codes_json(
                    event.type,
                    gb_code(event.gb_code),
                    event.at_landing if event.HasField("at_landing") else None,
                ),
            },
        )
    if kind == "link_status":
        return LiveMessage("link", unit_id, link_json(unit_id, time, record.link_status))
    if kind == "counters":
        return LiveMessage("counters", unit_id, counters_json(unit_id, time, record.counters))
    return None


class LiveHub:
    """Fans committed records out to subscriptions, each scoped to a contractor ("" =
    every unit) and optionally to a set of units for the per-unit kinds."""

    def __init__(self, contractor_of: Callable[[str], str | None], alarm_types: Iterable[int]):
        # ``contractor_of`` answers from memory (see `UnitContractors`); None = unknown.
        self._contractor_of = contractor_of
        self._alarm_types = frozenset(alarm_types)
        self._subscriptions: set[Subscription] = set()
        self.delivered = 0
        self.dropped_subscribers = 0

    def subscribe(self, scope: str = "", units: Iterable[str] = ()) -> Subscription:
        """A new subscription: events and alarm changes of the units in ``scope``, and
        car, link and counters messages of ``units`` (also only those in scope)."""
        subscription = Subscription(scope, frozenset(units))
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (its page went away)."""
        self._subscriptions.discard(subscription)

    @property
    def subscribers(self) -> int:
        """Open subscriptions."""
        return len(self._subscriptions)

    def publish(self, message: LiveMessage) -> None:
        """Offer ``message`` to every subscription allowed to see it."""
        if not self._subscriptions:
            return
        contractor = self._contractor_of(message.unit_id) if message.unit_id else None
        per_unit = message.kind in UNIT_KINDS
        for subscription in list(self._subscriptions):
            if subscription.scope and (message.unit_id and contractor != subscription.scope):
                continue
            if per_unit and message.unit_id not in subscription.units:
                continue
            subscription.offer(message)
            if subscription.ended:
                self._subscriptions.discard(subscription)
                self.dropped_subscribers += 1
            else:
                self.delivered += 1

    def alarms_changed(self, unit_id: str) -> None:
        """Tell pages that ``unit_id``'s alarms changed (raised, acted on, cleared)."""
        self.publish(LiveMessage("alarms", unit_id, {"unit_id": unit_id}))

    def observe(self, ops: Sequence[WriteOp]) -> None:
        """Committer observer: publish each committed record; never raises, never blocks."""
        if not self._subscriptions:
            return
        # Ingest's hot path: a car state (most records) is only turned into JSON when an
        # open unit page asked for its unit.
        watched = set().union(*(sub.units for sub in self._subscriptions))
        for op in ops:
            if not isinstance(op, BatchOp):
                continue
            for record in op.records:
                if record.unit_id not in watched and record.WhichOneof("payload") in _UNIT_PAYLOADS:
                    continue
                message = record_json(record)
                if message is None:
                    continue
                self.publish(message)
                if message.kind == "event" and record.event.type in self._alarm_types:
                    self.alarms_changed(record.unit_id)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        for subscription in self._subscriptions:
            subscription.end()
        self._subscriptions.clear()


class UnitContractors:
    """unit_id -> maintenance contractor, held in memory for the hub's scoping and
    refreshed from the register by the caller (`update`)."""

    def __init__(self) -> None:
        self._map: dict[str, str] = {}

    def update(self, pairs: Mapping[str, str]) -> None:
        """Replace the map with ``pairs`` (a fresh read of the units table)."""
        self._map = dict(pairs)

    def __call__(self, unit_id: str) -> str | None:
        return self._map.get(unit_id)

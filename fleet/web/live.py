"""Live updates for the dashboard: what each group commit changed, fanned out to the
pages that may see it, as server-sent events (`fleet.web.dashboard` serves the stream).

The hub is a committer observer (`fleet.ingest.committer.GroupCommitter.observers`): it runs after
the records are durable, so a page never shows what the store could still lose, and it
only schedules its fan-out for the loop's next turn, so the committer (and alarm
dispatch, the next observer) never waits for web work. Each subscriber has a bounded
queue; one that falls behind is ended rather than fed a gap, and the page reconnects and
re-reads the state (nothing silently missed).

One user cannot stall ingest (issue 14): every stream counts against its user and its
session (a login session or an API token), refused with 429 beyond `StreamLimits`; a
stream ends as soon as its client disconnects (`LiveStreamResponse` watches for it), and
a client that takes more than ``send_timeout_s`` to take one message, or lets its queue
fill, is dropped. Each message is encoded once, however many streams carry it. A contractor's
subscription only ever receives messages about units registered to that contractor;
a unit the hub cannot place (not yet in the register) goes to unscoped roles only.

Scope of "live": the commits of this process, and those of every other instance on the
same PostgreSQL (LISTEN/NOTIFY) or worker of the same ``serve --workers`` (through the
parent), relayed by `fleet.web.relay`; the pages re-read the API every minute as a
backstop (see app.js).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from fleet.read.shape import out, response, to_json, view_from
from fleet.read.views import REASON_CODE_DOC, EventCodes, event_type_name, iso, phase_name
from fleet.store.base import BatchOp, WriteOp
from fleet.taxonomy import gb_code
from protos.liftwatch.v1 import records_pb2

log = logging.getLogger(__name__)

# A page that has not taken this many messages is too slow (or gone): end its stream.
# (A unit page at 10 car states a second is 50 s behind by then.)
QUEUE_LIMIT = 500


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How many live streams one user (``per_user``, its sessions and tokens together) and
    one session or API token (``per_session``) may hold open; 0 = no limit. A stream whose
    client takes longer than ``send_timeout_s`` to take one message is dropped (see the
    ``[http] live_*`` keys in `fleet.config`)."""

    per_user: int = 8
    per_session: int = 4
    send_timeout_s: float = 10.0


class TooManyStreamsError(Exception):
    """The user or session already holds as many live streams as allowed (answer 429)."""


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One server-sent event: ``kind`` is its SSE event name ("car", "link",
    "counters", "event", "alarms"); ``data`` its JSON body."""

    kind: str
    unit_id: str
    data: Mapping[str, object]
    # Encoded once: a message goes to every stream in scope (hundreds of pages).
    _frame: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        body = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        object.__setattr__(self, "_frame", f"event: {self.kind}\ndata: {body}\n\n".encode())

    def sse(self) -> bytes:
        """The message framed as a server-sent event."""
        return self._frame


# Per-unit kinds go only to subscriptions that asked for that unit (the unit page);
# events and alarm changes go to every subscription in scope (overview, lists).
UNIT_KINDS = frozenset({"car", "link", "counters"})
_UNIT_PAYLOADS = frozenset({"car_state", "link_status", "counters"})


class Subscription:
    """One page's stream: messages in scope, in commit order; None marks the end."""

    def __init__(
        self, scope: str, units: frozenset[str], user: str = "", session: str = ""
    ) -> None:
        self.scope = scope
        self.units = units
        self.user = user
        self.session = session
        self.queue: asyncio.Queue[LiveMessage | None] = asyncio.Queue()
        self.ended = False
        self.released = False

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


@response("LiveCar")
@dataclass(frozen=True)
class CarView:
    """A CarState as the unit page shows it (enum names without their prefixes)."""

    unit_id: str = out()
    time: str | None = out()
    floor: int | None = out()
    direction: str = out("UP, DOWN, NONE or UNSPECIFIED")
    moving: bool | None = out()
    door: str = out("the DoorState name, e.g. CLOSED, OPEN")
    mode: str = out("the ServiceMode name, e.g. NORMAL, INSPECTION")
    occupied: bool | None = out()
    load_percent: int | None = out()
    speed_mm_s: int | None = out()
    door_zone: bool | None = out()


def _opt(message: Any, name: str) -> Any:
    """An optional proto field's value, None when unset."""
    return getattr(message, name) if message.HasField(name) else None


def car_state_view(unit_id: str, time: str | None, car: records_pb2.CarState) -> CarView:
    """A CarState as the unit page shows it."""
    return CarView(
        unit_id=unit_id,
        time=time,
        floor=_opt(car, "floor"),
        direction=records_pb2.Direction.Name(car.direction).removeprefix("DIRECTION_"),
        moving=_opt(car, "moving"),
        door=records_pb2.DoorState.Name(car.door).removeprefix("DOOR_STATE_"),
        mode=records_pb2.ServiceMode.Name(car.mode).removeprefix("SERVICE_MODE_"),
        occupied=_opt(car, "occupied"),
        load_percent=_opt(car, "load_percent"),
        speed_mm_s=_opt(car, "speed_mm_s"),
        door_zone=_opt(car, "door_zone"),
    )


@response("LiveLink")
@dataclass(frozen=True)
class LinkView:
    """A LinkStatus record: the agent's Modbus link to the controller."""

    unit_id: str = out()
    time: str | None = out()
    up: bool = out()
    requests: int = out(minimum=0)
    responses: int = out(minimum=0)
    timeouts: int = out(minimum=0)
    crc_errors: int = out(minimum=0)
    exception_responses: int = out(minimum=0)
    implausible_values: int = out(minimum=0)
    latency_ms_p50: int = out(minimum=0)


def link_status_view(unit_id: str, time: str | None, link: records_pb2.LinkStatus) -> LinkView:
    """A LinkStatus record's view."""
    return view_from(LinkView, link, unit_id=unit_id, time=time)


@response("LiveCounters")
@dataclass(frozen=True)
class CountersView:
    """A Counters record (door medians in ms, trends as ratios)."""

    unit_id: str = out()
    time: str | None = out()
    trips: int = out(minimum=0)
    door_cycles: int = out(minimum=0)
    run_hours: int = out(minimum=0)
    door_open_median_ms: int | None = out()
    door_close_median_ms: int | None = out()
    door_open_trend: float | None = out()
    door_close_trend: float | None = out()
    reopenings_by_landing: dict[str, int] = out("landing -> re-openings there")


def _trend(counters: records_pb2.Counters, name: str) -> float | None:
    return round(getattr(counters, name), 3) if counters.HasField(name) else None


def counters_view(unit_id: str, time: str | None, counters: records_pb2.Counters) -> CountersView:
    """A Counters record's view."""
    return CountersView(
        unit_id=unit_id,
        time=time,
        trips=counters.trips,
        door_cycles=counters.door_cycles,
        run_hours=counters.run_hours,
        door_open_median_ms=_opt(counters, "door_open_median_ms"),
        door_close_median_ms=_opt(counters, "door_close_median_ms"),
        door_open_trend=_trend(counters, "door_open_trend"),
        door_close_trend=_trend(counters, "door_close_trend"),
        reopenings_by_landing={str(k): v for k, v in counters.reopenings_by_landing.items()},
    )


@response("UnitLive")
@dataclass(frozen=True)
class UnitLiveView:
    """/api/units/{unit_id}/live: the newest car state and link status, the counters."""

    unit_id: str = out()
    car: CarView | None = out("null before the first car state")
    link: LinkView | None = out("null before the first link status")
    counters: tuple[CountersView, ...] = out("the counters series, oldest first")


@response("LiveEvent")
@dataclass(frozen=True)
class LiveEventView:
    """An event as the live stream carries it: the stored event's codes and class."""

    unit_id: str = out()
    time: str | None = out()
    type: str = out("event type, e.g. ENTRAPMENT")
    phase: str = out("RAISED or CLEARED")
    event_id: str = out()
    onset: str | None = out()
    floor: int | None = out()
    reason: str = out("the agent's English sentence; the fallback for reason_code")
    codes: EventCodes = out(flatten=True)
    reason_code: str = out(REASON_CODE_DOC)
    reason_params: dict[str, str] = out("the reason's parameters")


def record_json(record: records_pb2.Record) -> LiveMessage | None:
    """The live message of one committed record (None for kinds pages do not show)."""
    kind = record.WhichOneof("payload")
    unit_id = record.unit_id
    time = iso(record.time.ToDatetime(tzinfo=dt.UTC)) if record.HasField("time") else None
    if kind == "car_state":
        return LiveMessage(
            "car", unit_id, dict(to_json(car_state_view(unit_id, time, record.car_state)))
        )
    if kind == "event":
        event = record.event
        at_landing = event.at_landing if event.HasField("at_landing") else None
        view = LiveEventView(
            unit_id=unit_id,
            time=time,
            type=event_type_name(event.type),
            phase=phase_name(event.phase),
            event_id=event.event_id,
            onset=iso(event.onset.ToDatetime(tzinfo=dt.UTC)) if event.HasField("onset") else None,
            floor=_opt(event, "floor"),
            reason=event.reason,
            # the same codes and class as the stored event shows (/api/events)
            codes=EventCodes.of(event.type, gb_code(event.gb_code), at_landing),
            reason_code=event.reason_code,
            reason_params=dict(event.reason_params),
        )
        return LiveMessage("event", unit_id, dict(to_json(view)))
    if kind == "link_status":
        return LiveMessage(
            "link", unit_id, dict(to_json(link_status_view(unit_id, time, record.link_status)))
        )
    if kind == "counters":
        return LiveMessage(
            "counters", unit_id, dict(to_json(counters_view(unit_id, time, record.counters)))
        )
    return None


class LiveHub:
    """Fans committed records out to subscriptions, each scoped to a contractor ("" =
    every unit) and optionally to a set of units for the per-unit kinds."""

    def __init__(
        self,
        contractor_of: Callable[[str], str | None],
        alarm_types: Iterable[int],
        limits: StreamLimits | None = None,
    ):
        # ``contractor_of`` answers from memory (see `UnitContractors`); None = unknown.
        self._contractor_of = contractor_of
        self._alarm_types = frozenset(alarm_types)
        self.limits = limits or StreamLimits()
        self._subscriptions: set[Subscription] = set()
        # Streams held open per user and per session, until their response ends (a
        # stream the hub already ended still holds its connection until then).
        self._per_user: Counter[str] = Counter()
        self._per_session: Counter[str] = Counter()
        self._open = 0
        self.delivered = 0
        self.dropped_subscribers = 0
        self.refused = 0

    def subscribe(
        self, scope: str = "", units: Iterable[str] = (), *, user: str = "", session: str = ""
    ) -> Subscription:
        """A new subscription: events and alarm changes of the units in ``scope``, and
        car, link and counters messages of ``units`` (also only those in scope).

        It counts against ``user`` and ``session`` until `unsubscribe`; raises
        `TooManyStreamsError` (naming the limit's key) when either already holds its
        `StreamLimits` share."""
        limits = self.limits
        if user and limits.per_user and self._per_user[user] >= limits.per_user:
            self.refused += 1
            raise TooManyStreamsError(
                f"user {user!r} already holds {limits.per_user} live streams (the limit, "
                "[http] live_streams_per_user): close a page, or wait for a closed one to end"
            )
        if session and limits.per_session and self._per_session[session] >= limits.per_session:
            self.refused += 1
            raise TooManyStreamsError(
                f"this session already holds {limits.per_session} live streams (the limit, "
                "[http] live_streams_per_session): close a tab, or wait for a closed one to end"
            )
        subscription = Subscription(scope, frozenset(units), user, session)
        self._subscriptions.add(subscription)
        if user:
            self._per_user[user] += 1
        if session:
            self._per_session[session] += 1
        self._open += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (its page went away) and give back its share of the
        limits; a second call does nothing."""
        self._subscriptions.discard(subscription)
        if subscription.released:
            return
        subscription.released = True
        self._open -= 1
        for counts, key in (
            (self._per_user, subscription.user),
            (self._per_session, subscription.session),
        ):
            if key:
                counts[key] -= 1
                if counts[key] <= 0:
                    del counts[key]

    @property
    def subscribers(self) -> int:
        """Open subscriptions the hub still feeds."""
        return len(self._subscriptions)

    @property
    def open_streams(self) -> int:
        """Streams subscribed and not yet unsubscribed (their responses still running)."""
        return self._open

    def streams_of(self, user: str) -> int:
        """How many open streams count against ``user``."""
        return self._per_user[user]

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

    def watched_units(self) -> frozenset[str]:
        """The units some open subscription asked for (unit pages): what other instances
        relay to this one besides events (`fleet.web.relay`)."""
        return frozenset().union(*(s.units for s in self._subscriptions))

    def alarms_changed(self, unit_id: str) -> None:
        """Tell pages that ``unit_id``'s alarms changed (raised, acted on, cleared)."""
        self.publish(LiveMessage("alarms", unit_id, {"unit_id": unit_id}))

    def observe_soon(self, ops: Sequence[WriteOp]) -> None:
        """The committer's observer: schedules `observe` for the loop's next turn and
        returns at once, so that the committer and the observers after it (alarm
        dispatch among them) never wait for the fan-out to the pages."""
        if self._subscriptions:
            asyncio.get_running_loop().call_soon(self.observe, ops)

    def observe(self, ops: Sequence[WriteOp]) -> None:
        """Publish each committed record now; never raises, never blocks."""
        if not self._subscriptions:
            return
        # Ingest's hot path: a car state (most records) is only turned into JSON when an
        # open unit page asked for its unit.
        watched = self.watched_units()
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


class LiveStreamResponse:
    """The ASGI response carrying one subscription as server-sent events.

    It ends (and gives the subscription back to the hub) when the hub ends the
    subscription, when the client disconnects (watched for while idle, not only noticed
    at the next write), and when the client takes longer than ``send_timeout_s`` to take
    one message: then the connection is left to the server to close, never buffered for."""

    def __init__(
        self,
        hub: LiveHub,
        subscription: Subscription,
        *,
        keepalive_s: float,
        reconnect_ms: int,
        on_end: Callable[[], None] = lambda: None,
    ) -> None:
        self._hub = hub
        self._subscription = subscription
        self._keepalive_s = keepalive_s
        self._reconnect_ms = reconnect_ms
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream until the subscription ends, the client goes or stalls."""
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-store"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            pump = asyncio.create_task(self._pump(send))
            gone = asyncio.create_task(_disconnected(receive))
            try:
                await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, gone):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            ended_by_hub = (
                pump.done() and not pump.cancelled() and pump.exception() is None and pump.result()
            )
            if ended_by_hub:  # finish the response properly; the page reconnects
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": b""}),
                        self._hub.limits.send_timeout_s or None,
                    )
        finally:
            self._hub.unsubscribe(self._subscription)
            self._on_end()

    async def _pump(self, send: Send) -> bool:
        """Send messages until the subscription ends (True) or the client stalls (False)."""
        subscription = self._subscription
        timeout = self._hub.limits.send_timeout_s or None
        chunk = f"retry: {self._reconnect_ms}\n: connected\n\n".encode()
        while True:
            try:
                await asyncio.wait_for(
                    send({"type": "http.response.body", "body": chunk, "more_body": True}),
                    timeout,
                )
            except TimeoutError:
                # The client takes nothing: drop it rather than queue for it.
                self._hub.unsubscribe(subscription)
                self._hub.dropped_subscribers += 1
                log.info("live stream of %r dropped: its client stopped reading", subscription.user)
                return False
            try:
                message = await asyncio.wait_for(subscription.queue.get(), self._keepalive_s)
            except TimeoutError:
                chunk = b": keepalive\n\n"
                continue
            if message is None:
                return True  # ended (lagging or shutdown): the page reconnects
            chunk = message.sse()


async def _disconnected(receive: Receive) -> None:
    """Return once the client has gone (the request of a stream has no body to read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def session_key(kind: str, secret: str) -> str:
    """What a session or API token is counted under: a digest, so that the hub never holds
    the credential itself (``kind`` keeps a cookie and a token apart)."""
    return f"{kind}:{hashlib.sha256(secret.encode()).hexdigest()[:32]}"


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

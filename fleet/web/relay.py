"""Live updates from every instance (issue 18, item 3): several fleet instances on one
PostgreSQL relay what they commit to each other's dashboards by LISTEN/NOTIFY.

The live hub (`fleet.web.live`) is fed by its own process's group commits. `LiveRelay`
is a committer observer too: after each commit it passes on, to every other instance,

- every event record (the overview, alarm and unit pages show them, and an alarm-type
  event also tells pages that the unit's alarms changed), and
- the car, link and counters records of the units some page on another instance watches
  (unit pages): each instance announces the units its pages watch every `WATCH_EVERY_S`
  on `WATCH_CHANNEL`; an announcement counts for `WATCH_TTL_S`.

Records travel serialized (protobuf, base64) in NOTIFY payloads of at most
`PAYLOAD_LIMIT` bytes, on `CHANNEL`, tagged with the sending instance (which ignores its
own); the receiving instance hands them to its hub as if it had committed them itself,
so scoping (contractors, watched units) is the hub's, unchanged. Notifications are sent
after the commit, from a connection of their own: a page never sees what the store could
still lose, and ingest never waits for the relay (a bounded queue; beyond `QUEUE_LIMIT`
records the oldest are dropped and counted, the pages re-read the API every minute).

The transport is PostgreSQL's (`PostgresTransport`) whenever the store is PostgreSQL;
``serve --workers`` on one SQLite file relays the same messages through the parent
process instead (`PipeTransport`: each worker's pipe to the parent, which passes every
message on to the other workers, `fleet.serve.workers`), so worker 0's pages, the only
ones, see what every worker ingests.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, Protocol

import psycopg

from fleet.store.base import BatchOp, WriteOp
from fleet.web.live import LiveHub
from protos.liftwatch.v1 import records_pb2

log = logging.getLogger(__name__)

CHANNEL = "liftwatch_live"
WATCH_CHANNEL = "liftwatch_live_watch"
# PostgreSQL refuses payloads of 8000 bytes or more; room for the JSON around them.
PAYLOAD_LIMIT = 7000
QUEUE_LIMIT = 20_000
WATCH_EVERY_S = 1.0
WATCH_TTL_S = 5.0
# After the relay's connection failed, try again this long later.
RETRY_S = 2.0
_UNIT_PAYLOADS = frozenset({"car_state", "link_status", "counters"})


class LiveRelay:
    """Relays committed records between instances on one PostgreSQL; see the module
    docstring. ``hub`` None: this instance serves no pages, it only sends."""

    def __init__(
        self,
        transport: Callable[[], contextlib.AbstractAsyncContextManager[Transport]],
        hub: LiveHub | None,
        origin: str,
    ) -> None:
        """``transport`` opens the way to the other instances (called again after a
        failure); ``origin`` names this instance in every message."""
        self._transport = transport
        self._hub = hub
        self.origin = origin
        self._queue: collections.deque[bytes] = collections.deque()
        self._wake = asyncio.Event()
        # Units watched by pages elsewhere: origin -> (units, valid until on time.monotonic).
        self._remote: dict[str, tuple[frozenset[str], float]] = {}
        self._watched: frozenset[str] = frozenset()
        self.sent = 0
        self.received = 0
        self.dropped = 0

    def observe(self, ops: Sequence[WriteOp]) -> None:
        """The committer's observer: queue what other instances' pages may show. Never
        blocks, never raises."""
        watched = self._watched
        for op in ops:
            if not isinstance(op, BatchOp):
                continue
            for record in op.records:
                kind = record.WhichOneof("payload")
                if kind == "event" or (kind in _UNIT_PAYLOADS and record.unit_id in watched):
                    if len(self._queue) >= QUEUE_LIMIT:
                        self._queue.popleft()
                        self.dropped += 1
                    self._queue.append(record.SerializeToString())
                    self._wake.set()

    async def run(self) -> None:
        """Send, receive and announce until cancelled; a lost connection is opened again
        after `RETRY_S`."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be briefly unreachable
                log.warning("live relay: %s; again in %.0f s", exc, RETRY_S)
            await asyncio.sleep(RETRY_S)

    async def _session(self) -> None:
        async with self._transport() as transport, asyncio.TaskGroup() as tasks:
            tasks.create_task(self._send(transport))
            tasks.create_task(self._listen(transport))

    async def _send(self, transport: Transport) -> None:
        announced = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WATCH_EVERY_S):
                    await self._wake.wait()
            self._wake.clear()
            now = time.monotonic()
            self._watched = frozenset().union(
                *(units for units, until in self._remote.values() if until > now)
            )
            if self._hub is not None and now - announced >= WATCH_EVERY_S:
                announced = now
                for payload in _chunks(self.origin, "u", sorted(self._hub.watched_units())):
                    await transport.send(WATCH_CHANNEL, payload)
            records = [base64.b64encode(r).decode() for r in self._drain()]
            for payload in _chunks(self.origin, "r", records):
                await transport.send(CHANNEL, payload)
            self.sent += len(records)

    def _drain(self) -> list[bytes]:
        out = list(self._queue)
        self._queue.clear()
        return out

    async def _listen(self, transport: Transport) -> None:
        async for channel, payload in transport.messages():
            try:
                message = json.loads(payload)
                origin = str(message["o"])
                if origin == self.origin:
                    continue
                if channel == WATCH_CHANNEL:
                    units = frozenset(str(u) for u in message["u"])
                    if message.get("i", 0) > 0:  # a later chunk of the same announcement
                        units |= self._remote.get(origin, (frozenset(), 0.0))[0]
                    self._remote[origin] = (units, time.monotonic() + WATCH_TTL_S)
                    continue
                records = tuple(
                    records_pb2.Record.FromString(base64.b64decode(r)) for r in message["r"]
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("live relay: a notification that does not parse: %s", exc)
                continue
            self.received += len(records)
            if self._hub is not None and records:
                self._hub.observe([BatchOp("", records)])


class Transport(Protocol):
    """The way between the instances: named channels of text messages, every message
    sent reaching every other instance (and maybe this one: its origin tells)."""

    async def send(self, channel: str, payload: str) -> None:
        """Send ``payload`` on ``channel``."""

    def messages(self) -> AsyncIterator[tuple[str, str]]:
        """(channel, payload) of every message arriving, until the transport fails."""


class PostgresTransport:
    """LISTEN/NOTIFY on the fleet's database: a connection to send, one to listen."""

    def __init__(self, sender: psycopg.AsyncConnection[Any], listener: Any) -> None:
        self._sender = sender
        self._listener = listener

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[PostgresTransport]:
        """Both connections open, listening, for the block."""
        async with (
            await psycopg.AsyncConnection.connect(url, autocommit=True) as sender,
            await psycopg.AsyncConnection.connect(url, autocommit=True) as listener,
        ):
            await listener.execute(f"LISTEN {CHANNEL}")
            await listener.execute(f"LISTEN {WATCH_CHANNEL}")
            yield cls(sender, listener)

    async def send(self, channel: str, payload: str) -> None:
        """NOTIFY ``channel`` with ``payload``."""
        await self._sender.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    async def messages(self) -> AsyncIterator[tuple[str, str]]:
        """Every notification on the channels listened to."""
        async for note in self._listener.notifies():
            yield note.channel, note.payload


class PipeTransport:
    """A ``serve --workers`` worker's pipe to the parent, which passes each message on to
    every other worker (`fleet.serve.workers`). Read on the event loop when the pipe is
    readable; a send of a few kB goes into the pipe's buffer, which the parent drains."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, pipe: Connection) -> AsyncIterator[PipeTransport]:
        """The transport over ``pipe`` for the block (the pipe stays open)."""
        yield cls(pipe)

    async def send(self, channel: str, payload: str) -> None:
        """Hand (channel, payload) to the parent."""
        self._pipe.send((channel, payload))

    async def messages(self) -> AsyncIterator[tuple[str, str]]:
        """Every message the parent passes on from the other workers."""
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        loop.add_reader(self._pipe.fileno(), arrived.set)
        try:
            while True:
                await arrived.wait()
                arrived.clear()
                while self._pipe.poll():
                    channel, payload = self._pipe.recv()
                    yield str(channel), str(payload)
        finally:
            loop.remove_reader(self._pipe.fileno())


def _chunks(origin: str, key: str, items: list[str]) -> list[str]:
    """``items`` as JSON payloads ``{"o": origin, key: [...]}`` of at most
    `PAYLOAD_LIMIT` bytes each (an empty list: one payload only for key "u", so that
    a page closing its last unit is announced)."""
    payloads: list[str] = []
    batch: list[str] = []
    size = 0
    for item in items:
        if batch and size + len(item) + 3 > PAYLOAD_LIMIT - len(origin) - 30:
            payloads.append(json.dumps({"o": origin, "i": len(payloads), key: batch}))
            batch, size = [], 0
        batch.append(item)
        size += len(item) + 3
    if batch or (key == "u" and not payloads):
        payloads.append(json.dumps({"o": origin, "i": len(payloads), key: batch}))
    return payloads

"""The delivery loop: per platform, one sender at a time, in order per unit, until sent.

Each configured platform gets its own task (`Forwarder`), its own cursor rows and its own
lease in the store (`fleet.store.northbound`), so a slow or dead platform holds back only
itself. A round:

1. hold the lease: take it when free or run out, or renew ours (another fleet instance
   on the same database then only watches; it takes over when our lease runs out, e.g.
   when this process died);
2. send the dead letters an operator asked to replay (``northbound replay``), rendered
   with the mapping as it is now;
3. read the backlog (`NorthboundOutbox.pending`: each unit's entries past its cursor, in
   seq order) and send entry by entry, no faster than ``rate_per_s``. After each answer
   the cursor moves in a transaction fenced by the lease: delivered (or nothing to send
   for it, the mapping skips it), or refused, into the dead letters with the reason.
   "Not now" (platform down, 5xx, 429) ends the round and the same entry is tried again
   after the back-off (``retry_initial_s`` doubling up to ``retry_max_s``), or after the
   platform's Retry-After when it sent one.

What this promises. Nothing is lost: the cursor moves only after the platform's answer,
so a crash, a restart or an outage of any length leaves the entry in the backlog (the
history itself is the durable queue). Order per unit: a unit's entries are sent one at a
time in seq order, and an entry is not sent before the one before it was answered.
Nothing sent twice: one instance holds a platform's lease, and a send starts only with at
least ``timeout_s`` + `LEASE_MARGIN_S` of the lease left, so the send is over before
another instance could take the lease. What remains is the window between the
platform's answer and the cursor's commit: a process killed exactly there sends that
entry again after its restart, with the same idempotency key (`message_key`), which the
platform uses to discard the copy (409 or 2xx: both count as delivered here).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from fleet.clock import Clock
from fleet.northbound.config import NorthboundConfig, PlatformConfig
from fleet.northbound.mapping import HEARTBEAT, NorthboundMapping, Rendered, message_key
from fleet.northbound.transport import Outcome, SendResult, Transport, open_transport
from fleet.store.base import Store
from fleet.store.northbound import (
    HistoryEntry,
    Lease,
    LeaseLostError,
    NorthboundOutbox,
    PlatformStatus,
)
from fleet.store.sql import SqlStore, to_us
from fleet.store.worker import StoreWorker

log = logging.getLogger(__name__)

# A send starts only with this much more than timeout_s left of the lease (clock steps,
# the store's own latency).
LEASE_MARGIN_S = 2.0
# The gauges (backlog, oldest unsent) are recomputed at most this often.
STATUS_EVERY_S = 5.0

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


def instance_id() -> str:
    """This process's name as a lease owner: host, pid and a random tag (a pid is reused
    after a restart; the lease of the dead process must not look like ours)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class NorthboundMetrics:
    """Per platform: backlog, age of the oldest unsent entry, sent, rejected, retries,
    dead letters waiting, and whether this instance is the sender."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog = Gauge(
            "liftwatch_fleet_northbound_backlog",
            "History entries not yet sent to (or skipped or dead-lettered for) the platform.",
            ["platform"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            "liftwatch_fleet_northbound_oldest_unsent_seconds",
            "Age of the oldest history entry the platform has not yet been sent (0: none).",
            ["platform"],
            registry=registry,
        )
        self.sent = Counter(
            "liftwatch_fleet_northbound_sent",
            "Messages the platform took (by this instance).",
            ["platform"],
            registry=registry,
        )
        self.rejected = Counter(
            "liftwatch_fleet_northbound_rejected",
            "Messages the platform refused; they are in the dead-letter list.",
            ["platform"],
            registry=registry,
        )
        self.retries = Counter(
            "liftwatch_fleet_northbound_retries",
            "Sends that failed for now (platform down, 5xx, 429) and will be tried again.",
            ["platform"],
            registry=registry,
        )
        self.dead_letters = Gauge(
            "liftwatch_fleet_northbound_dead_letters",
            "Dead letters of the platform not replayed (state dead).",
            ["platform"],
            registry=registry,
        )
        self.failures = Counter(
            "liftwatch_fleet_northbound_failures",
            "Runs of the platform's forwarder ended by an unexpected error (logged; restarted).",
            ["platform"],
            registry=registry,
        )
        self.sender = Gauge(
            "liftwatch_fleet_northbound_sender",
            "1 while this instance holds the platform's lease (sends for it), else 0.",
            ["platform"],
            registry=registry,
        )


def _outbox(store: Store) -> NorthboundOutbox:
    assert isinstance(store, SqlStore)
    return NorthboundOutbox(store)


class Forwarder:
    """Forwards the history to one platform (see the module docstring)."""

    def __init__(
        self,
        store: StoreWorker,
        platform: PlatformConfig,
        clock: Clock,
        metrics: NorthboundMetrics,
        *,
        owner: str | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: Transport | None = None,
    ) -> None:
        assert platform.loaded is not None
        self.platform = platform
        self.mapping: NorthboundMapping = platform.loaded
        self.owner = owner or instance_id()
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._sleep = sleep
        self._transport = transport
        self._lease: Lease | None = None
        self._next_send = 0  # µs: the earliest the next send may start
        self._status_at: dt.datetime | None = None
        # The heartbeat under way: its time (µs) and the last unit sent; None between beats.
        self._beat: int | None = None
        self._beat_after = ""
        self._next_beat = 0

    def _now_us(self) -> int:
        return to_us(self._clock())

    async def _do(self, method: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``method`` of the store's `NorthboundOutbox`, run on the store's thread."""
        return await self._store.call(lambda s: method(_outbox(s), *args, **kwargs))

    async def run(self) -> None:
        """Forward until cancelled; gives the lease up on the way out."""
        name = self.platform.name
        from_start = self.platform.start == "beginning"
        now = self._now_us()
        await self._do(NorthboundOutbox.ensure_platform, name, now, from_start=from_start)
        if self._transport is None:
            self._transport = open_transport(self.platform)
        backoff = self.platform.retry_initial_s
        try:
            while True:
                if not await self._hold():
                    await self._refresh(force=False)
                    await self._sleep(min(self.platform.lease_s / 3, 5.0))
                    continue
                try:
                    progressed, failure = await self._round()
                except LeaseLostError as exc:
                    log.warning("%s", exc)
                    self._drop_lease()
                    continue
                await self._refresh(force=progressed)
                if failure is not None:
                    wait = failure.retry_after_s if failure.retry_after_s is not None else backoff
                    backoff = min(backoff * 2, self.platform.retry_max_s)
                    await self._wait_holding(wait)
                elif not progressed:
                    backoff = self.platform.retry_initial_s
                    await self._wait_holding(self.platform.poll_s)
                else:
                    backoff = self.platform.retry_initial_s
        finally:
            await self._stop()

    async def _stop(self) -> None:
        lease, self._lease = self._lease, None
        self._metrics.sender.labels(platform=self.platform.name).set(0)
        if lease is not None:
            with contextlib.suppress(Exception):
                await self._do(NorthboundOutbox.release, lease)
        # A run started again (`supervised`) opens a fresh transport.
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                await transport.aclose()

    def _drop_lease(self) -> None:
        self._lease = None
        self._metrics.sender.labels(platform=self.platform.name).set(0)

    async def _hold(self) -> bool:
        """Take or renew the lease; whether this instance is the platform's sender."""
        now = self._now_us()
        lease_s = self.platform.lease_s
        name = self.platform.name
        lease = self._lease
        if lease is None:
            self._lease = await self._do(NorthboundOutbox.acquire, name, self.owner, now, lease_s)
            if self._lease is not None:
                log.info("northbound %s: this instance (%s) sends now", name, self.owner)
        else:
            try:
                self._lease = await self._do(NorthboundOutbox.renew, lease, now, lease_s)
            except LeaseLostError as exc:
                log.warning("%s", exc)
                self._lease = None
        self._metrics.sender.labels(platform=name).set(1 if self._lease else 0)
        return self._lease is not None

    async def _wait_holding(self, seconds: float) -> None:
        """Wait ``seconds``, renewing the lease on the way so that a long back-off does not
        hand the platform to another instance."""
        left = seconds
        step = self.platform.lease_s / 3
        while left > 0:
            await self._sleep(min(left, step))
            left -= step
            if left > 0 and not await self._hold():
                return

    async def _fresh_lease(self) -> Lease:
        """Our lease with room for one send, renewed when short; `LeaseLostError` if gone."""
        lease = self._lease
        if lease is None:
            raise LeaseLostError(f"{self.platform.name}: no lease")
        room = (lease.until_us - self._now_us()) / 1_000_000
        if room < self.platform.timeout_s + LEASE_MARGIN_S:
            now, lease_s = self._now_us(), self.platform.lease_s
            lease = await self._do(NorthboundOutbox.renew, lease, now, lease_s)
            self._lease = lease
        return lease

    async def _paced_send(self, message: Rendered) -> SendResult:
        # No faster than rate_per_s: each send starts at least 1/rate after the previous
        # one started (on the forwarder's clock, the one its waits run on).
        rate = self.platform.rate_per_s
        if rate > 0:
            wait = (self._next_send - self._now_us()) / 1_000_000
            if wait > 0:
                await self._sleep(wait)
            self._next_send = max(self._next_send, self._now_us()) + int(1_000_000 / rate)
        assert self._transport is not None
        return await self._transport.send(message)

    async def _round(self) -> tuple[bool, SendResult | None]:
        """One pass over replays and the backlog: whether anything moved, and the failure
        that ended it early (retry later), if any."""
        progressed, failure = await self._replays()
        if failure is not None:
            return progressed, failure
        name, batch = self.platform.name, self.platform.batch
        entries = await self._do(NorthboundOutbox.pending, name, batch, batch)
        skipped: list[HistoryEntry] = []
        for entry in entries:
            try:
                message = self._render(entry)
            except ValueError as exc:
                await self._refuse(entry, None, f"cannot render: {exc}", "")
                progressed = True
                continue
            if message is None:
                skipped.append(entry)
                continue
            lease = await self._fresh_lease()
            result = await self._paced_send(message)
            now = self._now_us()
            if result.outcome is Outcome.DELIVERED:
                done = [*skipped, entry]
                await self._do(NorthboundOutbox.advance, lease, done, 1, now)
                skipped = []
                self._metrics.sent.labels(platform=name).inc()
                progressed = True
            elif result.outcome is Outcome.REJECTED:
                if skipped:
                    done = list(skipped)
                    await self._do(NorthboundOutbox.advance, lease, done, 0, now)
                    skipped = []
                await self._refuse(entry, result.status, result.reason, message)
                progressed = True
            else:
                self._metrics.retries.labels(platform=name).inc()
                text = f"{result.status or 'no answer'}: {result.reason}"
                await self._do(NorthboundOutbox.note_error, name, text, now)
                if skipped:
                    done = list(skipped)
                    await self._do(NorthboundOutbox.advance, lease, done, 0, now)
                return progressed or bool(skipped), result
        if skipped:
            lease = await self._fresh_lease()
            now = self._now_us()
            done = list(skipped)
            await self._do(NorthboundOutbox.advance, lease, done, 0, now)
            progressed = True
        beat, failure = await self._heartbeats()
        return progressed or beat, failure

    async def _heartbeats(self) -> tuple[bool, SendResult | None]:
        """Send the next ``batch`` units of the heartbeat under way (starting one when
        due): whether any was sent, and the failure that stopped it. A beat older than
        ``heartbeat_s`` (an outage) is dropped for a new one: it is not history."""
        every = self.platform.heartbeat_s
        if every <= 0 or HEARTBEAT not in self.mapping.messages:
            return False, None
        now = self._now_us()
        if self._beat is not None and now - self._beat >= every * 1_000_000:
            self._beat = None  # superseded
        if self._beat is None:
            if now < self._next_beat:
                return False, None
            self._beat, self._beat_after = now, ""
            self._next_beat = now + int(every * 1_000_000)
        rows = await self._do(NorthboundOutbox.unit_statuses, self._beat_after, self.platform.batch)
        if not rows:
            self._beat = None
            return False, None
        name = self.platform.name
        for unit_id, status, seen, agent_id in rows:
            detail = {"status": status, "last_seen": _iso_us(seen), "agent_id": agent_id}
            message = self.mapping.render_heartbeat(
                self.platform.source_id, unit_id, self._beat, detail
            )
            if message is not None:
                await self._fresh_lease()
                result = await self._paced_send(message)
                if result.outcome is Outcome.RETRY:
                    self._metrics.retries.labels(platform=name).inc()
                    return True, result
                if result.outcome is Outcome.REJECTED:
                    # Not dead-lettered: the next beat says the same, newer.
                    self._metrics.rejected.labels(platform=name).inc()
                    log.warning(
                        "northbound %s refused a heartbeat of %s: %s", name, unit_id, result.reason
                    )
                else:
                    self._metrics.sent.labels(platform=name).inc()
            self._beat_after = unit_id
        return True, None

    def _render(self, entry: HistoryEntry) -> Rendered | None:
        return self.mapping.render(
            self.platform.source_id, entry.unit_id, entry.seq, entry.at_us, entry.kind, entry.detail
        )

    async def _refuse(
        self, entry: HistoryEntry, status: int | None, reason: str, message: Rendered | str
    ) -> None:
        lease = await self._fresh_lease()
        now = self._now_us()
        key = self._key(entry)
        if isinstance(message, Rendered):
            body, kind = message.encoded().decode(), message.name
        else:
            body, kind = message, entry.kind
        await self._do(
            NorthboundOutbox.dead_letter, lease, entry, key, kind, status, reason, body, now
        )
        self._metrics.rejected.labels(platform=self.platform.name).inc()
        log.warning(
            "northbound %s refused %s#%d (%s): %s",
            self.platform.name,
            entry.unit_id,
            entry.seq,
            status,
            reason,
        )

    def _key(self, entry: HistoryEntry) -> str:
        return message_key(self.platform.source_id, entry.unit_id, entry.seq)

    async def _replays(self) -> tuple[bool, SendResult | None]:
        name, batch = self.platform.name, self.platform.batch
        letters = await self._do(NorthboundOutbox.to_replay, name, batch)
        progressed = False
        for letter in letters:
            entry = await self._do(NorthboundOutbox.entry, letter.unit_id, letter.seq)
            message = None
            if entry is not None:
                try:
                    message = self._render(entry)
                except ValueError:
                    message = None
            lease = await self._fresh_lease()
            if entry is None or message is None:
                # The mapping now sends nothing for it (or the entry is gone): done.
                now = self._now_us()
                await self._do(NorthboundOutbox.replayed, lease, letter.id, now, sent=False)
                progressed = True
                continue
            result = await self._paced_send(message)
            now = self._now_us()
            if result.outcome is Outcome.DELIVERED:
                await self._do(NorthboundOutbox.replayed, lease, letter.id, now, sent=True)
                self._metrics.sent.labels(platform=name).inc()
            elif result.outcome is Outcome.REJECTED:
                await self._refuse(entry, result.status, result.reason, message)
            else:
                self._metrics.retries.labels(platform=name).inc()
                return progressed, result
            progressed = True
        return progressed, None

    async def _refresh(self, *, force: bool) -> PlatformStatus | None:
        now = self._clock()
        if (
            not force
            and self._status_at is not None
            and (now - self._status_at).total_seconds() < STATUS_EVERY_S
        ):
            return None
        self._status_at = now
        name = self.platform.name
        status = await self._do(NorthboundOutbox.status, name)
        publish_status(self._metrics, status, now)
        return status


def _iso_us(us: int | None) -> str | None:
    if us is None:
        return None
    moment = dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def publish_status(metrics: NorthboundMetrics, status: PlatformStatus, now: dt.datetime) -> None:
    """Set the platform's gauges from ``status`` as of ``now``."""
    name = status.platform
    metrics.backlog.labels(platform=name).set(status.backlog)
    age = 0.0 if status.oldest_unsent is None else (now - status.oldest_unsent).total_seconds()
    metrics.oldest_age.labels(platform=name).set(max(0.0, age))
    metrics.dead_letters.labels(platform=name).set(status.dead_letters)


async def supervised(forwarder: Forwarder, sleep: Sleep = asyncio.sleep) -> None:
    """Run ``forwarder`` until cancelled; an unexpected failure (the store unreachable, a
    bug) is logged and the forwarder starts again after ``retry_max_s`` at most, so one
    platform's trouble never ends the fleet or the other platforms' forwarders."""
    wait = forwarder.platform.retry_initial_s
    while True:
        try:
            await forwarder.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            forwarder._metrics.failures.labels(platform=forwarder.platform.name).inc()
            log.exception(
                "northbound %s: forwarder failed; starting again", forwarder.platform.name
            )
            await sleep(wait)
            wait = min(wait * 2, forwarder.platform.retry_max_s)


@contextlib.asynccontextmanager
async def running_northbound(
    store: StoreWorker,
    config: NorthboundConfig,
    clock: Clock,
    registry: CollectorRegistry,
) -> AsyncIterator[Sequence[Forwarder]]:
    """Run a `Forwarder` per enabled platform for the duration of the block; on the way
    out each stops and gives its lease up."""
    metrics = NorthboundMetrics(registry)
    forwarders = [
        Forwarder(store, p, clock, metrics) for p in config.platform.values() if p.enabled
    ]
    tasks = [
        asyncio.create_task(supervised(f), name=f"northbound-{f.platform.name}") for f in forwarders
    ]
    try:
        yield forwarders
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

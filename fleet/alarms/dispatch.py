"""The alarm dispatcher: sends alarms to their targets until someone acknowledges them.

The durable queue is the store (``alarms`` and ``alarm_deliveries``): the ingest
transaction that commits an alarm-type RAISED event creates its alarm row, so nothing is
lost to a crash between commit and send, and a restarted fleet carries on where it was.
After the commit the group committer calls `Dispatcher.observe`, which only sets an
event: the agent's ack never waits for a send.

Each round (`Dispatcher.run`) asks the store to create the sends of new alarms, escalate
the overdue ones and *lease* every send that is due (``alarms.timeout_s`` + a margin), then
runs the sends concurrently. A failed send is retried with exponential back-off
(``retry_initial_s`` doubling up to ``retry_max_s``); an accepted one is repeated every
``repeat_s`` until the alarm is acknowledged (EN 81-28: an alarm is re-sent until a person
confirms it). The lease makes this safe with several fleets on one database (or ``serve
--workers``): a send is claimed by one of them, and a fleet killed mid-send leaves a lease
that expires into a retry. Delivery is therefore at least once: receivers deduplicate on
``alarm_id`` (``attempt`` counts the sends to that target). With several fleets only
the one holding the dispatch role (`fleet.serve.roles`) runs rounds at all; another takes
the role, and the rounds, when it dies.

Targets: a webhook (HTTP POST of the alarm JSON, signed with HMAC-SHA256 when a secret is
set, see `signature`) and MQTT (QoS 1 publish to ``TOPIC/UNIT_ID``; the send succeeds
when the broker's PUBACK arrives). MQTT connects per send: alarms are rare, and a fresh
connection cannot be a half-dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence

import httpx

from fleet.alarms.config import AlarmsConfig, TargetConfig
from fleet.clock import Clock
from fleet.read.views import event_type_name, iso
from fleet.store.base import AlarmRow, BatchOp, Delivery, DispatchPlan, WriteOp
from fleet.store.worker import StoreWorker

log = logging.getLogger(__name__)

# With nothing due, look again this often anyway (an alarm acknowledged by the CLI in
# another process, a send leased by a fleet that died).
IDLE_ROUND_S = 1.0
LEASE_MARGIN_S = 5.0
SIGNATURE_HEADER = "X-LiftWatch-Signature"
TIMESTAMP_HEADER = "X-LiftWatch-Timestamp"
# Connection attempts a webhook send makes again at once (httpx: connect errors only).
WEBHOOK_CONNECT_RETRIES = 1


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature header value: ``sha256=`` HMAC-SHA256 hex over
    ``TIMESTAMP.BODY`` (the timestamp is signed too, so a captured request cannot be
    replayed later with a new one)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def alarm_payload(alarm: AlarmRow, target: str, attempt: int, escalation: bool) -> bytes:
    """The JSON body sent to a target for one alarm."""
    body = {
        "alarm_id": alarm.alarm_id,
        "unit_id": alarm.unit_id,
        "type": event_type_name(alarm.type),
        "event_id": alarm.event_id,
        "state": alarm.state,
        "onset": iso(alarm.onset),
        "raised": iso(alarm.raised),
        "cleared": iso(alarm.cleared),
        "floor": alarm.floor,
        "reason": alarm.reason,
        "building": alarm.building,
        "address": alarm.address,
        "street": alarm.street,
        "contractor": alarm.contractor,
        "target": target,
        "attempt": attempt,
        "escalation": escalation,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


async def send_webhook(
    target: TargetConfig, body: bytes, alarm: AlarmRow, timeout_s: float
) -> None:
    """POST ``body`` to the target's URL; raises unless it answers 2xx within
    ``timeout_s`` (the whole send: connect, TLS, request and reply).

    On httpx, on the event loop (no thread per send). A refused or timed-out connection
    is tried again at once, within the same bound (`WEBHOOK_CONNECT_RETRIES`: a receiver
    restarting); every other failure is the dispatcher's to retry with its back-off. A
    fresh client per send, as for MQTT: alarms are rare, and a fresh connection cannot
    be a half-dead one. Redirects are not followed: a 3xx is not the receiver's 2xx.
    Server certificates are checked against the system's trust store, as before.
    """
    headers = {"Content-Type": "application/json", "X-LiftWatch-Alarm": str(alarm.alarm_id)}
    if target.secret:
        stamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = stamp
        headers[SIGNATURE_HEADER] = signature(target.secret, stamp, body)
    transport = httpx.AsyncHTTPTransport(
        verify=ssl.create_default_context(), retries=WEBHOOK_CONNECT_RETRIES
    )
    try:
        async with (
            asyncio.timeout(timeout_s),
            httpx.AsyncClient(transport=transport, timeout=timeout_s) as client,
        ):
            reply = await client.post(target.url, content=body, headers=headers)
    except TimeoutError:
        raise RuntimeError(f"{target.url}: no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise RuntimeError(f"{target.url}: {exc!r}") from None
    if not reply.is_success:
        raise RuntimeError(f"HTTP {reply.status_code} from {target.url}")


async def send_mqtt(target: TargetConfig, body: bytes, alarm: AlarmRow, timeout_s: float) -> None:
    """Publish ``body`` at QoS 1 to ``TOPIC/UNIT_ID``; returns once the broker acked."""
    try:
        import aiomqtt  # the `mqtt` extra, needed only with an mqtt target
    except ImportError:
        raise RuntimeError("the mqtt target needs aiomqtt (pip install liftwatch[mqtt])") from None
    try:
        async with asyncio.timeout(timeout_s):
            async with aiomqtt.Client(
                target.host,
                target.port,
                username=target.username or None,
                password=target.password or None,
                timeout=timeout_s,
            ) as client:
                await client.publish(f"{target.topic}/{alarm.unit_id}", body, qos=1)
    except aiomqtt.MqttError as exc:
        raise RuntimeError(f"mqtt {target.host}:{target.port}: {exc}") from None
    except TimeoutError:
        raise RuntimeError(f"mqtt {target.host}:{target.port}: no PUBACK in time") from None


def plan_of(config: AlarmsConfig) -> DispatchPlan:
    """What the store needs of ``config`` each round."""
    return DispatchPlan(
        targets=config.targets,
        escalation_targets=config.escalation_targets,
        escalate_after_s=config.escalate_after_s,
        lease_s=config.timeout_s + LEASE_MARGIN_S,
    )


def backoff_s(config: AlarmsConfig, attempt: int) -> float:
    """The wait after failed send number ``attempt`` (1-based): doubling, capped."""
    return float(min(config.retry_max_s, config.retry_initial_s * 2 ** min(attempt - 1, 30)))


class Dispatcher:
    """Runs the dispatch rounds of one fleet process; see the module docstring."""

    def __init__(
        self,
        store: StoreWorker,
        config: AlarmsConfig,
        clock: Clock,
        on_send: Callable[[str, bool], None] | None = None,
        owns: Callable[[], bool] | None = None,
    ) -> None:
        """``owns``: whether this instance runs dispatch now (the dispatch role of
        `fleet.serve.roles`); None: always (one instance)."""
        self._store = store
        self._owns = owns
        self._config = config
        self._clock = clock
        self._plan = plan_of(config)
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._types = config.type_numbers
        self._on_send = on_send

    def observe(self, ops: Sequence[WriteOp]) -> None:
        """Called after each group commit: wake a round when an alarm may have been
        raised or cleared. Never blocks (the agent's ack follows at once)."""
        for op in ops:
            if isinstance(op, BatchOp) and any(
                r.WhichOneof("payload") == "event" and r.event.type in self._types
                for r in op.records
            ):
                self._wake.set()
                return

    def wake(self) -> None:
        """Run a round now (an alarm was acknowledged through the API)."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch rounds until cancelled; store errors are logged and retried."""
        try:
            while True:
                self._wake.clear()
                delay = IDLE_ROUND_S
                try:
                    delay = await self._round()
                except Exception as exc:  # the store may be briefly unreachable
                    log.error("alarm dispatch round failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            for task in self._sending:
                task.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)

    async def _round(self) -> float:
        if self._owns is not None and not self._owns():
            return IDLE_ROUND_S  # another instance dispatches; look again for failover
        now = self._clock()
        plan = self._plan
        deliveries = await self._store.call(lambda s: s.claim_deliveries(plan, now))
        for delivery in deliveries:
            task = asyncio.create_task(self._send(delivery), name="alarm-send")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        next_at = await self._store.call(lambda s: s.next_dispatch_at(plan))
        if next_at is None:
            return IDLE_ROUND_S
        return max(0.0, min(IDLE_ROUND_S, (next_at - self._clock()).total_seconds()))

    async def _send(self, delivery: Delivery) -> None:
        # Back-off and repeats count from the start of the attempt, not its end: a target
        # that takes its time to fail does not stretch the schedule.
        started = self._clock()
        target = self._config.target.get(delivery.target)
        body = alarm_payload(delivery.alarm, delivery.target, delivery.attempt, delivery.escalation)
        error = ""
        try:
            if target is None:
                raise RuntimeError(f"target {delivery.target!r} is no longer configured")
            send = send_webhook if target.kind == "webhook" else send_mqtt
            await send(target, body, delivery.alarm, self._config.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a send is retried, never fatal
            error = str(exc) or type(exc).__name__
        now = self._clock()
        next_at: dt.datetime | None
        if error:
            next_at = started + dt.timedelta(seconds=backoff_s(self._config, delivery.attempt))
            log.warning(
                "alarm %d to %s failed (attempt %d): %s",
                delivery.alarm.alarm_id,
                delivery.target,
                delivery.attempt,
                error,
            )
        elif self._config.repeat_s > 0:
            next_at = started + dt.timedelta(seconds=self._config.repeat_s)
        else:
            next_at = None
        if self._on_send is not None:
            self._on_send(delivery.target, not error)
        try:
            await self._store.call(lambda s: s.delivery_done(delivery, error, now, next_at))
        except Exception as exc:  # the lease expires and the send is retried
            log.error("alarm %d: cannot record the send: %s", delivery.alarm.alarm_id, exc)
        self._wake.set()


@contextlib.asynccontextmanager
async def running_dispatcher(
    store: StoreWorker,
    config: AlarmsConfig,
    clock: Clock,
    on_send: Callable[[str, bool], None] | None = None,
    owns: Callable[[], bool] | None = None,
) -> AsyncIterator[Dispatcher]:
    """A `Dispatcher` with its task running for the block; cancelled after it."""
    dispatcher = Dispatcher(store, config, clock, on_send, owns)
    task = asyncio.create_task(dispatcher.run(), name="alarm-dispatch")
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""The uplink: one long-lived gRPC stream that drains the outbox into the fleet.

Hello -> Welcome(committed_seq) -> RecordBatch ... with Acks coming back. Records are
deleted from the outbox only on Ack; after any failure the stream is re-opened with
jittered exponential back-off, trying the configured fleet endpoints in turn, and the
fleet's Welcome says where to resume. The outbox keeps buffering all the while.

Linger: every message costs the agent a gRPC write and the Ack's handling, and the fleet
a transaction (together about 0.7 ms of the agent's CPU per message, measured on 4 cars
at 10 Hz). So telemetry (state samples, counters, link status, controller
info) waits up to ``linger_s`` after the first of it was kept, and whatever the outbox
holds by then goes in one RecordBatch. An event never waits: `notify(urgent=True)` sends
at once, with the telemetry kept before it, in seq order. A backlog of a full batch or
more (catching up after an outage) goes at once too.

Evidence (agent/recorder.py) goes only to a fleet whose Welcome sets accepts_evidence:
an older fleet rejects a payload it does not know. To one that does not, batches skip
evidence records (they are held in the outbox, counted by ``evidence_held_back``, and
released with new seqs when a fleet that takes them connects), so nothing else waits.
A FleetFrame.evidence_request is handed to the agent, which answers through the outbox.
A FleetFrame.desired_config (issue 20) is handed to the agent's `RemoteConfig`, and its
ConfigReport goes back on the same stream (the sender writes it: one writer per call).
`rehello` ends the session at once and opens a new one, whose Hello names the units of a
new configuration.

A Reject ends the session and the uplink backs off and reconnects, except for one kind:
MALFORMED with a reason that starts ``record seq N`` (the fleet's way of naming the one
record it refuses, e.g. a time outside its window) would come back for the same record
forever and hold back everything after it. That record is moved into the outbox's
quarantine table (kept on the box, counted by ``outbox_quarantined``, logged) and the
uplink reconnects at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from agent.metrics import AgentMetrics
from agent.outbox import Outbox
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2

log = logging.getLogger(__name__)

# Keepalive fit for NATed 4G links: carrier NATs drop idle flows after a few minutes.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # No bandwidth-delay probing (as on the fleet's side, fleet.serve.server): its PINGs
    # outnumbered the messages of a stream that sends a small batch a second, each one a
    # frame both ends write, read and answer on a metered 4G link.
    ("grpc.http2.bdp_probe", 0),
)
WELCOME_TIMEOUT_S = 10.0
# Unacknowledged records in flight; bounds memory on both ends during a long catch-up.
SEND_WINDOW = 5_000
DEFAULT_LINGER_S = 1.0
# The trailing metadata key of the fleet's UNAVAILABLE when it admits no more streams
# for now (fleet.ingest.gateway, reconnect storms): how long to wait before trying again.
RETRY_AFTER_KEY = "retry-after-ms"
# A hint is honoured up to this long: a fleet asking for more is not trusted to be right.
MAX_RETRY_HINT_S = 120.0
# How the fleet names the record a Reject is about (fleet.ingest.gateway.check_batch).
_NAMED_RECORD = re.compile(r"record seq (\d+)\b")


class FleetRejectedError(Exception):
    """The fleet refused this agent or a batch; ``code`` says why in one word."""

    def __init__(self, message: str, code: str = "PROTOCOL", reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or message

    def record_seq(self) -> int | None:
        """The seq of the one record a MALFORMED Reject refuses (None: not such a Reject)."""
        if self.code != "MALFORMED":
            return None
        named = _NAMED_RECORD.match(self.reason)
        return int(named.group(1)) if named else None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Jittered exponential back-off: ``initial`` doubling to ``maximum``, full jitter."""

    initial_s: float = 0.5
    maximum_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The wait before reconnect number ``attempt`` (0 = first retry)."""
        ceiling = min(self.maximum_s, self.initial_s * 2**attempt)
        return rng.uniform(ceiling / 2, ceiling)


class Uplink:
    """Streams outbox records to the fleet until cancelled.

    ``on_connected`` runs at the start of each stream to a fleet that takes update
    reports (Welcome.accepts_update_reports), where the updater resends its outcomes.
    """

    def __init__(
        self,
        outbox: Outbox,
        hello: Callable[[], gateway_pb2.Hello],
        endpoints: Sequence[str],
        *,
        max_batch_records: int = 500,
        linger_s: float = DEFAULT_LINGER_S,
        backoff: Backoff = Backoff(),
        rng: random.Random | None = None,
        metrics: AgentMetrics | None = None,
        credentials: Any = None,
        clock: Callable[[], float] = time.monotonic,
        on_evidence_request: Callable[[gateway_pb2.EvidenceRequest], None] | None = None,
        on_desired_config: Callable[[gateway_pb2.DesiredConfig], gateway_pb2.ConfigReport]
        | None = None,
        on_release_offer: Callable[[gateway_pb2.ReleaseOffer], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._outbox = outbox
        # Answers a FleetFrame.evidence_request (the agent's recorder, through the outbox).
        self._on_evidence_request = on_evidence_request
        # Checks and applies a DesiredConfig (agent.remote_config); its report is queued
        # on `_replies` for the sender to write.
        self._on_desired_config = on_desired_config
        self._replies: list[gateway_pb2.AgentFrame] = []
        # The report of the document applied last, sent again at the start of every
        # session (the fleet keeps a report once): one cut off by a reconnect or a restart
        # still reaches it, and with it the history of the units it touched.
        self.config_report: gateway_pb2.ConfigReport | None = None
        self._rehello = asyncio.Event()
        # Agent updates (agent.update): offers handed over, and told of each new stream
        # (after Welcome) so it can report; FetchRelease uses the stream's channel.
        self._on_release_offer = on_release_offer
        self._on_connected = on_connected
        self._stream_channel: Any = None
        # Whether the fleet of the current session takes Evidence (its Welcome says so);
        # to one that does not, evidence records are held back (see agent.outbox).
        self.accepts_evidence = False
        # Whether this stream's fleet takes update reports (Welcome.accepts_update_reports):
        # an older fleet ends the stream on a frame it does not know.
        self.accepts_update_reports = False
        self._hello = hello
        self._endpoints = list(endpoints)
        self._max_batch = max_batch_records
        self._linger_s = linger_s
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._metrics = metrics
        # grpc.ChannelCredentials for mutual TLS; None means plaintext (demo and rig only).
        self._credentials = credentials
        self._clock = clock
        self._wake = asyncio.Event()
        # True while the sender waits for acks to open its window; only then does an ack
        # need to wake it (otherwise every ack would cost it a pointless outbox query).
        self._window_full = False
        # When the oldest unsent telemetry was kept (None: nothing lingers), and whether
        # something kept since the last send must go at once.
        self._lingering_since: float | None = None
        self._urgent = False  # each session starts with what the outbox holds (see _send)
        self.connected = False
        self.acked_seq = 0

    def notify(self, *, urgent: bool = True) -> None:
        """Tell the uplink that new records are in the outbox.

        ``urgent`` (an event among them) sends them at once; otherwise they may wait up to
        ``linger_s`` so that later records share their message. Only the first record to
        linger wakes the sender (to set its deadline); later ones cost nothing here.
        """
        if urgent or self._linger_s <= 0:
            self._urgent = True
            self._wake.set()
        elif self._lingering_since is None:
            self._lingering_since = self._clock()
            self._wake.set()

    async def run(self) -> None:
        """Keep a stream open to some fleet endpoint forever; never raises but cancellation."""
        attempt = 0
        index = 0
        while True:
            endpoint = self._endpoints[index % len(self._endpoints)]
            hint: float | None = None
            try:
                again = await self._session(endpoint)
                attempt = 0
                if again:
                    continue  # `rehello`: a new Hello at once, to the same endpoint
            except FleetRejectedError as exc:
                if self._metrics is not None:
                    self._metrics.fleet_rejects.labels(exc.code).inc()
                if self._set_aside(exc):
                    attempt = 0  # the outbox is unblocked: resume without backing off
                else:
                    log.error(
                        "fleet %s rejected this agent: %s; records stay buffered", endpoint, exc
                    )
            except grpc.aio.AioRpcError as exc:
                hint = retry_hint_s(exc)
                log.warning(
                    "stream to fleet %s failed: %s %s", endpoint, exc.code().name, exc.details()
                )
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("stream to fleet %s failed: %s", endpoint, exc)
            except Exception:
                # Whatever else goes wrong, the uplink must not die: the outbox keeps
                # every record and the next session resends from the fleet's Welcome.
                log.exception("stream to fleet %s failed unexpectedly", endpoint)
            finally:
                self.connected = False
                if self._metrics is not None:
                    self._metrics.fleet_connected.set(0)
            if hint is not None:
                # The fleet is busy admitting others (a reconnect storm) and said when to
                # come back: the same endpoint then, a little later than asked so that
                # agents given the same slot do not arrive together; the back-off does
                # not grow (nothing failed).
                delay = hint * self._rng.uniform(1.0, 1.1)
            else:
                index += 1
                delay = self._backoff.delay(attempt, self._rng)
                attempt += 1
            log.info("reconnecting in %.1f s (outbox depth %d)", delay, self._outbox.depth())
            await asyncio.sleep(delay)

    def _set_aside(self, exc: FleetRejectedError) -> bool:
        """Quarantine the record a MALFORMED Reject names; True when one was moved."""
        seq = exc.record_seq()
        if seq is None or not self._outbox.quarantine(seq, exc.reason):
            return False
        log.error(
            "fleet refused record seq %d as malformed (%s): moved it to the outbox's "
            "quarantine, where it stays; sending resumes after it",
            seq,
            exc.reason,
        )
        return True

    def _channel(self, endpoint: str) -> Any:
        if self._credentials is None:
            return grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(endpoint, self._credentials, options=CHANNEL_OPTIONS)

    def rehello(self) -> None:
        """End the current session and open a new one at once (its Hello names the
        agent's units as they are now)."""
        self._rehello.set()

    async def _session(self, endpoint: str) -> bool:
        """One stream; True when it ended for `rehello`."""
        self._rehello.clear()
        async with self._channel(endpoint) as channel:
            call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
            hello = self._hello()
            await call.write(gateway_pb2.AgentFrame(hello=hello))
            first = await asyncio.wait_for(call.read(), WELCOME_TIMEOUT_S)
            if first is grpc.aio.EOF:
                raise ConnectionError("fleet closed the stream before Welcome")
            welcome = self._welcome(first)
            self._outbox.ensure_seq_above(welcome.committed_seq)
            self.accepts_evidence = welcome.accepts_evidence
            self.accepts_update_reports = welcome.accepts_update_reports
            # Evidence at or below the Welcome's seq is held, whatever this fleet takes:
            # the last session may have skipped it (an older fleet whose ack was lost), and
            # a resend under a new seq costs at most a duplicate, never a loss.
            self._outbox.ack(welcome.committed_seq, "evidence")
            if self.accepts_evidence:
                released = self._outbox.release_held()
                if released:
                    log.info("fleet %s takes evidence: sending %d held back", endpoint, released)
            else:
                log.info(
                    "fleet %s does not take evidence (an older fleet): evidence records are "
                    "held back on this box until one that does connects",
                    endpoint,
                )
            self.acked_seq = welcome.committed_seq
            if self.config_report is not None:
                resent = gateway_pb2.AgentFrame(config_report=self.config_report)
                if resent not in self._replies:
                    self._replies.insert(0, resent)
            self.connected = True
            self._stream_channel = channel
            if self._on_connected is not None and self.accepts_update_reports:
                self._on_connected()
            if self._metrics is not None:
                self._metrics.fleet_connected.set(1)
            max_batch = min(self._max_batch, welcome.max_batch_records or self._max_batch)
            # Leave room for the frame around the records.
            max_bytes = int((welcome.max_batch_bytes or 1 << 20) * 0.9)
            heartbeat_s = float(welcome.heartbeat_interval_s or 10)
            log.info(
                "connected to fleet %s; it has committed up to seq %d",
                endpoint,
                welcome.committed_seq,
            )
            reader = asyncio.create_task(self._read_acks(call))
            sender = asyncio.create_task(
                self._send(
                    call,
                    welcome.committed_seq,
                    max_batch,
                    max_bytes,
                    heartbeat_s,
                    frozenset(u.unit_id for u in hello.units),
                )
            )
            again: asyncio.Task[Any] = asyncio.create_task(self._rehello.wait())
            tasks: set[asyncio.Task[Any]] = {reader, sender, again}
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, sender, again):
                    task.cancel()
                await asyncio.gather(reader, sender, again, return_exceptions=True)
            for task in done:
                if task is not again:
                    task.result()  # re-raises what ended the session, as itself (no group)
            if again in done:
                log.info("saying Hello again to fleet %s: the configured units changed", endpoint)
                return True
            return False

    @staticmethod
    def _welcome(frame: gateway_pb2.FleetFrame) -> gateway_pb2.Welcome:
        kind = frame.WhichOneof("frame")
        if kind == "reject":
            raise _rejected(frame.reject)
        if kind != "welcome":
            raise FleetRejectedError(f"expected Welcome, fleet sent {kind}")
        return frame.welcome

    async def _read_acks(self, call: Any) -> None:
        while True:
            frame = await call.read()
            if frame is grpc.aio.EOF:
                raise ConnectionError("fleet closed the stream")
            kind = frame.WhichOneof("frame")
            if kind == "ack":
                removed = self._outbox.ack(frame.ack.up_to_seq, self._held_kind())
                if self._metrics is not None:
                    self._metrics.records_acked.inc(removed)
                self.acked_seq = max(self.acked_seq, frame.ack.up_to_seq)
                if self._window_full:
                    self._wake.set()  # the send window may have opened
            elif kind == "reject":
                raise _rejected(frame.reject)
            elif kind == "evidence_request":
                self._evidence_request(frame.evidence_request)
            elif kind == "release_offer" and self._on_release_offer is not None:
                try:
                    self._on_release_offer(frame.release_offer)
                except Exception:  # a bug answering an offer must not end the stream
                    log.exception("taking release offer %r failed", frame.release_offer.release_id)
            elif kind == "desired_config" and self._on_desired_config is not None:
                report = self._on_desired_config(frame.desired_config)
                if report.applied:
                    self.config_report = report
                self._replies.append(gateway_pb2.AgentFrame(config_report=report))
                self._wake.set()
            else:
                raise FleetRejectedError(f"unexpected {kind} frame from fleet")

    async def _send(
        self,
        call: Any,
        sent_seq: int,
        max_batch: int,
        max_bytes: int,
        heartbeat_s: float,
        units: frozenset[str],
    ) -> None:
        clock = self._clock
        next_heartbeat = clock() + heartbeat_s
        # Units some batch carried since the last heartbeat was due: the fleet marks a
        # unit seen with each batch that carries it, so when batches carried every unit
        # of the Hello the heartbeat would tell it nothing, and is skipped (one message
        # less each interval for both ends). A unit no batch carried still gets its beat.
        carried: set[str] = set()
        # What the outbox holds now was kept before this session: it goes at once (and a
        # linger deadline from a past session must not hold back the next record).
        self._urgent = self._outbox.last_seq > sent_seq
        self._lingering_since = None
        while True:
            while self._replies:
                await call.write(self._replies.pop(0))
            now = clock()
            if now >= next_heartbeat:
                if carried >= units:
                    if self._metrics is not None:
                        self._metrics.heartbeats_skipped.inc()
                else:
                    await call.write(self._heartbeat())
                    now = clock()
                carried.clear()
                next_heartbeat = now + heartbeat_s
            room = SEND_WINDOW - (sent_seq - self.acked_seq)
            self._window_full = room <= 0
            wake_at = next_heartbeat
            # The outbox's seqs are handed out in memory: when none was handed out after the
            # last one sent, there is nothing to query for.
            unsent = self._outbox.last_seq - sent_seq
            if room > 0 and unsent > 0:
                since = self._lingering_since
                send_at = now if since is None else since + self._linger_s
                if self._urgent or unsent >= max_batch or now >= send_at:
                    # Cleared before reading the outbox: anything kept from here on
                    # notifies again and is not lost between the read and the write.
                    self._urgent = False
                    self._lingering_since = None
                    batch = self._outbox.pending(
                        sent_seq, min(max_batch, room), max_bytes, self._held_kind()
                    )
                    if batch:
                        records = [records_pb2.Record.FromString(p.payload) for p in batch]
                        frame = gateway_pb2.AgentFrame(
                            batch=gateway_pb2.RecordBatch(records=records)
                        )
                        await call.write(frame)
                        if len(carried) < len(units):
                            carried.update(r.unit_id for r in records)
                        sent_seq = batch[-1].seq
                        if self._metrics is not None:
                            self._metrics.records_sent.inc(len(batch))
                        continue
                else:
                    wake_at = min(wake_at, send_at)
            self._wake.clear()
            # A timeout here means the heartbeat or the lingering telemetry is due: the
            # loop's top sends it. asyncio.timeout rather than wait_for: no task is
            # created per wait.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wake_at - clock(), 0.0)):
                    await self._wake.wait()

    def send_frame(self, frame: gateway_pb2.AgentFrame) -> None:
        """Queue ``frame`` (an UpdateReport) for the sender to write on the stream; a
        queue not sent when the stream ends is dropped (reports are resent per stream).
        An update report to a fleet that does not take them (an older fleet, which would
        end the stream) is dropped here; the updater's outcomes stay in its spool and are
        sent on the next stream to a fleet that does."""
        if frame.HasField("update_report") and not self.accepts_update_reports:
            log.debug("fleet takes no update reports: %s not sent", frame.update_report.state)
            return
        self._replies.append(frame)
        self._wake.set()

    async def fetch_release(self, release_id: str, file: str) -> AsyncIterator[bytes]:
        """One file of a release offered on the current stream, in chunks, over the same
        channel and credentials (FetchRelease); ConnectionError when there is no stream."""
        channel = self._stream_channel
        if channel is None or not self.connected:
            raise ConnectionError("no stream to a fleet")
        call = gateway_pb2_grpc.AgentGatewayStub(channel).FetchRelease(
            gateway_pb2.FetchReleaseRequest(release_id=release_id, file=file),
            metadata=(("agent-id", self._hello().agent_id),),
        )
        async for chunk in call:
            yield chunk.data

    def _held_kind(self) -> str:
        """The record kind held back from this session's fleet ("" for none)."""
        return "" if self.accepts_evidence else "evidence"

    def _evidence_request(self, request: gateway_pb2.EvidenceRequest) -> None:
        """Hand an on-demand request to the agent; whatever goes wrong answering it is
        logged, never the end of the stream."""
        if self._on_evidence_request is None:
            log.warning("fleet asked for evidence (%s) but this uplink has no recorder", request)
            return
        try:
            self._on_evidence_request(request)
        except Exception:
            log.exception("answering evidence request %r failed", request.request_id)

    def _heartbeat(self) -> gateway_pb2.AgentFrame:
        heartbeat = gateway_pb2.Heartbeat(outbox_depth=self._outbox.depth())
        heartbeat.time.GetCurrentTime()
        return gateway_pb2.AgentFrame(heartbeat=heartbeat)


def retry_hint_s(error: grpc.aio.AioRpcError) -> float | None:
    """The wait the fleet asked for with an UNAVAILABLE (its ``retry-after-ms`` trailing
    metadata), capped at `MAX_RETRY_HINT_S`; None without a usable one."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            try:
                millis = int(value)
            except (TypeError, ValueError):
                log.warning("fleet sent an unusable %s: %r", RETRY_AFTER_KEY, value)
                return None
            return min(max(millis, 0) / 1000, MAX_RETRY_HINT_S)
    return None


def _rejected(reject: gateway_pb2.Reject) -> FleetRejectedError:
    try:
        code = gateway_pb2.RejectCode.Name(reject.code).removeprefix("REJECT_CODE_")
    except ValueError:
        code = str(reject.code)
    return FleetRejectedError(f"{code}: {reject.reason}", code, reject.reason)

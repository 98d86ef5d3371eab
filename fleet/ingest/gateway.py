"""AgentGateway.Connect: the ingest stream from agents into the store.

Hello -> Welcome(committed_seq) -> for each RecordBatch: validate, commit (in a group
transaction shared with other streams, see `fleet.ingest.committer`), Ack(up_to_seq); Heartbeat ->
the agent and its units count as seen. Anything wrong gets one Reject and the stream
ends: the agent reconnects and its Welcome says where to resume. Records at or below the
committed seq are replays of what the agent has not seen acked; they are stored once and
acked again. Within one stream, seqs must increase from batch to batch.

Under mutual TLS an `fleet.ingest.access.AgentAccess` admits the Hello first: the certificate's
agent, with units registered for it, declaring only those units, its certificate not
revoked. The stream stays open only while that holds: `AgentGateway.recheck` (called by
`fleet.ingest.access.watch_access_changes` when the registry or the revocation list changes)
ends it with that Reject.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from fleet.clock import Clock
from fleet.config import IngestConfig
from fleet.configs.delivery import ConfigDelivery, ConfigStream
from fleet.ingest.access import AgentAccess, peer_agent_id, peer_serial, unit_not_registered
from fleet.ingest.admission import RETRY_AFTER_KEY, Admission
from fleet.ingest.committer import CommitterStoppedError, GroupCommitter
from fleet.ingest.evidence import EvidenceOutlet, evidence_problem, interleave
from fleet.metrics import GatewayMetrics
from fleet.releases.desk import FetchRefusedError, ReleaseDesk
from fleet.store.base import BatchOp, ControllerIdentity, HeartbeatOp, HelloOp, UnitClaim
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2

log = logging.getLogger(__name__)

# Seqs are stored as signed 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
MAX_SEQ = 2**63 - 1
MAX_ID_LENGTH = 128
MAX_UNITS_PER_AGENT = 64
# Every other string an agent sends is bounded too (issue 14: ten Hellos with megabyte
# strings grew the database by 28 MiB for good, the lifecycle history keeping each).
# Identity strings are refused over their limit (MALFORMED, the field named): a
# truncated firmware or serial would be a wrong identity, and firmware policy judges
# it. An event's reason is prose and clipped instead: an ENTRAPMENT is never refused
# for its wording.
MAX_VERSION_LENGTH = 64
MAX_CONTROLLER_FIELD_LENGTH = 128
MAX_EVENT_ID_LENGTH = 128
MAX_REASON_LENGTH = 1000
MAX_CAPABILITIES = 128
CONTROLLER_FIELDS = ("vendor", "model", "firmware", "serial", "profile")
CLIPPED = "…"
# The reason `fleet.ingest.evidence.evidence_problem` gives, for the metric.
_EVIDENCE_REFUSAL = re.compile(r"record seq \d+ evidence")


def _reject(code: gateway_pb2.RejectCode, reason: str) -> gateway_pb2.Reject:
    return gateway_pb2.Reject(code=code, reason=reason)


class UnparsableFrame:
    """What the agent port's deserializer gives for bytes that are no AgentFrame (bad
    wire format, a string that is no UTF-8): the stream answers it with a MALFORMED
    Reject instead of gRPC's bare INTERNAL."""

    __slots__ = ("error", "size")

    def __init__(self, error: str, size: int) -> None:
        self.error = error
        self.size = size

    def reject(self, where: str) -> gateway_pb2.Reject:
        """The Reject for this frame, ``where`` saying which frame it was."""
        return _reject(
            gateway_pb2.REJECT_CODE_MALFORMED,
            f"{where} ({self.size} bytes) does not parse as an AgentFrame: {self.error}",
        )


def parse_agent_frame(data: bytes) -> gateway_pb2.AgentFrame | UnparsableFrame:
    """``data`` as an AgentFrame, or an `UnparsableFrame` saying why it is none."""
    try:
        return gateway_pb2.AgentFrame.FromString(data)
    except DecodeError as exc:
        return UnparsableFrame(str(exc) or "bad wire format", len(data))


AGENT_GATEWAY = gateway_pb2.DESCRIPTOR.services_by_name["AgentGateway"].full_name


def add_gateway_to_server(gateway: AgentGateway, server: grpc.aio.Server) -> None:
    """Serve ``gateway`` on ``server`` like the generated ``add_..._to_server``, but with
    `parse_agent_frame` as the deserializer (a frame that does not parse is answered
    with a Reject, see `UnparsableFrame`)."""
    handlers = {
        "Connect": grpc.stream_stream_rpc_method_handler(
            gateway.Connect,
            request_deserializer=parse_agent_frame,
            response_serializer=gateway_pb2.FleetFrame.SerializeToString,
        ),
        "FetchRelease": grpc.unary_stream_rpc_method_handler(
            gateway.FetchRelease,
            request_deserializer=gateway_pb2.FetchReleaseRequest.FromString,
            response_serializer=gateway_pb2.ReleaseChunk.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(AGENT_GATEWAY, handlers),)
    )
    server.add_registered_method_handlers(AGENT_GATEWAY, handlers)


def id_problem(text: str) -> str | None:
    """Why ``text`` is no usable agent or unit id ("is empty", ...), or None when it is."""
    if not text:
        return "is empty"
    if len(text) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if not text.isprintable() or any(ch.isspace() for ch in text):
        return "contains whitespace or control characters"
    return None


def check_hello(hello: gateway_pb2.Hello) -> gateway_pb2.Reject | None:
    """A Reject when ``hello`` is unusable, else None: the agent id and every unit id must
    be non-empty printable text without spaces (at most 128 characters), units unique and
    at most 64; the agent version at most 64 characters, each controller string at most
    128, at most 128 detectable and undetectable types per unit. The reason names the
    field."""
    problem = id_problem(hello.agent_id)
    if problem is not None:
        return _reject(gateway_pb2.REJECT_CODE_MALFORMED, f"Hello agent_id {problem}")
    if len(hello.agent_version) > MAX_VERSION_LENGTH:
        return _reject(
            gateway_pb2.REJECT_CODE_MALFORMED,
            f"Hello agent_version is {len(hello.agent_version)} characters long; "
            f"the limit is {MAX_VERSION_LENGTH}",
        )
    if len(hello.units) > MAX_UNITS_PER_AGENT:
        return _reject(
            gateway_pb2.REJECT_CODE_MALFORMED,
            f"Hello declares {len(hello.units)} units; the limit is {MAX_UNITS_PER_AGENT}",
        )
    seen: set[str] = set()
    for index, unit in enumerate(hello.units):
        problem = id_problem(unit.unit_id)
        if problem is not None:
            return _reject(gateway_pb2.REJECT_CODE_MALFORMED, f"Hello unit #{index} id {problem}")
        if unit.unit_id in seen:
            return _reject(
                gateway_pb2.REJECT_CODE_MALFORMED,
                f"Hello declares unit {unit.unit_id!r} twice",
            )
        seen.add(unit.unit_id)
        problem = controller_problem(unit.controller, f"Hello unit {unit.unit_id!r} controller")
        if problem is None and len(unit.detectable) + len(unit.undetectable) > MAX_CAPABILITIES:
            problem = (
                f"Hello unit {unit.unit_id!r} lists {len(unit.detectable)} detectable and "
                f"{len(unit.undetectable)} undetectable types; the limit is {MAX_CAPABILITIES}"
            )
        if problem is not None:
            return _reject(gateway_pb2.REJECT_CODE_MALFORMED, problem)
    return None


def controller_problem(info: records_pb2.ControllerInfo, where: str) -> str | None:
    """Why ``info`` cannot be stored (a field over `MAX_CONTROLLER_FIELD_LENGTH`), as
    ``WHERE.FIELD is N characters long; ...``, or None."""
    for field in CONTROLLER_FIELDS:
        length = len(getattr(info, field))
        if length > MAX_CONTROLLER_FIELD_LENGTH:
            return (
                f"{where}.{field} is {length} characters long; "
                f"the limit is {MAX_CONTROLLER_FIELD_LENGTH}"
            )
    return None


def record_string_problem(record: records_pb2.Record) -> str | None:
    """Why a string of ``record`` is over its limit (``record seq N ...``), or None.
    An event's reason is not judged here: `clip_reasons` shortens it."""
    kind = record.WhichOneof("payload")
    if kind == "controller_info":
        return controller_problem(
            record.controller_info, f"record seq {record.seq} controller_info"
        )
    if kind == "event" and len(record.event.event_id) > MAX_EVENT_ID_LENGTH:
        return (
            f"record seq {record.seq} event.event_id is {len(record.event.event_id)} "
            f"characters long; the limit is {MAX_EVENT_ID_LENGTH}"
        )
    return None


def clip_reasons(batch: gateway_pb2.RecordBatch) -> int:
    """Shorten every event reason of ``batch`` longer than `MAX_REASON_LENGTH` to that
    length (ending in ``…``), in place, before anything is stored; returns how many."""
    clipped = 0
    for record in batch.records:
        if record.WhichOneof("payload") == "event":
            reason = record.event.reason
            if len(reason) > MAX_REASON_LENGTH:
                record.event.reason = reason[: MAX_REASON_LENGTH - len(CLIPPED)] + CLIPPED
                clipped += 1
    return clipped


def check_batch(
    batch: gateway_pb2.RecordBatch,
    permitted: frozenset[str],
    limits: IngestConfig,
    after_seq: int = 0,
    *,
    registered: frozenset[str] | None = None,
    agent_id: str = "",
    now_s: float | None = None,
) -> gateway_pb2.Reject | None:
    """A Reject for the first rule ``batch`` breaks, else None.

    Rules: not empty; within the record and byte limits; each record for a unit declared
    in Hello, with a payload, a time and 0 < seq < 2**63; seqs strictly increasing, and
    above ``after_seq`` (the last seq this stream sent before). Under mutual TLS,
    ``registered`` holds the units registered for ``agent_id``, and a record for another
    unit is refused as not registered (not merely undeclared). With ``now_s`` (the
    fleet's clock, epoch seconds), each record's time must be within the window
    `record_time_problem` checks; its strings within `record_string_problem`'s limits.
    A refusal that concerns one record names it as ``record seq N ...`` at the start of
    the reason: the agent moves a record refused as
    MALFORMED that way aside (`agent.uplink`) instead of sending it again forever.
    """
    count = len(batch.records)
    if count == 0:
        return _reject(gateway_pb2.REJECT_CODE_MALFORMED, "empty RecordBatch")
    if count > limits.max_batch_records:
        return _reject(
            gateway_pb2.REJECT_CODE_TOO_LARGE,
            f"{count} records in one batch; the limit is {limits.max_batch_records}",
        )
    size = batch.ByteSize()
    if size > limits.max_batch_bytes:
        return _reject(
            gateway_pb2.REJECT_CODE_TOO_LARGE,
            f"batch of {size} bytes; the limit is {limits.max_batch_bytes}",
        )
    previous = after_seq
    for index, record in enumerate(batch.records):
        if record.unit_id not in permitted:
            if registered is not None and record.unit_id not in registered:
                return unit_not_registered(record.unit_id, agent_id, record.seq)
            return _reject(
                gateway_pb2.REJECT_CODE_UNIT_NOT_PERMITTED,
                f"record seq {record.seq} is for unit {record.unit_id!r}, not declared in Hello",
            )
        if not 0 < record.seq <= MAX_SEQ:
            return _reject(
                gateway_pb2.REJECT_CODE_MALFORMED, f"record seq {record.seq} is out of range"
            )
        if record.WhichOneof("payload") is None:
            return _reject(
                gateway_pb2.REJECT_CODE_MALFORMED, f"record seq {record.seq} has no payload"
            )
        if not record.HasField("time"):
            return _reject(
                gateway_pb2.REJECT_CODE_MALFORMED, f"record seq {record.seq} has no time"
            )
        if now_s is not None:
            problem = record_time_problem(record, now_s, limits)
            if problem is not None:
                return _reject(gateway_pb2.REJECT_CODE_MALFORMED, problem)
        problem = record_string_problem(record) or evidence_problem(record)
        if problem is not None:
            return _reject(gateway_pb2.REJECT_CODE_MALFORMED, problem)
        if record.seq <= previous:
            where = "in the same batch" if index else "on this stream"
            return _reject(
                gateway_pb2.REJECT_CODE_OUT_OF_ORDER,
                f"record seq {record.seq} follows seq {previous} {where}",
            )
        previous = record.seq
    return None


def record_time_problem(
    record: records_pb2.Record, now_s: float, limits: IngestConfig
) -> str | None:
    """Why ``record``'s time is not believable at fleet time ``now_s``, or None.

    A time may lie at most ``limits.max_clock_skew_s`` ahead of the fleet's clock (the two
    clocks disagree by that much at most) and at most ``limits.max_record_age_s`` behind it
    (an outbox legitimately holds records from a long outage; anything older is a clock
    that was wrong, such as a box without a real-time clock before NTP). Nanoseconds must be
    in 0..999,999,999. The reason starts ``record seq N time ...``.
    """
    time = record.time
    if not 0 <= time.nanos < 1_000_000_000:
        return f"record seq {record.seq} time has nanos {time.nanos}, outside 0..999999999"
    at = time.seconds + time.nanos / 1e9
    if at - now_s > limits.max_clock_skew_s:
        return (
            f"record seq {record.seq} time {_iso(time.seconds)} is {at - now_s:.0f} s ahead "
            f"of the fleet's clock; at most {limits.max_clock_skew_s} s "
            "([ingest] max_clock_skew_s) is accepted"
        )
    if now_s - at > limits.max_record_age_s:
        return (
            f"record seq {record.seq} time {_iso(time.seconds)} is {now_s - at:.0f} s behind "
            f"the fleet's clock; at most {limits.max_record_age_s} s "
            "([ingest] max_record_age_s) is accepted"
        )
    return None


def _iso(seconds: int) -> str:
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds} s after the epoch"


def _claims(hello: gateway_pb2.Hello) -> list[UnitClaim]:
    return [
        UnitClaim(
            unit_id=u.unit_id,
            controller=ControllerIdentity(
                vendor=u.controller.vendor,
                model=u.controller.model,
                firmware=u.controller.firmware,
                serial=u.controller.serial,
                profile=u.controller.profile,
            ),
            detectable=tuple(u.detectable),
            undetectable=tuple(u.undetectable),
        )
        for u in hello.units
    ]


class OpenStream:
    """One admitted agent stream under mutual TLS, which the fleet may end from outside
    (the agent removed, its certificate revoked)."""

    __slots__ = ("agent_id", "ending", "hello", "serial", "task", "writing")

    def __init__(self, hello: gateway_pb2.Hello, serial: str) -> None:
        self.agent_id = hello.agent_id
        self.hello = hello
        self.serial = serial
        self.task = asyncio.current_task()
        # True while gRPC writes a frame of this stream: a cancellation then would land in
        # gRPC's code instead of the handler's, so `end` leaves it to the handler.
        self.writing = False
        self.ending: gateway_pb2.Reject | None = None

    def end(self, reject: gateway_pb2.Reject) -> None:
        """End the stream with ``reject``: at once when it waits for the agent or the
        store, else as soon as the frame being written is out."""
        if self.ending is not None:
            return
        self.ending = reject
        if not self.writing and self.task is not None:
            self.task.cancel()


class AgentGateway(gateway_pb2_grpc.AgentGatewayServicer):  # type: ignore[misc]
    """The AgentGateway servicer; one `Connect` call per connected agent."""

    def __init__(
        self,
        committer: GroupCommitter,
        limits: IngestConfig,
        metrics: GatewayMetrics,
        access: AgentAccess | None = None,
        clock: Clock | None = None,
        releases: ReleaseDesk | None = None,
    ) -> None:
        """``access`` None: plaintext (demo, rig), the units declared in Hello are accepted.
        ``releases``: offers, files and reports of agent updates (issue 20); None: none.
        ``clock``: the fleet's wall clock, which record times are checked against (by
        default the committer's, the one the store stamps writes with)."""
        self._clock = clock if clock is not None else committer.clock
        self._access = access
        # Remote configuration (issue 20): DesiredConfig out, ConfigReport in.
        self._configs = ConfigDelivery(committer.store, self._clock, metrics=metrics)
        self._releases = releases
        self._committer = committer
        self._limits = limits
        self._metrics = metrics
        # Labelled children resolved once: labels() per frame shows in profiles at scale.
        self._frame_counters = {
            kind: metrics.frames.labels(kind=kind)
            for kind in ("hello", "batch", "heartbeat", "empty", "unparsable")
        }
        # New streams a second (reconnect storms, fleet.ingest.admission); None: no limit.
        self._admission = (
            Admission(limits.admit_streams_per_s) if limits.admit_streams_per_s > 0 else None
        )
        # Admitted streams by agent id (mutual TLS only), for `recheck`.
        self._open: dict[str, set[OpenStream]] = {}
        # The way out to the stream of each unit's agent (every stream after Welcome),
        # for on-demand evidence requests (fleet.ingest.evidence).
        self._outlets: dict[str, EvidenceOutlet] = {}

    def evidence_outlets(self) -> Mapping[str, EvidenceOutlet]:
        """The units whose agent stream this gateway holds, each with its outlet."""
        return self._outlets

    async def recheck(self, agent_id: str, serial: str = "") -> int:
        """Admit the open streams of ``agent_id`` (with ``serial``: those whose certificate
        has it) again, against the registry and revocation list as they are now; end
        each one refused with its Reject. Returns how many were ended."""
        if self._access is None:
            return 0
        if agent_id:
            candidates = list(self._open.get(agent_id, ()))
        else:
            candidates = [stream for group in self._open.values() for stream in group]
        streams = [stream for stream in candidates if not serial or stream.serial == serial]
        ended = 0
        for stream in streams:
            refusal, _ = await self._access.admit(stream.hello, stream.agent_id, stream.serial)
            if refusal is not None and stream.ending is None:
                stream.end(refusal)
                ended += 1
        return ended

    def _crowded(self, agent_id: str, serial: str) -> gateway_pb2.Reject | None:
        """A Reject when the certificate ``serial`` already holds as many open streams as
        ``[ingest] max_streams_per_agent`` allows (a stolen key cannot open thousands)."""
        limit = self._limits.max_streams_per_agent
        held = sum(1 for s in self._open.get(agent_id, ()) if s.serial == serial)
        if held < limit:
            return None
        self._metrics.streams_refused.inc()
        return _reject(
            gateway_pb2.REJECT_CODE_TOO_LARGE,
            f"certificate serial {serial or '?'} of agent {agent_id!r} already holds {held} "
            f"open stream(s); the limit is {limit} ([ingest] max_streams_per_agent): one "
            "agent needs one stream, end the others",
        )

    def _count(self, kind: str | None) -> None:
        counter = self._frame_counters.get(kind or "empty")
        if counter is None:  # a frame kind newer than this fleet
            counter = self._metrics.frames.labels(kind=kind or "empty")
        counter.inc()

    def _count_gaps(self, batch: gateway_pb2.RecordBatch, highest: int, agent_id: str) -> int:
        """Count the seqs ``batch`` skips above ``highest`` on the seq-gap metrics;
        returns the new highest seq."""
        for record in batch.records:
            if record.seq > highest + 1:
                missing = record.seq - highest - 1
                self._metrics.seq_gaps.inc()
                self._metrics.seq_missing.inc(missing)
                log.info(
                    "agent %s: seq %d follows %d, %d seq(s) missing",
                    agent_id,
                    record.seq,
                    highest,
                    missing,
                )
            highest = max(highest, record.seq)
        return highest

    def _rejected(
        self, reject: gateway_pb2.Reject, agent_id: str, peer: str
    ) -> gateway_pb2.FleetFrame:
        code = gateway_pb2.RejectCode.Name(reject.code).removeprefix("REJECT_CODE_")
        self._metrics.rejects.labels(code=code).inc()
        log.warning("rejecting agent %r at %s: %s: %s", agent_id, peer, code, reject.reason)
        return gateway_pb2.FleetFrame(reject=reject)

    async def Connect(  # noqa: N802 (the generated servicer's name)
        self,
        request_iterator: AsyncIterator[gateway_pb2.AgentFrame | UnparsableFrame],
        context: Any,
    ) -> AsyncIterator[gateway_pb2.FleetFrame]:
        """Serve one agent stream; yields Welcome, Acks and at most one final Reject.
        Above ``[ingest] admit_streams_per_s`` new streams a second, ends with UNAVAILABLE
        and a ``retry-after-ms`` slot before reading anything."""
        wait_s = self._admission.admit() if self._admission is not None else None
        if wait_s is not None:
            self._metrics.streams_deferred.inc()
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                "the fleet is taking new streams at its limit; retry after retry-after-ms",
                trailing_metadata=((RETRY_AFTER_KEY, str(max(1, round(wait_s * 1000)))),),
            )
            return
        peer = str(context.peer())
        frames = aiter(request_iterator)
        first = await anext(frames, None)
        if first is None:
            return
        if isinstance(first, UnparsableFrame):
            self._count("unparsable")
            yield self._rejected(first.reject("the first frame"), "", peer)
            return
        kind = first.WhichOneof("frame")
        self._count(kind)
        if kind != "hello":
            yield self._rejected(
                _reject(
                    gateway_pb2.REJECT_CODE_PROTOCOL,
                    f"the first frame must be Hello, got {kind or 'an empty frame'}",
                ),
                "",
                peer,
            )
            return
        hello = first.hello
        problem = check_hello(hello)
        if problem is not None:
            yield self._rejected(problem, hello.agent_id, peer)
            return
        agent_id = hello.agent_id
        registered: frozenset[str] | None = None
        stream: OpenStream | None = None
        if self._access is not None:
            serial = peer_serial(context)
            try:
                refusal, registered = await self._access.admit(
                    hello, peer_agent_id(context), serial
                )
            except Exception as exc:  # a store fault must not crash the server
                self._metrics.store_errors.inc()
                log.error("agent %s: cannot read its registration: %s", agent_id, exc)
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the fleet store failed; retry")
                return
            if refusal is not None:
                yield self._rejected(refusal, agent_id, peer)
                return
            crowded = self._crowded(agent_id, serial)
            if crowded is not None:
                yield self._rejected(crowded, agent_id, peer)
                return
            # Registered before anything else is awaited: a removal committed after the
            # admission above is then seen by `recheck`.
            stream = OpenStream(hello, serial)
            self._open.setdefault(agent_id, set()).add(stream)
        if stream is None:
            async for frame in self._admitted(frames, hello, peer, context, registered):
                yield frame
            return
        try:
            async for frame in self._admitted(frames, hello, peer, context, registered):
                stream.writing = True
                yield frame
                stream.writing = False
                if stream.ending is not None:
                    yield self._rejected(stream.ending, agent_id, peer)
                    return
        except asyncio.CancelledError:
            # Our own `OpenStream.end` (and nothing else, such as the server stopping):
            # the agent is told why instead of seeing a cancelled call.
            if stream.ending is None or stream.task is None or stream.task.uncancel() > 0:
                raise
            yield self._rejected(stream.ending, agent_id, peer)
        finally:
            group = self._open.get(agent_id)
            if group is not None:
                group.discard(stream)
                if not group:
                    del self._open[agent_id]

    async def FetchRelease(  # noqa: N802 (the generated servicer's name)
        self, request: gateway_pb2.FetchReleaseRequest, context: Any
    ) -> AsyncIterator[gateway_pb2.ReleaseChunk]:
        """One file of a release offered to the calling agent, in chunks. Under mutual TLS
        the agent is its certificate's; in plaintext (demo, rig) the one named by the
        call's ``agent-id`` metadata. PERMISSION_DENIED for a release not offered to it or
        a file not in its manifest."""
        if self._releases is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this fleet serves no releases")
            return
        if self._access is not None:
            agent_id = peer_agent_id(context)
        else:
            metadata = dict(context.invocation_metadata() or ())
            agent_id = str(metadata.get("agent-id", ""))
        try:
            for block in self._releases.chunks(agent_id, request.release_id, request.file):
                yield gateway_pb2.ReleaseChunk(data=block)
        except FetchRefusedError as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    async def _admitted(
        self,
        frames: AsyncIterator[gateway_pb2.AgentFrame | UnparsableFrame],
        hello: gateway_pb2.Hello,
        peer: str,
        context: Any,
        registered: frozenset[str] | None,
    ) -> AsyncIterator[gateway_pb2.FleetFrame]:
        """The stream after an admitted Hello: Welcome, then Acks (and a final Reject)."""
        agent_id = hello.agent_id
        try:
            result = await self._committer.submit(
                HelloOp(agent_id, hello.agent_version, tuple(_claims(hello)))
            )
        except CommitterStoppedError:
            return
        except Exception as exc:  # a store fault must not crash the server
            self._metrics.store_errors.inc()
            log.error("agent %s: cannot record its Hello: %s", agent_id, exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the fleet store failed; retry")
            return
        committed = result.committed_seq if result is not None else 0
        log.info(
            "agent %s %s connected from %s with %d unit(s); committed seq %d",
            agent_id,
            hello.agent_version,
            peer,
            len(hello.units),
            committed,
        )
        yield gateway_pb2.FleetFrame(
            welcome=gateway_pb2.Welcome(
                committed_seq=committed,
                max_batch_records=self._limits.max_batch_records,
                max_batch_bytes=self._limits.max_batch_bytes,
                heartbeat_interval_s=self._limits.heartbeat_interval_s,
                accepts_evidence=True,
                accepts_update_reports=True,
            )
        )
        try:
            configs, desired = await self._configs.on_hello(hello)
        except Exception as exc:  # a store fault must not crash the server
            self._metrics.store_errors.inc()
            log.error("agent %s: cannot read its desired configuration: %s", agent_id, exc)
            configs, desired = ConfigStream(agent_id, hello.accepts_config, 0), None
        if desired is not None:
            yield gateway_pb2.FleetFrame(desired_config=desired)
        self._metrics.streams.inc()
        # Requests reach an agent with a recorder between its frames (`interleave`); an
        # older agent's stream reads its frames alone, its units' requests refused.
        outlet = EvidenceOutlet(agent_id, hello.records_evidence)
        units = [u.unit_id for u in hello.units]
        for unit_id in units:
            self._outlets[unit_id] = outlet
        merged: (
            AsyncGenerator[gateway_pb2.AgentFrame | UnparsableFrame | gateway_pb2.EvidenceRequest]
            | None
        ) = None
        if outlet.capable:
            merged = interleave(frames, outlet.queue)
        try:
            async for frame in self._serve_frames(
                merged or frames,
                agent_id,
                hello,
                peer,
                context,
                registered,
                committed,
                configs=configs,
            ):
                yield frame
        finally:
            self._metrics.streams.dec()
            for unit_id in units:
                if self._outlets.get(unit_id) is outlet:
                    del self._outlets[unit_id]
            if merged is not None:
                await merged.aclose()

    async def _serve_frames(
        self,
        frames: AsyncIterator[
            gateway_pb2.AgentFrame | UnparsableFrame | gateway_pb2.EvidenceRequest
        ],
        agent_id: str,
        hello: gateway_pb2.Hello,
        peer: str,
        context: Any,
        registered: frozenset[str] | None,
        committed: int,
        configs: ConfigStream | None = None,
    ) -> AsyncIterator[gateway_pb2.FleetFrame]:
        permitted = frozenset(u.unit_id for u in hello.units)
        last_seq = 0
        # The highest seq the fleet holds of this agent: a record above it + 1 leaves a gap
        # (records the agent set aside or lost), counted on a metric, never refused.
        highest = committed
        loop = asyncio.get_running_loop()
        # When each declared unit was last marked seen by a committed batch of this stream.
        touched: dict[str, float] = {}
        fresh_s = float(self._limits.heartbeat_interval_s)
        # Offers go only to an agent that sent an UpdateReport on this stream (an older
        # agent would end its stream on a frame it does not know), each release once.
        takes_offers = False
        offered = ""
        async for frame in frames:
            if isinstance(frame, gateway_pb2.EvidenceRequest):  # a dispatcher's, to the agent
                yield gateway_pb2.FleetFrame(evidence_request=frame)
                continue
            if isinstance(frame, UnparsableFrame):
                self._count("unparsable")
                yield self._rejected(frame.reject("a frame after Hello"), agent_id, peer)
                return
            if configs is not None:  # remote configuration (fleet.configs.delivery)
                if frame.WhichOneof("frame") == "config_report":
                    self._count("config_report")
                    try:
                        await self._configs.report(configs, frame.config_report)
                    except Exception as exc:  # a store fault costs the report, not the stream
                        self._metrics.store_errors.inc()
                        log.error("agent %s: configuration report not stored: %s", agent_id, exc)
                    continue
                desired = await self._configs.poll(configs)
                if desired is not None:
                    yield gateway_pb2.FleetFrame(desired_config=desired)
            kind = frame.WhichOneof("frame")
            self._count(kind)
            if kind == "update_report" and self._releases is not None:
                takes_offers = True
                try:
                    await self._releases.report(agent_id, frame.update_report)
                except Exception as exc:  # a store fault costs the report, not the stream
                    self._metrics.store_errors.inc()
                    log.error("agent %s: update report not stored: %s", agent_id, exc)
            if takes_offers and self._releases is not None:
                offer = self._releases.offer_for(agent_id)
                if offer is not None and offer.release_id != offered:
                    offered = offer.release_id
                    self._releases.offered()
                    yield gateway_pb2.FleetFrame(release_offer=offer)
            if kind == "update_report":
                continue
            if kind == "batch":
                problem = check_batch(
                    frame.batch,
                    permitted,
                    self._limits,
                    last_seq,
                    registered=registered,
                    agent_id=agent_id,
                    now_s=self._clock().timestamp(),
                )
                if problem is not None:
                    if _EVIDENCE_REFUSAL.match(problem.reason):
                        self._metrics.evidence_malformed.inc()
                    yield self._rejected(problem, agent_id, peer)
                    return
                last_seq = frame.batch.records[-1].seq
                highest = self._count_gaps(frame.batch, highest, agent_id)
                clip_reasons(frame.batch)
                try:
                    result = await self._committer.submit(
                        BatchOp(agent_id, tuple(frame.batch.records))
                    )
                except CommitterStoppedError:
                    return
                except Exception as exc:  # ends this stream, not the server
                    self._metrics.store_errors.inc()
                    log.error("agent %s: batch not stored: %s", agent_id, exc)
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the fleet store failed")
                    return
                assert result is not None
                if result.inserted:
                    now = loop.time()
                    for record in frame.batch.records:
                        touched[record.unit_id] = now
                self._metrics.records_committed.inc(result.inserted)
                yield gateway_pb2.FleetFrame(ack=gateway_pb2.Ack(up_to_seq=result.committed_seq))
            elif kind == "heartbeat":
                # A heartbeat only marks the agent's units seen. When batches did that for
                # every unit within one heartbeat interval, the write would change next to
                # nothing: skip it (at 10,000 agents that is a thousand writes a second).
                cutoff = loop.time() - fresh_s
                if len(touched) == len(permitted) and min(touched.values()) >= cutoff:
                    self._metrics.heartbeats_skipped.inc()
                    continue
                try:
                    await self._committer.submit(HeartbeatOp(agent_id))
                except CommitterStoppedError:
                    return
                except Exception as exc:  # ends this stream, not the server
                    self._metrics.store_errors.inc()
                    log.error("agent %s: heartbeat not stored: %s", agent_id, exc)
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the fleet store failed")
                    return
            else:
                yield self._rejected(
                    _reject(
                        gateway_pb2.REJECT_CODE_PROTOCOL,
                        f"unexpected {kind or 'empty'} frame after Hello",
                    ),
                    agent_id,
                    peer,
                )
                return
        log.info("agent %s closed its stream", agent_id)

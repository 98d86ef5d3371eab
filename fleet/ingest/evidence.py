"""The gateway's side of the flight recorder (issue 16): Evidence records checked on the
way in, and dispatchers' on-demand requests taken out to the agents' streams.

Checking: an Evidence record must decode (`protos.evidence.decode_samples`: every column
as long as ``samples``, the state runs adding up, every value in range), name the event
or the request it belongs to, and say why its window ends; otherwise the batch is refused
MALFORMED naming ``record seq N evidence ...``, as any malformed record is, so the
agent sets that record aside and nothing acked before it is lost.

On demand, across processes: a request is a row in the store (`fleet.store.evidence`),
written ``pending`` by whichever web process took the POST. Every serving process polls
the pending rows (`watch_evidence_requests`, every `EVIDENCE_POLL_S`; an index read that
finds nothing almost always) the way it polls changes to agent access, and takes those
for units whose agent stream it holds: ``sent`` (and the EvidenceRequest frame goes out
on that stream, `EvidenceOutlet`) when the agent's Hello set records_evidence, else
``refused`` naming why. The settling UPDATE only moves a row that is still pending, so
a request is sent once even when two processes hold streams for the unit, and the web
process that gives up waiting (no process holds the unit) cannot race a late sender.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import TypeVar

from fleet.clock import Clock
from fleet.metrics import GatewayMetrics
from fleet.store.evidence import EVIDENCE_POLL_S, EvidenceRequestRow, settle
from fleet.store.worker import StoreWorker
from protos.evidence import EvidenceError, check_evidence
from protos.liftwatch.v1 import gateway_pb2, records_pb2

log = logging.getLogger(__name__)

# The ids an Evidence names are bounded as an event's id is (fleet.ingest.gateway).
MAX_EVIDENCE_ID_LENGTH = 128
# The most samples one Evidence may hold: the agent's longest window (pre_s + threshold +
# max_s, check-config keeps it under 880 s) polled at 80 Hz, eight times the reference
# rate. Without a bound a 1 MB batch could carry a million one-byte samples, which every
# read of the event (JSON, CSV, the dashboard) would expand (tests/security/
# test_evidence_abuse.py).
MAX_EVIDENCE_SAMPLES = 72_000
_ENDS = frozenset(records_pb2.EvidenceEnd.values()) - {records_pb2.EVIDENCE_END_UNSPECIFIED}

F = TypeVar("F")


def evidence_problem(record: records_pb2.Record) -> str | None:
    """Why the Evidence record ``record`` cannot be stored, as ``record seq N evidence
    ...`` naming the field, or None (also for a record of another kind)."""
    if record.WhichOneof("payload") != "evidence":
        return None
    evidence = record.evidence
    where = f"record seq {record.seq} evidence"
    if not evidence.event_id and not evidence.request_id:
        return f"{where} names neither an event_id nor a request_id"
    for name in ("event_id", "request_id"):
        length = len(getattr(evidence, name))
        if length > MAX_EVIDENCE_ID_LENGTH:
            return (
                f"{where}.{name} is {length} characters long; the limit is {MAX_EVIDENCE_ID_LENGTH}"
            )
    if evidence.end not in _ENDS:
        return f"{where}.end is {evidence.end}, not a known EvidenceEnd"
    if not evidence.HasField("start") or not 0 <= evidence.start.nanos < 1_000_000_000:
        return f"{where}.start is missing or has nanos outside 0..999999999"
    if evidence.samples > MAX_EVIDENCE_SAMPLES:
        return f"{where}.samples is {evidence.samples}; the limit is {MAX_EVIDENCE_SAMPLES}"
    try:
        check_evidence(evidence)
    except EvidenceError as exc:
        return f"{where}: {exc}"
    return None


class EvidenceOutlet:
    """The way out to one agent stream for EvidenceRequest frames: ``capable`` when the
    agent's Hello set records_evidence (else requests for its units are refused)."""

    __slots__ = ("agent_id", "capable", "queue")

    def __init__(self, agent_id: str, capable: bool) -> None:
        self.agent_id = agent_id
        self.capable = capable
        self.queue: asyncio.Queue[gateway_pb2.EvidenceRequest] = asyncio.Queue()

    def send(self, request: EvidenceRequestRow) -> None:
        """Queue the EvidenceRequest frame of ``request`` for this stream."""
        self.queue.put_nowait(
            gateway_pb2.EvidenceRequest(
                request_id=request.request_id,
                unit_id=request.unit_id,
                seconds=request.seconds,
            )
        )


_END = object()


async def interleave(
    frames: AsyncIterator[F], requests: asyncio.Queue[gateway_pb2.EvidenceRequest]
) -> AsyncGenerator[F | gateway_pb2.EvidenceRequest]:
    """The agent's ``frames`` as they come, with each request put on ``requests`` in
    between (so the stream handler can write it while it waits for the agent). Ends when
    ``frames`` ends; use inside ``contextlib.aclosing`` so that the read in progress is
    cancelled when the caller stops early."""
    reading: asyncio.Future[object] | None = None
    waiting: asyncio.Future[gateway_pb2.EvidenceRequest] | None = None
    try:
        while True:
            if reading is None:
                reading = asyncio.ensure_future(anext(frames, _END))
            if waiting is None:
                waiting = asyncio.ensure_future(requests.get())
            done, _ = await asyncio.wait((reading, waiting), return_when=asyncio.FIRST_COMPLETED)
            if waiting in done:
                request = waiting.result()
                waiting = None
                yield request
            if reading in done:
                frame = reading.result()
                reading = None
                if frame is _END:
                    return
                yield frame  # type: ignore[misc]  # an F: only _END is not
    finally:
        for future in (reading, waiting):
            if future is not None:
                future.cancel()


def older_agent_reason(agent_id: str, unit_id: str) -> str:
    """Why a request for ``unit_id`` is refused when its agent keeps no recorder."""
    return (
        f"unit {unit_id!r}: its agent {agent_id!r} does not record evidence (its Hello "
        "did not set records_evidence: an older agent); update the agent"
    )


async def take_evidence_requests(
    store: StoreWorker,
    outlets: Mapping[str, EvidenceOutlet],
    clock: Clock,
    metrics: GatewayMetrics | None = None,
) -> int:
    """One poll: settle each pending request for a unit in ``outlets`` (the units whose
    agent stream this process holds) and send the ones settled ``sent``; returns how
    many were sent."""
    if not outlets:
        return 0
    now = clock()
    pending = await store.call(lambda s: s.pending_evidence_requests(now))
    sent = 0
    for request in pending:
        outlet = outlets.get(request.unit_id)
        if outlet is None:
            continue  # another process holds this unit's agent, or nobody does
        state = "sent" if outlet.capable else "refused"
        reason = "" if outlet.capable else older_agent_reason(outlet.agent_id, request.unit_id)
        won = await store.call(settle(request.request_id, state, now, reason))
        if not won:
            continue  # settled by another process first
        if metrics is not None:
            metrics.evidence_requests.labels(outcome=state).inc()
        if outlet.capable:
            outlet.send(request)
            sent += 1
            log.info("evidence request %s for unit %s sent", request.request_id, request.unit_id)
    return sent


async def watch_evidence_requests(
    store: StoreWorker,
    outlets: Callable[[], Mapping[str, EvidenceOutlet]],
    clock: Clock,
    metrics: GatewayMetrics | None = None,
    interval_s: float = EVIDENCE_POLL_S,
) -> None:
    """Until cancelled, every ``interval_s`` take the pending requests for this process's
    agents (`take_evidence_requests`); nothing is read while no agent is connected. A
    store error is logged and the poll tried again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await take_evidence_requests(store, outlets(), clock, metrics)
        except Exception as exc:  # the store may be briefly unreachable
            log.warning("taking evidence requests failed: %s", exc)

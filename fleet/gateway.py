"""AgentGateway.Connect: the ingest stream from agents into the store.

Hello -> Welcome(committed_seq) -> for each RecordBatch: validate, commit (one
transaction), Ack(up_to_seq); Heartbeat -> the agent and its units count as seen.
Anything wrong gets one Reject and the stream ends: the agent reconnects and its
Welcome says where to resume. Records at or below the committed seq are replays of
what the agent has not seen acked; they are stored once and acked again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fleet.clock import Clock, utc_now
from fleet.config import IngestConfig
from fleet.metrics import GatewayMetrics
from fleet.store.base import ControllerIdentity, UnitClaim
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc

log = logging.getLogger(__name__)

# Seqs are stored as SQLite INTEGER (signed 64-bit); larger ones would not fit.
MAX_SEQ = 2**63 - 1


def _reject(code: gateway_pb2.RejectCode, reason: str) -> gateway_pb2.Reject:
    return gateway_pb2.Reject(code=code, reason=reason)


def check_hello(hello: gateway_pb2.Hello) -> gateway_pb2.Reject | None:
    """A Reject when ``hello`` is unusable (no agent id, a unit without id), else None."""
    if not hello.agent_id:
        return _reject(gateway_pb2.REJECT_CODE_MALFORMED, "Hello has no agent_id")
    for index, unit in enumerate(hello.units):
        if not unit.unit_id:
            return _reject(gateway_pb2.REJECT_CODE_MALFORMED, f"Hello unit #{index} has no id")
    return None


def check_batch(
    batch: gateway_pb2.RecordBatch, permitted: frozenset[str], limits: IngestConfig
) -> gateway_pb2.Reject | None:
    """A Reject for the first rule ``batch`` breaks, else None.

    Rules: not empty; within the record and byte limits; each record for a unit declared
    in Hello, with a payload, a time and 0 < seq < 2**63; seqs strictly increasing.
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
    previous = 0
    for record in batch.records:
        if record.unit_id not in permitted:
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
        if record.seq <= previous:
            return _reject(
                gateway_pb2.REJECT_CODE_OUT_OF_ORDER,
                f"record seq {record.seq} follows seq {previous} in the same batch",
            )
        previous = record.seq
    return None


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
        )
        for u in hello.units
    ]


class AgentGateway(gateway_pb2_grpc.AgentGatewayServicer):  # type: ignore[misc]
    """The AgentGateway servicer; one `Connect` call per connected agent."""

    def __init__(
        self,
        store: StoreWorker,
        limits: IngestConfig,
        metrics: GatewayMetrics,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._limits = limits
        self._metrics = metrics
        self._clock = clock

    def _rejected(
        self, reject: gateway_pb2.Reject, agent_id: str, peer: str
    ) -> gateway_pb2.FleetFrame:
        code = gateway_pb2.RejectCode.Name(reject.code).removeprefix("REJECT_CODE_")
        self._metrics.rejects.labels(code=code).inc()
        log.warning("rejecting agent %r at %s: %s: %s", agent_id, peer, code, reject.reason)
        return gateway_pb2.FleetFrame(reject=reject)

    async def Connect(  # noqa: N802 (the generated servicer's name)
        self, request_iterator: AsyncIterator[gateway_pb2.AgentFrame], context: Any
    ) -> AsyncIterator[gateway_pb2.FleetFrame]:
        """Serve one agent stream; yields Welcome, Acks and at most one final Reject."""
        peer = str(context.peer())
        frames = aiter(request_iterator)
        first = await anext(frames, None)
        if first is None:
            return
        kind = first.WhichOneof("frame")
        self._metrics.frames.labels(kind=kind or "empty").inc()
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
        await self._store.register_hello(
            agent_id, hello.agent_version, _claims(hello), self._clock()
        )
        committed = await self._store.committed_seq(agent_id)
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
            )
        )
        permitted = frozenset(u.unit_id for u in hello.units)
        async for frame in frames:
            kind = frame.WhichOneof("frame")
            self._metrics.frames.labels(kind=kind or "empty").inc()
            if kind == "batch":
                problem = check_batch(frame.batch, permitted, self._limits)
                if problem is not None:
                    yield self._rejected(problem, agent_id, peer)
                    return
                result = await self._store.commit_batch(
                    agent_id, list(frame.batch.records), self._clock()
                )
                self._metrics.records_committed.inc(result.inserted)
                yield gateway_pb2.FleetFrame(ack=gateway_pb2.Ack(up_to_seq=result.committed_seq))
            elif kind == "heartbeat":
                await self._store.touch_agent(agent_id, self._clock())
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

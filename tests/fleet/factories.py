"""Builders for the protobuf frames and records the fleet tests send."""

from __future__ import annotations

import datetime as dt

from protos.liftwatch.v1 import gateway_pb2, records_pb2

T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)


def record(
    seq: int,
    unit_id: str = "U1",
    *,
    time: dt.datetime = T0,
    link_up: bool | None = None,
    firmware: str | None = None,
    event: records_pb2.EventType | None = None,
    phase: records_pb2.Phase = records_pb2.PHASE_RAISED,
    event_id: str = "ev-1",
) -> records_pb2.Record:
    """A Record of one kind: LinkStatus, ControllerInfo, Event, else a CarState sample."""
    message = records_pb2.Record(seq=seq, unit_id=unit_id)
    message.time.FromDatetime(time)
    if link_up is not None:
        message.link_status.up = link_up
    elif firmware is not None:
        message.controller_info.CopyFrom(
            records_pb2.ControllerInfo(vendor="Acme", model="RC-3000", firmware=firmware)
        )
    elif event is not None:
        message.event.CopyFrom(
            records_pb2.Event(event_id=event_id, type=event, phase=phase, floor=3, reason="test")
        )
        message.event.onset.FromDatetime(time - dt.timedelta(seconds=30))
    else:
        message.car_state.floor = 1
    return message


def hello(agent_id: str, *unit_ids: str, firmware: str = "3.1.2") -> gateway_pb2.AgentFrame:
    """A Hello frame claiming ``unit_ids`` with RC-3000 controllers at ``firmware``."""
    return gateway_pb2.AgentFrame(
        hello=gateway_pb2.Hello(
            agent_id=agent_id,
            agent_version="0.1.0",
            units=[
                gateway_pb2.UnitDescriptor(
                    unit_id=u,
                    controller=records_pb2.ControllerInfo(
                        vendor="Acme", model="RC-3000", firmware=firmware, profile="reference"
                    ),
                )
                for u in unit_ids
            ],
        )
    )


def batch(*records: records_pb2.Record) -> gateway_pb2.AgentFrame:
    """A RecordBatch frame."""
    return gateway_pb2.AgentFrame(batch=gateway_pb2.RecordBatch(records=list(records)))


def evidence_record(
    seq: int,
    unit_id: str = "U1",
    *,
    time: dt.datetime = T0,
    event_id: str = "ev-1",
    request_id: str = "",
    end: records_pb2.EvidenceEnd = records_pb2.EVIDENCE_END_POST,
    samples: int = 20,
) -> records_pb2.Record:
    """An Evidence record of ``samples`` samples at 10 Hz ending at ``time``: the car
    stopping between floors with its doors closed and occupied (encoded by the codec the
    agent uses, `protos.evidence`)."""
    from protos.evidence import EvidenceSample, encode_samples

    start_us = int(time.timestamp() * 1_000_000) - (samples - 1) * 100_000
    rows = [
        EvidenceSample(
            time_us=start_us + i * 100_000,
            link_up=True,
            position_mm=3000 + 10 * min(i, 10),
            speed_mm_s=max(0, 100 - 10 * i),
            load_percent=20,
            floor=1,
            fault_code=None,
            door=records_pb2.DOOR_STATE_CLOSED,
            direction=records_pb2.DIRECTION_UP if i < 10 else records_pb2.DIRECTION_NONE,
            mode=records_pb2.SERVICE_MODE_NORMAL,
            moving=i < 10,
            door_zone=False,
            levelled=False,
            door_lock_closed=True,
            safety_circuit_closed=True,
            occupied=True,
            alarm_button=None,
            overload=False,
            mains_ok=True,
            reopen_active=None,
        )
        for i in range(samples)
    ]
    message = records_pb2.Record(seq=seq, unit_id=unit_id)
    message.time.FromDatetime(time)
    evidence = message.evidence
    evidence.event_id = event_id
    evidence.request_id = request_id
    evidence.end = end
    evidence.pre_s, evidence.post_s, evidence.max_s = 60, 30, 300
    if event_id:
        evidence.onset.FromDatetime(time - dt.timedelta(seconds=1))
        evidence.raised.FromDatetime(time)
    encode_samples(rows, evidence)
    return message

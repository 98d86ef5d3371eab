"""FleetQuery: read-side gRPC over the store (units, coverage, events)."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import grpc
from google.protobuf import timestamp_pb2

from fleet.clock import Clock, utc_now
from fleet.config import CoverageConfig
from fleet.coverage import UnitStatus, coverage, status_of
from fleet.store.base import EventQuery, EventRow, UnitQuery, UnitRow
from fleet.store.worker import StoreWorker
from protos.liftwatch.v1 import query_pb2, query_pb2_grpc, records_pb2

DEFAULT_EVENT_LIMIT = 100
MAX_EVENT_LIMIT = 10_000

STATUS_TO_PROTO: dict[UnitStatus, query_pb2.UnitStatus] = {
    UnitStatus.ONLINE: query_pb2.UNIT_STATUS_ONLINE,
    UnitStatus.STALE: query_pb2.UNIT_STATUS_STALE,
    UnitStatus.OFFLINE: query_pb2.UNIT_STATUS_OFFLINE,
    UnitStatus.BLIND: query_pb2.UNIT_STATUS_BLIND,
    UnitStatus.NEVER_SEEN: query_pb2.UNIT_STATUS_NEVER_SEEN,
}
STATUS_FROM_PROTO = {number: status for status, number in STATUS_TO_PROTO.items()}


def _timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def unit_message(unit: UnitRow, status: UnitStatus) -> query_pb2.Unit:
    """The wire form of a stored unit with its computed ``status``."""
    message = query_pb2.Unit(
        unit_id=unit.unit_id,
        status=STATUS_TO_PROTO[status],
        registered=unit.registered,
        agent_id=unit.agent_id,
        agent_version=unit.agent_version,
        controller=records_pb2.ControllerInfo(
            vendor=unit.controller.vendor,
            model=unit.model,
            firmware=unit.controller.firmware,
            serial=unit.controller.serial,
            profile=unit.controller.profile,
        ),
        building=unit.register.building,
        street=unit.register.street,
        contractor=unit.register.contractor,
    )
    if unit.last_seen is not None:
        message.last_seen.CopyFrom(_timestamp(unit.last_seen))
    return message


def event_message(event: EventRow) -> query_pb2.StoredEvent:
    """The wire form of a stored event."""
    body = records_pb2.Event(
        event_id=event.event_id,
        type=cast(records_pb2.EventType, event.type),
        phase=cast(records_pb2.Phase, event.phase),
        reason=event.reason,
    )
    if event.onset is not None:
        body.onset.CopyFrom(_timestamp(event.onset))
    if event.floor is not None:
        body.floor = event.floor
    message = query_pb2.StoredEvent(
        agent_id=event.agent_id,
        seq=event.seq,
        unit_id=event.unit_id,
        time=_timestamp(event.time),
        event=body,
    )
    if event.committed is not None:
        message.committed.CopyFrom(_timestamp(event.committed))
    return message


class FleetQuery(query_pb2_grpc.FleetQueryServicer):  # type: ignore[misc]
    """The FleetQuery servicer; statuses are computed against the injected clock."""

    def __init__(
        self, store: StoreWorker, thresholds: CoverageConfig, clock: Clock = utc_now
    ) -> None:
        self._store = store
        self._thresholds = thresholds
        self._clock = clock

    async def ListUnits(  # noqa: N802 (generated name)
        self, request: query_pb2.ListUnitsRequest, context: Any
    ) -> query_pb2.ListUnitsResponse:
        """Units matching every non-empty filter of ``request``, ordered by unit_id."""
        units = await self._store.list_units(
            UnitQuery(
                street=request.street,
                building=request.building,
                contractor=request.contractor,
                firmware=request.firmware,
                model=request.model,
            )
        )
        now = self._clock()
        wanted = STATUS_FROM_PROTO.get(request.status)
        response = query_pb2.ListUnitsResponse()
        for unit in units:
            status = status_of(unit, now, self._thresholds)
            if wanted is None or status is wanted:
                response.units.append(unit_message(unit, status))
        return response

    async def GetUnit(  # noqa: N802 (generated name)
        self, request: query_pb2.GetUnitRequest, context: Any
    ) -> query_pb2.Unit:
        """The unit ``request.unit_id``; aborts with NOT_FOUND when the fleet never knew it."""
        unit = await self._store.get_unit(request.unit_id)
        if unit is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unit {request.unit_id!r} unknown")
            raise AssertionError("context.abort returned")  # abort always raises
        return unit_message(unit, status_of(unit, self._clock(), self._thresholds))

    async def Coverage(  # noqa: N802 (generated name)
        self, request: query_pb2.CoverageRequest, context: Any
    ) -> query_pb2.CoverageResponse:
        """District coverage counts as of now; see `fleet.coverage.Coverage`."""
        units = await self._store.list_units(UnitQuery())
        counts = coverage(units, self._clock(), self._thresholds)
        return query_pb2.CoverageResponse(
            registered=counts.registered,
            monitored=counts.monitored,
            online=counts.online,
            stale=counts.stale,
            offline=counts.offline,
            blind=counts.blind,
            never_seen=counts.never_seen,
            unregistered_reporting=counts.unregistered_reporting,
        )

    async def ListEvents(  # noqa: N802 (generated name)
        self, request: query_pb2.ListEventsRequest, context: Any
    ) -> query_pb2.ListEventsResponse:
        """The newest ``limit`` (default 100, at most 10,000) matching events, oldest first."""
        limit = min(request.limit or DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT)
        events = await self._store.list_events(
            EventQuery(unit_id=request.unit_id, type=int(request.type), limit=limit)
        )
        return query_pb2.ListEventsResponse(events=[event_message(e) for e in events])

"""FleetQuery: read-side gRPC over the store (units, coverage, firmware, events, evidence).

For operators only: every call first asks its ``authorize`` hook who the caller is
(`fleet.ingest.access.OperatorAccess` on the query listener: an API token, scoped by role as the
JSON API is, a contractor seeing only its own units; `fleet.ingest.access.deny_on_agent_port`
on the agent port: PERMISSION_DENIED for everyone).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import timestamp_pb2

from fleet.auth.roles import Principal
from fleet.ingest.access import abort_call
from fleet.read.scope import HiddenUnitError, Scope, ScopeError
from fleet.read.selection import BadRequestError, Reads, UnitFilter
from fleet.read.views import event_class_name
from fleet.store.base import EventRow, UnitRow
from fleet.store.evidence import EvidenceRow
from fleet.taxonomy import platform_codes
from fleet.units.coverage import Coverage, UnitStatus
from protos.liftwatch.v1 import query_pb2, query_pb2_grpc, records_pb2

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
    if event.gb_code is not None:
        body.gb_code = event.gb_code
    if event.at_landing is not None:
        body.at_landing = event.at_landing
    message = query_pb2.StoredEvent(
        agent_id=event.agent_id,
        seq=event.seq,
        unit_id=event.unit_id,
        time=_timestamp(event.time),
        event=body,
        event_class=event_class_name(event.type) or "",
        platform_codes=platform_codes(event.type, event.at_landing),
    )
    if event.committed is not None:
        message.committed.CopyFrom(_timestamp(event.committed))
    return message


def _coverage_fields(counts: Coverage) -> dict[str, int]:
    return {
        "registered": counts.registered,
        "monitored": counts.monitored,
        "online": counts.online,
        "stale": counts.stale,
        "offline": counts.offline,
        "blind": counts.blind,
        "never_seen": counts.never_seen,
        "unregistered_reporting": counts.unregistered_reporting,
    }


Authorize = Callable[[Any], Awaitable[Principal]]
T = TypeVar("T")


class FleetQuery(query_pb2_grpc.FleetQueryServicer):  # type: ignore[misc]
    """The FleetQuery servicer; statuses are computed against the injected clock.
    ``authorize(context)`` names the caller or aborts the call (see the module docstring)."""

    def __init__(self, reads: Reads, authorize: Authorize) -> None:
        self._reads = reads
        self._authorize = authorize

    async def _scope(self, context: Any) -> Scope:
        """The caller's scope (aborts the call when ``authorize`` refuses the caller)."""
        return Scope.of(await self._authorize(context))

    async def _read(self, context: Any, read: Awaitable[T]) -> T:
        """The result of ``read``, or the call aborted: INVALID_ARGUMENT for a bad
        request, PERMISSION_DENIED for a listing of another contractor, NOT_FOUND (as for
        a unit nobody knows) for a unit out of the caller's scope."""
        try:
            return await read
        except BadRequestError as exc:
            await abort_call(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except HiddenUnitError as exc:
            await abort_call(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except ScopeError as exc:
            await abort_call(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))

    async def ListUnits(  # noqa: N802 (generated name)
        self, request: query_pb2.ListUnitsRequest, context: Any
    ) -> query_pb2.ListUnitsResponse:
        """Units matching every non-empty filter of ``request``, ordered by unit_id, paged
        by ``page_size`` / ``page_token``; INVALID_ARGUMENT for a bad token or size."""
        scope = await self._scope(context)
        wanted = UnitFilter(
            street=request.street,
            building=request.building,
            contractor=request.contractor,
            firmware=request.firmware,
            model=request.model,
            status=STATUS_FROM_PROTO.get(request.status),
            monitored=request.monitored,
        )
        page = await self._read(
            context, self._reads.units(scope, wanted, request.page_size, request.page_token)
        )
        return query_pb2.ListUnitsResponse(
            units=[unit_message(u, s) for u, s in page.units],
            next_page_token=page.next_token,
            total=page.total,
        )

    async def GetUnit(  # noqa: N802 (generated name)
        self, request: query_pb2.GetUnitRequest, context: Any
    ) -> query_pb2.Unit:
        """The unit ``request.unit_id``; aborts with NOT_FOUND when the fleet never knew it."""
        found = await self._reads.unit(await self._scope(context), request.unit_id)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unit {request.unit_id!r} unknown")
            raise AssertionError("context.abort returned")  # abort always raises
        return unit_message(*found)

    async def Coverage(  # noqa: N802 (generated name)
        self, request: query_pb2.CoverageRequest, context: Any
    ) -> query_pb2.CoverageResponse:
        """District coverage counts as of now (see `fleet.units.coverage.Coverage`), and per
        street, building or contractor when ``request.by`` names one."""
        scope = await self._scope(context)
        counts, groups = await self._read(context, self._reads.coverage(scope, request.by))
        return query_pb2.CoverageResponse(
            **_coverage_fields(counts),
            groups=[
                query_pb2.CoverageGroup(name=name, **_coverage_fields(c))
                for name, c in groups.items()
            ],
        )

    async def FirmwareInventory(  # noqa: N802 (generated name)
        self, request: query_pb2.FirmwareInventoryRequest, context: Any
    ) -> query_pb2.FirmwareInventoryResponse:
        """Firmware and agent versions by model, policy violations, a unit's history."""
        scope = await self._scope(context)
        inv, history = await self._read(
            context, self._reads.firmware(scope, request.model, request.history_unit_id)
        )
        response = query_pb2.FirmwareInventoryResponse(
            firmware=[
                query_pb2.VersionCount(model=c.model, version=c.version, units=c.units)
                for c in inv.firmware
            ],
            agent_versions=[
                query_pb2.VersionCount(model=c.model, version=c.version, units=c.units)
                for c in inv.agent_versions
            ],
            violations=[
                query_pb2.FirmwareViolation(
                    unit_id=v.unit_id,
                    model=v.model,
                    firmware=v.firmware,
                    rule=v.rule,
                    reason=v.reason,
                )
                for v in inv.violations
            ],
        )
        for change in history:
            response.history.append(
                query_pb2.FirmwareChange(
                    unit_id=change.unit_id,
                    at=_timestamp(change.at),
                    agent_id=change.agent_id,
                    model=change.model,
                    old_firmware=change.old_firmware,
                    new_firmware=change.new_firmware,
                    old_agent_version=change.old_agent_version,
                    new_agent_version=change.new_agent_version,
                )
            )
        return response

    async def GetEvidence(  # noqa: N802 (generated name)
        self, request: query_pb2.GetEvidenceRequest, context: Any
    ) -> query_pb2.StoredEvidence:
        """The Evidence of ``request.event_id`` (its final window) or the answer to
        ``request.request_id``; INVALID_ARGUMENT unless exactly one is given, NOT_FOUND
        when none is stored or its unit is out of the caller's scope."""
        scope = await self._scope(context)
        if bool(request.event_id) == bool(request.request_id):
            await abort_call(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "give exactly one of event_id and request_id",
            )
        row: EvidenceRow | None
        if request.event_id:
            row = await self._reads.evidence.event(scope, request.event_id)
            what = f"event {request.event_id!r}"
        else:
            found = await self._reads.evidence.request(scope, request.request_id)
            row = None if found is None else found[1]
            what = f"request {request.request_id!r}"
        if row is None:
            await abort_call(context, grpc.StatusCode.NOT_FOUND, f"no evidence of {what}")
        return query_pb2.StoredEvidence(
            agent_id=row.agent_id,
            seq=row.seq,
            unit_id=row.unit_id,
            evidence=records_pb2.Evidence.FromString(row.body),
            sha256=row.sha256,
            committed=_timestamp(row.committed),
            event_type=cast(records_pb2.EventType, row.event_type),
        )

    async def ListEvents(  # noqa: N802 (generated name)
        self, request: query_pb2.ListEventsRequest, context: Any
    ) -> query_pb2.ListEventsResponse:
        """The newest ``limit`` (default 100, at most 10,000) matching events, oldest first."""
        scope = await self._scope(context)
        events = await self._read(
            context,
            self._reads.events(scope, request.unit_id, int(request.type), request.limit),
        )
        return query_pb2.ListEventsResponse(events=[event_message(e) for e in events])

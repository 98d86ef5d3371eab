"""The read side shared by FleetQuery (gRPC), the JSON API and the CLI.

Fetching differs (the servers await a `StoreWorker`, the CLI calls a store directly);
what is done with the rows is here, once: filtering by live status, paging, coverage
groups, the firmware inventory. `Reads` keeps every read to the caller's `Scope`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from fleet.clock import Clock
from fleet.read.evidence_views import EvidenceReads
from fleet.read.scope import Scope, require_unit
from fleet.store.base import (
    CoverageChange,
    EventQuery,
    EventRow,
    FirmwareChange,
    UnitQuery,
    UnitRow,
)
from fleet.store.worker import StoreWorker
from fleet.units.coverage import (
    Coverage,
    CoverageConfig,
    UnitStatus,
    coverage,
    coverage_by,
    status_of,
)
from fleet.units.firmware import Inventory, Policy, inventory

MAX_PAGE_SIZE = 10_000
DEFAULT_EVENT_LIMIT = 100
MAX_EVENT_LIMIT = 10_000
HISTORY_LIMIT = 1_000


class BadRequestError(ValueError):
    """A query parameter is unusable; the message names it."""


@dataclass(frozen=True, slots=True)
class UnitFilter:
    """Filters of a unit listing; empty strings, None and False mean "any"."""

    street: str = ""
    building: str = ""
    contractor: str = ""
    firmware: str = ""
    model: str = ""
    status: UnitStatus | None = None
    monitored: bool = False
    # Case-insensitive text anywhere in the unit id, building, address or street.
    text: str = ""

    def matches_text(self, unit: UnitRow) -> bool:
        """Whether ``unit`` contains `text` (always, when it is empty)."""
        if not self.text:
            return True
        needle = self.text.casefold()
        register = unit.register
        return any(
            needle in field.casefold()
            for field in (unit.unit_id, register.building, register.address, register.street)
        )

    def store_query(self) -> UnitQuery:
        """The part of the filter the store applies (status depends on the clock)."""
        return UnitQuery(
            street=self.street,
            building=self.building,
            contractor=self.contractor,
            firmware=self.firmware,
            model=self.model,
            # never_seen units have not reported by definition; the status filter wins.
            reported_only=self.monitored and self.status is not UnitStatus.NEVER_SEEN,
        )


@dataclass(frozen=True, slots=True)
class UnitPage:
    """One page of units with their live status; ``next_token`` is "" on the last page."""

    units: tuple[tuple[UnitRow, UnitStatus], ...]
    next_token: str
    total: int


def encode_token(unit_id: str) -> str:
    """The opaque page token that continues after ``unit_id``."""
    return base64.urlsafe_b64encode(unit_id.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    """The unit_id a page token continues after; raises `BadRequestError`."""
    try:
        padded = token + "=" * (-len(token) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequestError(f"page_token {token!r} is not a token this fleet issued") from None


# What matters first (issue 19, item 7): a unit with an open alarm, then link down
# (blind), offline, stale, online, never seen; by unit id within each.
URGENCY = {
    UnitStatus.BLIND: 1,
    UnitStatus.OFFLINE: 2,
    UnitStatus.STALE: 3,
    UnitStatus.ONLINE: 4,
    UnitStatus.NEVER_SEEN: 5,
}


def _after(page_token: str, by_urgency: bool) -> tuple[int, str] | None:
    """Where a page token continues: (rank, unit_id); rank 0 in unit-id order."""
    if not page_token:
        return None
    text = decode_token(page_token)
    if not by_urgency:
        return 0, text
    rank, _, unit_id = text.partition("\t")
    if not rank.isdigit() or not unit_id:
        raise BadRequestError(f"page_token {page_token!r} is not a token of this order")
    return int(rank), unit_id


def select_units(
    rows: Sequence[UnitRow],
    wanted: UnitFilter,
    now: dt.datetime,
    thresholds: CoverageConfig,
    page_size: int = 0,
    page_token: str = "",
    alarmed: frozenset[str] | None = None,
) -> UnitPage:
    """Rows (ordered by unit_id) with their status as of ``now``, filtered and paged.
    With ``alarmed`` (the units with an open alarm) they are ordered by `URGENCY` instead,
    that set first; a unit whose rank changes between two pages may show on both or
    neither (the page after is read again from the live statuses)."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise BadRequestError(f"page_size must be between 0 and {MAX_PAGE_SIZE}")
    after = _after(page_token, alarmed is not None)
    listed = [(u, status_of(u, now, thresholds)) for u in rows if wanted.matches_text(u)]
    listed = [(u, s) for u, s in listed if wanted.status is None or s is wanted.status]
    total = len(listed)

    def rank(u: UnitRow, s: UnitStatus) -> int:
        if alarmed is None:
            return 0
        return 0 if u.unit_id in alarmed else URGENCY[s]

    if alarmed is not None:
        listed.sort(key=lambda us: (rank(*us), us[0].unit_id))
    if after is not None:
        listed = [(u, s) for u, s in listed if (rank(u, s), u.unit_id) > after]
    next_token = ""
    if page_size and len(listed) > page_size:
        listed = listed[:page_size]
        last, status = listed[-1]
        mark = last.unit_id if alarmed is None else f"{rank(last, status)}\t{last.unit_id}"
        next_token = encode_token(mark)
    return UnitPage(tuple(listed), next_token, total)


def event_limit(requested: int) -> int:
    """The number of events to return for a requested ``limit`` (0 = the default)."""
    if requested < 0:
        raise BadRequestError("limit must be >= 0")
    return min(requested or DEFAULT_EVENT_LIMIT, MAX_EVENT_LIMIT)


class Reads:
    """The read side over a running store, statuses against the injected clock.

    Every read takes the caller's `Scope` and returns only what is in it (see
    `fleet.read.scope`): listings are filtered in the store by contractor, and a unit
    out of scope is answered as unknown (`HiddenUnitError`, or None from `unit`)."""

    def __init__(
        self, store: StoreWorker, thresholds: CoverageConfig, policy: Policy, clock: Clock
    ) -> None:
        self._store = store
        self.thresholds = thresholds
        self._policy = policy
        self._clock = clock
        # The flight recorder's windows (issue 16), kept to the caller's scope as well.
        self.evidence = EvidenceReads(store)

    async def units(
        self,
        scope: Scope,
        wanted: UnitFilter,
        page_size: int = 0,
        token: str = "",
        *,
        urgent_first: bool = False,
    ) -> UnitPage:
        """Units in ``scope`` matching ``wanted``, ordered by unit_id (``urgent_first``:
        by `URGENCY`, units with an open alarm first), one page; a contractor naming
        another contractor gets `OutOfScopeError`."""
        wanted = dataclasses.replace(wanted, contractor=scope.listing(wanted.contractor))
        if token:
            _after(token, urgent_first)  # refuse a bad token before touching the store
        rows = await self._store.list_units(wanted.store_query())
        alarmed = None
        if urgent_first:
            open_alarms = await self._store.call(lambda s: s.alarms(open_only=True))
            alarmed = frozenset(a.unit_id for a in open_alarms)
        return select_units(rows, wanted, self._clock(), self.thresholds, page_size, token, alarmed)

    async def unit(self, scope: Scope, unit_id: str) -> tuple[UnitRow, UnitStatus] | None:
        """One unit with its status, or None when the fleet never knew it or it is not in
        ``scope`` (the same answer, so that a contractor learns nothing)."""
        row = await self._store.get_unit(unit_id)
        if row is None or not scope.sees(row.register.contractor):
            return None
        return row, status_of(row, self._clock(), self.thresholds)

    async def coverage(self, scope: Scope, by: str = "") -> tuple[Coverage, dict[str, Coverage]]:
        """Counts of the units in ``scope``, and per ``by`` group when given (else an
        empty dict)."""
        rows = await self._store.list_units(UnitQuery(contractor=scope.listing()))
        now = self._clock()
        try:
            groups = coverage_by(rows, by, now, self.thresholds) if by else {}
        except ValueError as exc:
            raise BadRequestError(f"by: {exc}") from None
        return coverage(rows, now, self.thresholds), groups

    async def coverage_history(
        self, scope: Scope, unit_id: str = "", limit: int = 0
    ) -> list[CoverageChange]:
        """The newest ``limit`` (default 100) coverage transitions, oldest first: of
        ``unit_id``, or of every unit in the unlimited scope (a contractor names one)."""
        if not scope.everything and not unit_id:
            raise BadRequestError("unit: a contractor asks for one unit's history at a time")
        if unit_id:
            await require_unit(self._store, scope, unit_id)
        return await self._store.coverage_history(unit_id, event_limit(limit))

    async def firmware(
        self, scope: Scope, model: str = "", history_unit: str = ""
    ) -> tuple[Inventory, list[FirmwareChange]]:
        """The firmware inventory of the units in ``scope`` (of ``model`` unless empty),
        and ``history_unit``'s history (`HiddenUnitError` when it is out of scope)."""
        if history_unit:
            await require_unit(self._store, scope, history_unit)
        rows = await self._store.list_units(UnitQuery(model=model, contractor=scope.listing()))
        history = (
            await self._store.firmware_history(history_unit, HISTORY_LIMIT) if history_unit else []
        )
        return inventory(rows, self._policy, model), history

    async def events(
        self, scope: Scope, unit_id: str = "", type_number: int = 0, limit: int = 0
    ) -> list[EventRow]:
        """The newest matching events of the units in ``scope``, oldest first
        (`HiddenUnitError` for a ``unit_id`` out of scope)."""
        if unit_id:
            await require_unit(self._store, scope, unit_id)
        return await self._store.list_events(
            EventQuery(
                unit_id=unit_id,
                type=type_number,
                limit=event_limit(limit),
                contractor=scope.listing(),
            )
        )

"""The scoped reads of alarms, unit histories, live data and report rows.

Like `fleet.read.selection.Reads`, every read takes the caller's `Scope` and returns only
what is in it (see `fleet.read.scope`); the web routes of the lifecycle side and the
dashboard read through here, never the store directly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fleet.history.verify import verify_store
from fleet.read.scope import OutOfScopeError, Scope, require_unit, split_by_unit, unit_ids
from fleet.store.base import AlarmRow
from fleet.store.chain import Head, HistoryRow, Problem
from fleet.store.worker import StoreWorker

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UnitHistory:
    """A unit's chained history rows, its head (if any) and what verifying them found."""

    rows: list[HistoryRow]
    heads: list[Head]
    problems: list[Problem]


@dataclass(frozen=True, slots=True)
class LiveData:
    """What a unit page starts from: the latest car state, link status and counters, each
    as (recorded at, the stored Record's bytes)."""

    car: tuple[dt.datetime, bytes] | None
    links: list[tuple[dt.datetime, bytes]]
    counters: list[tuple[dt.datetime, bytes]]


class UnitReads:
    """Alarms, histories, live data and report rows over ``store``, kept to a `Scope`."""

    def __init__(self, store: StoreWorker) -> None:
        self._store = store

    async def alarms(
        self, scope: Scope, *, open_only: bool = False, unit_id: str = "", limit: int = 0
    ) -> list[AlarmRow]:
        """Alarms of the units in ``scope``, newest first (``limit`` 0 = all)."""
        found = await self._store.call(
            lambda s: s.alarms(
                open_only=open_only,
                unit_id=unit_id,
                # a contractor's newest N are found after filtering
                limit=limit if scope.everything else 0,
            )
        )
        if scope.everything:
            return found
        mine = [a for a in found if scope.sees(a.contractor)]
        return mine[:limit] if limit else mine

    async def alarm(self, scope: Scope, alarm_id: int) -> AlarmRow | None:
        """Alarm ``alarm_id``, or None when there is none or its unit is out of ``scope``
        (an alarm the caller may not see does not exist for it)."""
        rows = await self._store.call(lambda s: s.alarms())
        found = next((a for a in rows if a.alarm_id == alarm_id), None)
        return found if found is not None and scope.sees(found.contractor) else None

    async def history(self, scope: Scope, unit_id: str) -> UnitHistory:
        """``unit_id``'s chain, its events and alarms rows checked against it;
        `HiddenUnitError` when the unit is out of ``scope``."""
        await require_unit(self._store, scope, unit_id)
        rows, heads, problems = await self._store.call(
            lambda s: (*s.history(unit_id), verify_store(s, unit_id).problems)
        )
        return UnitHistory(rows, heads, list(problems))

    async def live(self, scope: Scope, unit_id: str, counters: int) -> LiveData:
        """``unit_id``'s latest car state and link status and its newest ``counters``
        counters records; `HiddenUnitError` when the unit is out of ``scope``."""
        await require_unit(self._store, scope, unit_id)
        car, links, points = await self._store.call(
            lambda s: (
                s.latest_car_state(unit_id),
                s.health_records(unit_id, "link_status", 1),
                s.health_records(unit_id, "counters", counters),
            )
        )
        return LiveData(car, links, points)

    async def report_rows(self, scope: Scope, report: str, by: str, rows: Sequence[T]) -> list[T]:
        """A report's rows (its row definitions) as ``scope`` may see them: a contractor
        its own units' rows or its own scorecard only; a grouping that mixes contractors
        (building, street) is refused with `OutOfScopeError`."""
        if scope.everything:
            return list(rows)
        # A fault-rate row is its group, named; every other report's row has its contractor.
        group = "name" if report == "fault-rate" else "contractor"
        if report == "fault-rate":
            if by == "unit":
                ids = await unit_ids(self._store, scope) or frozenset()
                return [r for r in rows if str(getattr(r, group)) in ids]
            if by == "contractor":
                return [r for r in rows if getattr(r, group) == scope.contractor]
            raise OutOfScopeError(f"by: a contractor sees fault rates by unit, not by {by}")
        return [r for r in rows if getattr(r, group, None) == scope.contractor]

    async def split_by_unit(
        self, scope: Scope, items: Sequence[T], unit_of: Callable[[T], str]
    ) -> tuple[list[T], list[T]]:
        """``items`` in ``scope`` (by their ``unit_of(item)``) and those out of it."""
        return await split_by_unit(self._store, scope, items, unit_of)

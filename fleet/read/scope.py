"""Contractor scope by construction: every read of the read side takes the caller's `Scope`.

A contractor sees only the units the register gives it; every other role sees them all.
The routes (JSON API, dashboard, live data, FleetQuery) do not filter rows themselves:
they take a `Scope` from the caller's principal (`Scope.of`) and hand it to the reads
(`fleet.read.selection.Reads`, `fleet.read.unit_reads.UnitReads`), which filter in the
store (``WHERE contractor = ?``) or by the contractor's set of unit ids, and answer for a
unit the caller may not see exactly as for a unit nobody knows (`HiddenUnitError`). A
route that reads through them cannot return another contractor's unit, even if it
forgets to check. The live hub scopes its streams the same way, per message
(`fleet.web.live.LiveHub`).

Which contractor a unit belongs to is read from the store on each request that names a
unit (one indexed read, contractors only), so a unit given to another contractor by a
register import in any process is hidden from the next request on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from fleet.auth.roles import Principal
from fleet.store.base import UnitQuery
from fleet.store.worker import StoreWorker

T = TypeVar("T")


class ScopeError(Exception):
    """A read outside the caller's scope; ``status`` is the HTTP status that answers it."""

    status = 403


class OutOfScopeError(ScopeError):
    """The caller asked, by name, for a listing of another contractor (403)."""

    status = 403


class HiddenUnitError(ScopeError):
    """The caller may not see ``unit_id``: answered as a unit nobody knows (404), so that
    a contractor learns nothing of other contractors' units."""

    status = 404

    def __init__(self, unit_id: str) -> None:
        super().__init__(f"unit {unit_id!r} unknown")
        self.unit_id = unit_id


@dataclass(frozen=True, slots=True)
class Scope:
    """The units one caller may read: a contractor's (``contractor``), or every unit
    (``contractor`` empty). Made from the caller's principal with `of`."""

    contractor: str = ""
    username: str = ""

    @classmethod
    def of(cls, principal: Principal) -> Scope:
        """The scope of ``principal``: its contractor's units, or all for other roles."""
        return cls(principal.unit_scope(), principal.username)

    @property
    def everything(self) -> bool:
        """Whether this scope holds every unit (no contractor to filter by)."""
        return not self.contractor

    def listing(self, asked: str = "") -> str:
        """The contractor a listing is limited to: ``asked`` in the unlimited scope, the
        caller's own in a contractor's; `OutOfScopeError` when it asks for another's."""
        if self.contractor and asked and asked != self.contractor:
            raise OutOfScopeError(f"contractor: {self.username!r} sees only {self.contractor!r}")
        return self.contractor or asked

    def sees(self, unit_contractor: str) -> bool:
        """Whether a unit the register gives to ``unit_contractor`` is in this scope."""
        return self.everything or unit_contractor == self.contractor


EVERY_UNIT = Scope()
"""The scope of a caller who sees every unit (an administrator's, auth off, the CLI)."""


async def require_unit(store: StoreWorker, scope: Scope, unit_id: str) -> None:
    """Raise `HiddenUnitError` unless ``unit_id`` is in ``scope`` (an unknown unit is in
    the unlimited scope only, where reading it finds nothing)."""
    if scope.everything:
        return
    row = await store.get_unit(unit_id)
    if row is None or not scope.sees(row.register.contractor):
        raise HiddenUnitError(unit_id)


async def unit_ids(store: StoreWorker, scope: Scope) -> frozenset[str] | None:
    """The ids of the units in ``scope``; None for the unlimited scope."""
    if scope.everything:
        return None
    rows = await store.list_units(UnitQuery(contractor=scope.contractor))
    return frozenset(u.unit_id for u in rows)


async def split_by_unit(
    store: StoreWorker, scope: Scope, items: Sequence[T], unit_of: Callable[[T], str]
) -> tuple[list[T], list[T]]:
    """``items`` split into those whose unit (``unit_of``) is in ``scope`` and the rest."""
    ids = await unit_ids(store, scope)
    if ids is None:
        return list(items), []
    return [i for i in items if unit_of(i) in ids], [i for i in items if unit_of(i) not in ids]

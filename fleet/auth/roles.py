"""Roles and the signed-in principal: who sees which units and who may act.

Pure data and rules, no I/O: the web layer builds a `Principal` from the user a session
or API token names (`fleet.store.base.UserRow.principal`); every read takes the scope made
from it (`fleet.read.scope.Scope.of`, from `unit_scope`), and the web layer asks it before
it applies an alarm action or manages users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a user is allowed to do (docs/fleet.md, "Users and roles")."""

    REGULATOR = "regulator"
    """The district's supervisor: sees every unit and report, changes nothing."""
    CONTRACTOR = "contractor"
    """A maintenance contractor's engineer: only the units it maintains; acts on their
    alarms (on site, resolve)."""
    DISPATCHER = "dispatcher"
    """The rescue desk: sees every unit, acts on every alarm."""
    ADMIN = "admin"
    """Manages users, the unit register and the firmware policy; sees and acts on all."""


# The roles that may record alarm steps. A contractor may only for units it sees: the
# caller combines the two checks (`Principal.sees_unit`).
_ALARM_ROLES = frozenset({Role.DISPATCHER, Role.ADMIN, Role.CONTRACTOR})


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in user as the access rules see it.

    ``contractor`` is the maintenance contractor's name exactly as the units register's
    ``contractor`` column spells it; it is required for, and only allowed with,
    `Role.CONTRACTOR` (an empty one would match every unregistered unit). Raises
    ValueError otherwise.
    """

    username: str
    role: Role
    contractor: str = ""
    display_name: str = ""

    def __post_init__(self) -> None:
        problem = role_problem(self.role, self.contractor)
        if problem is not None:
            raise ValueError(problem)

    def sees_unit(self, unit_contractor: str) -> bool:
        """Whether this principal may see a unit whose register names ``unit_contractor``
        as its maintenance contractor: a contractor only its own, every other role all."""
        if self.role is Role.CONTRACTOR:
            return unit_contractor == self.contractor
        return True

    def can_act_on_alarms(self) -> bool:
        """Whether this principal may acknowledge, mark on site or resolve alarms at all.

        True for dispatchers, admins and contractors; a contractor only on units it sees,
        which the caller checks with `sees_unit`. Regulators are read-only."""
        return self.role in _ALARM_ROLES

    def can_admin(self) -> bool:
        """Whether this principal may manage users, the register and the firmware policy."""
        return self.role is Role.ADMIN

    def can_publish(self) -> bool:
        """Whether this principal may draft, approve and publish the district's public
        lists: regulators only (the district's statement; an administrator manages
        accounts, not what the district says in public)."""
        return self.role is Role.REGULATOR

    def unit_scope(self) -> str:
        """The contractor to filter unit queries by, "" for all units."""
        return self.contractor if self.role is Role.CONTRACTOR else ""


def role_problem(role: str, contractor: str) -> str | None:
    """Why ``role`` with ``contractor`` is not a valid combination, or None when it is."""
    try:
        known = Role(role)
    except ValueError:
        return f"unknown role {role!r} (one of {', '.join(r.value for r in Role)})"
    if known is Role.CONTRACTOR and not contractor.strip():
        return "the contractor role needs the contractor's name as the unit register spells it"
    if contractor != contractor.strip():
        # The register import strips its cells: a padded name would never match a unit.
        return f"contractor {contractor!r} has leading or trailing spaces"
    if known is not Role.CONTRACTOR and contractor:
        return f"only the contractor role takes a contractor name, not {known.value}"
    return None

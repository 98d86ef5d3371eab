"""The store's agent registry: which units each agent may report for.

Under mutual TLS the fleet admits an agent (the Common Name of its client certificate)
only for the units registered here (`fleet.ingest.access`); ``liftwatch-fleet agents`` manages
the rows. A unit may be registered for several agents (a replacement box installed
beside the old one), and an agent for several units (one box per machine room).

The revocation list (``revoked_certificates``, created by migration "verdicts") names
stolen or retired agent certificates: by serial (one certificate: a stolen box's, while its
replacement gets a new one) or by agent id (every certificate naming that agent). Every
change to registrations or revocations is appended to ``agent_access_changes``; a serving
fleet polls it (`fleet.ingest.access.watch_access_changes`) and re-checks that agent's open
streams, so that ``agents remove`` or ``agents revoke`` ends them at once.

`AgentRegistryStore` is a mixin of `fleet.store.sql.SqlStore`: the same SQL on both
backends, run through its driver hooks.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

# Migration "agent registry": the same DDL on both backends. The primary key serves the
# one hot query (an agent's units, at every Hello under mutual TLS).
AGENT_UNITS_TABLE = """
CREATE TABLE agent_units (
    agent_id  TEXT NOT NULL,
    unit_id   TEXT NOT NULL,
    PRIMARY KEY (agent_id, unit_id)
);
CREATE INDEX agent_units_unit ON agent_units (unit_id);
"""


# A certificate serial as the revocation list keeps it: lowercase hex, no leading zeros.
_SERIAL = re.compile(r"^[0-9a-f]{1,40}$")


def normalize_serial(text: str) -> str:
    """``text`` (hex, optionally with ``0x``, colons or spaces, any case) in the form the
    revocation list keeps; raises ValueError naming what is wrong."""
    digits = text.strip().lower().removeprefix("0x").replace(":", "").replace(" ", "")
    if not _SERIAL.match(digits):
        raise ValueError(f"serial {text!r}: expected up to 40 hexadecimal digits")
    return digits.lstrip("0") or "0"


def serial_text(serial: int) -> str:
    """A certificate's serial number in the revocation list's form."""
    return format(serial, "x")


@dataclass(frozen=True, slots=True)
class Revocation:
    """One revocation-list entry: a certificate by ``serial``, or every certificate of
    ``agent_id`` (the other field is "")."""

    agent_id: str
    serial: str
    reason: str
    revoked: dt.datetime


@dataclass(frozen=True, slots=True)
class AccessChange:
    """One change to who may connect: ``agent_id``'s registration or revocation, or the
    revocation of certificate ``serial``."""

    id: int
    agent_id: str
    serial: str


class AgentRegistryStore:
    """Grants of units to agents over the driver hooks of `SqlStore`."""

    # -- driver hooks (SqlStore supplies them) --------------------------------------------

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def _many(self, text: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- the registry ---------------------------------------------------------------------

    def add_agent_units(self, agent_id: str, unit_ids: Sequence[str]) -> int:
        """Register ``unit_ids`` for ``agent_id`` (idempotent); returns how many were new."""
        wanted = sorted(set(unit_ids))
        with self._transaction(durable=True):
            known = set(self.agent_units(agent_id))
            self._many(
                "INSERT INTO agent_units (agent_id, unit_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                [(agent_id, u) for u in wanted],
            )
            self._access_changed(agent_id, "")
        return len([u for u in wanted if u not in known])

    def remove_agent_units(self, agent_id: str, unit_ids: Sequence[str] = ()) -> int:
        """Withdraw ``unit_ids`` from ``agent_id`` (all of its units when empty); returns
        how many registrations were removed."""
        with self._transaction(durable=True):
            before = len(self.agent_units(agent_id))
            if unit_ids:
                self._many(
                    "DELETE FROM agent_units WHERE agent_id = ? AND unit_id = ?",
                    [(agent_id, u) for u in sorted(set(unit_ids))],
                )
            else:
                self._execute("DELETE FROM agent_units WHERE agent_id = ?", (agent_id,))
            after = len(self.agent_units(agent_id))
            self._access_changed(agent_id, "")
        return before - after

    def agent_units(self, agent_id: str) -> tuple[str, ...]:
        """The units registered for ``agent_id``, sorted; empty when it has none."""
        rows = self._execute(
            "SELECT unit_id FROM agent_units WHERE agent_id = ? ORDER BY unit_id", (agent_id,)
        ).fetchall()
        return tuple(str(r[0]) for r in rows)

    def agent_registrations(self) -> dict[str, tuple[str, ...]]:
        """Every registered agent with its units, both sorted."""
        found: dict[str, list[str]] = {}
        for agent_id, unit_id in self._execute(
            "SELECT agent_id, unit_id FROM agent_units ORDER BY agent_id, unit_id"
        ).fetchall():
            found.setdefault(str(agent_id), []).append(str(unit_id))
        return {agent: tuple(units) for agent, units in found.items()}

    # -- the revocation list ----------------------------------------------------------------

    def revoke_agent(
        self, at: dt.datetime, *, agent_id: str = "", serial: str = "", reason: str = ""
    ) -> bool:
        """Revoke the certificate ``serial`` (`normalize_serial` form), or every certificate
        of ``agent_id`` (exactly one of the two); False when it was revoked already."""
        if bool(agent_id) == bool(serial):
            raise ValueError("revoke one agent id or one certificate serial")
        with self._transaction(durable=True):
            if self._revocation_row(agent_id, serial) is not None:
                return False
            micros = int(at.timestamp() * 1_000_000)
            self._execute(
                "INSERT INTO revoked_certificates (agent_id, serial, reason, revoked_us) "
                "VALUES (?, ?, ?, ?)",
                (agent_id, serial, reason, micros),
            )
            self._access_changed(agent_id, serial)
        return True

    def unrevoke_agent(self, *, agent_id: str = "", serial: str = "") -> bool:
        """Take ``agent_id`` or ``serial`` off the revocation list; False when absent."""
        with self._transaction(durable=True):
            if self._revocation_row(agent_id, serial) is None:
                return False
            self._execute(
                "DELETE FROM revoked_certificates WHERE agent_id = ? AND serial = ?",
                (agent_id, serial),
            )
            self._access_changed(agent_id, serial)
        return True

    def revocations(self) -> list[Revocation]:
        """The revocation list, oldest first."""
        rows = self._execute(
            "SELECT agent_id, serial, reason, revoked_us FROM revoked_certificates "
            "ORDER BY revoked_us, agent_id, serial"
        ).fetchall()
        return [
            Revocation(str(a), str(s), str(r), dt.datetime.fromtimestamp(int(us) / 1e6, tz=dt.UTC))
            for a, s, r, us in rows
        ]

    def revocation_reason(self, agent_id: str, serial: str) -> str | None:
        """Why a certificate of ``agent_id`` with ``serial`` is revoked ("revoked" when no
        reason was given), or None when it is not."""
        row = self._execute(
            "SELECT agent_id, reason FROM revoked_certificates "
            "WHERE (agent_id = ? AND serial = '') OR (agent_id = '' AND serial = ?) "
            "ORDER BY agent_id LIMIT 1",
            (agent_id, serial),
        ).fetchone()
        if row is None:
            return None
        what = f"agent {agent_id}" if row[0] else f"certificate serial {serial}"
        return f"{what} is revoked" + (f": {row[1]}" if row[1] else "")

    def access_changes(self, after_id: int) -> list[AccessChange]:
        """Changes to who may connect with an id above ``after_id``, oldest first."""
        rows = self._execute(
            "SELECT id, agent_id, serial FROM agent_access_changes WHERE id > ? ORDER BY id",
            (after_id,),
        ).fetchall()
        return [AccessChange(int(i), str(a), str(s)) for i, a, s in rows]

    def last_access_change(self) -> int:
        """The id of the newest change to who may connect (0 when none)."""
        row = self._execute("SELECT MAX(id) FROM agent_access_changes").fetchone()
        return int(row[0]) if row is not None and row[0] is not None else 0

    def _revocation_row(self, agent_id: str, serial: str) -> Any:
        return self._execute(
            "SELECT reason FROM revoked_certificates WHERE agent_id = ? AND serial = ?",
            (agent_id, serial),
        ).fetchone()

    def _access_changed(self, agent_id: str, serial: str) -> None:
        self._execute(
            "INSERT INTO agent_access_changes (agent_id, serial) VALUES (?, ?)", (agent_id, serial)
        )

"""The store's agent registry: which units each agent may report for.

Under mutual TLS the fleet admits an agent (the Common Name of its client certificate)
only for the units registered here (`fleet.access`); ``liftwatch-fleet agents`` manages
the rows. A unit may be registered for several agents (a replacement box installed
beside the old one), and an agent for several units (one box per machine room).

`AgentRegistryStore` is a mixin of `fleet.store.sql.SqlStore`: the same SQL on both
backends, run through its driver hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
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

"""Migration "roles" (issue 18, item 3): which fleet instance runs the jobs that must run
once for the whole fleet.

Several instances on one PostgreSQL (or ``serve --workers`` on one SQLite file) all
ingest, but the coverage sweep and alarm dispatch (creating the sends of new alarms,
escalating overdue ones, sending) must each have one owner at a time, and another must
take over when that owner dies. ``fleet_roles`` holds one row per such role with the
store's one lease mechanism (`fleet.store.lease`: ``owner``, ``lease_until_us``,
``epoch``, as the northbound senders and retention hold theirs); `RoleLeases` takes,
renews and gives up a role's lease. The row of a role is created on first use.

Used on the store's own thread (`fleet.store.worker.StoreWorker.call`), like the rest of
the store; the loop that keeps the leases is `fleet.serve.roles`.
"""

from __future__ import annotations

from fleet.store import lease
from fleet.store.sql import SqlStore

ROLES_MIGRATION = """
CREATE TABLE fleet_roles (
    role            TEXT PRIMARY KEY,
    owner           TEXT NOT NULL DEFAULT '',
    lease_until_us  BIGINT NOT NULL DEFAULT 0,
    epoch           BIGINT NOT NULL DEFAULT 0
);
"""

_TABLE = "fleet_roles"


class RoleLeases:
    """The leases of the fleet-wide roles in ``store``."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def acquire(self, role: str, owner: str, now_us: int, lease_s: float) -> int | None:
        """Take ``role`` for ``owner`` when nobody holds it or its lease ran out by
        ``now_us``; the new epoch, None when another owner holds it."""
        s = self._store
        with s._transaction():
            s._execute(
                f"INSERT INTO {_TABLE} (role) VALUES (?) ON CONFLICT (role) DO NOTHING", (role,)
            )
            until = now_us + int(lease_s * 1_000_000)
            return lease.acquire(s, _TABLE, "role", role, owner, until, now_us)

    def renew(self, role: str, owner: str, epoch: int, now_us: int, lease_s: float) -> bool:
        """Extend the lease ``owner`` holds on ``role`` at ``epoch``; False when another
        instance took it meanwhile (ours ran out)."""
        s = self._store
        with s._transaction():
            until = now_us + int(lease_s * 1_000_000)
            return lease.fence(
                s, _TABLE, "role", role, owner, epoch, "lease_until_us = ?", (until,)
            )

    def release(self, role: str, owner: str, epoch: int) -> None:
        """Give ``role`` up (a clean stop), so that another instance takes it at once."""
        s = self._store
        with s._transaction():
            lease.release(s, _TABLE, "role", role, owner, epoch)

    def holder(self, role: str) -> tuple[str, int]:
        """Who holds ``role`` ("" = nobody yet) and until when (µs since the epoch)."""
        row = self._store._execute(
            f"SELECT owner, lease_until_us FROM {_TABLE} WHERE role = ?", (role,)
        ).fetchone()
        return ("", 0) if row is None else (str(row[0]), int(row[1]))

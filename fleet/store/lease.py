"""Leases in the store: the one way a job that must run on one fleet instance at a time
(several instances share one PostgreSQL, or ``serve --workers`` one SQLite file) picks
its owner. The northbound forwarder's platform senders (`fleet.store.northbound`) and
retention (`fleet.store.retention`) hold theirs this way.

A lease is three columns of the job's own row, found by ``key_column = key``: ``owner``
("" = none), ``lease_until_us``, ``epoch``. It is taken when nobody holds it or it ran out,
each acquisition starting a new epoch; every write the holder makes afterwards is
*fenced* (runs only while owner and epoch are still its own), so an instance that lost
its lease (paused past its end) cannot write over the new holder's work. No clock of
the database is read: ``now_us`` comes from the caller's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["acquire", "fence", "release"]


class _Executes(Protocol):
    def _execute(self, text: str, params: Sequence[object] = ()) -> Any: ...


def acquire(
    store: _Executes, table: str, key_column: str, key: str, owner: str, until_us: int, now_us: int
) -> int | None:
    """Take the lease of row ``key`` for ``owner`` until ``until_us`` when nobody holds it
    or it ran out by ``now_us``; its new epoch, None when another owner holds it. Run it
    inside the caller's transaction."""
    row = store._execute(
        f"UPDATE {table} SET owner = ?, lease_until_us = ?, epoch = epoch + 1 "
        f"WHERE {key_column} = ? AND (owner = '' OR lease_until_us < ?) RETURNING epoch",
        (owner, until_us, key, now_us),
    ).fetchone()
    return None if row is None else int(row[0])


def fence(
    store: _Executes,
    table: str,
    key_column: str,
    key: str,
    owner: str,
    epoch: int,
    assignments: str,
    params: Sequence[object],
) -> bool:
    """Apply ``assignments`` (SQL ``SET`` text, ``params`` its parameters) to row ``key``
    only while ``owner`` holds its lease at ``epoch``; whether it still did."""
    found = store._execute(
        f"UPDATE {table} SET {assignments} "
        f"WHERE {key_column} = ? AND owner = ? AND epoch = ? RETURNING epoch",
        (*params, key, owner, epoch),
    ).fetchone()
    return found is not None


def release(
    store: _Executes, table: str, key_column: str, key: str, owner: str, epoch: int
) -> None:
    """Give the lease up (a clean stop), so that another instance takes over at once."""
    fence(store, table, key_column, key, owner, epoch, "owner = '', lease_until_us = 0", ())

"""Keeping the unit -> contractor map that scopes a contractor's view current.

The live hub scopes each stream's messages with an in-memory unit -> contractor map. The
register can change in another process (``liftwatch-fleet units import``, another
replica). Each register import adds a row to ``register_changes``; `FreshContractors`
compares its newest id (one index read) with the one its map was read at, and re-reads the
map only when they differ. The API checks it before every request of a contractor (so the
open streams follow a reassignment at once), and `FreshContractors.watch` every
`REGISTER_POLL_S`. The routes' own reads do not use the map: they are scoped in the read
layer from the store (`fleet.read.scope`).
"""

from __future__ import annotations

import asyncio
import logging

from fleet.store.worker import StoreWorker
from fleet.web.live import UnitContractors

log = logging.getLogger(__name__)

# How often open live streams learn of a register import: the same bound as agent access.
REGISTER_POLL_S = 0.5


class FreshContractors:
    """``contractors``, re-read from ``store`` whenever the register changed."""

    def __init__(self, store: StoreWorker, contractors: UnitContractors) -> None:
        self._store = store
        self.contractors = contractors
        self._version: int | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Make the map current: a no-op (one indexed read) when no register import came
        since the last read. Raises the store's error."""
        version = await self._store.call(lambda s: s.register_version())
        if version == self._version:
            return
        async with self._lock:
            if version == self._version:
                return
            # The version is read before the map: a change in between is seen next time.
            pairs = await self._store.call(lambda s: s.unit_contractors())
            self.contractors.update(pairs)
            self._version = version

    async def watch(self, interval_s: float = REGISTER_POLL_S) -> None:
        """`refresh` every ``interval_s`` until cancelled (the open live streams' bound)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # the store may be briefly unreachable
                log.warning("refreshing the unit -> contractor map failed: %s", exc)

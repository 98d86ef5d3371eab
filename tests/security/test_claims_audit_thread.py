"""The claims audit (``POST /api/reports/claims``) never holds the store thread while it
computes: each of its reads is one store call, and ingest's writes go in between (issue
14, item 4: ingest never waits on web work)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

from fleet.reports.claims import Claim, audit_claim
from fleet.store.base import HeartbeatOp, UnitRow
from fleet.store.sqlite import SqliteStore
from fleet.store.worker import StoreWorker
from fleet.web.lifecycle import StoreThreadReads
from protos.liftwatch.v1 import records_pb2
from tests.security.conftest import District, with_timeout


class PausedReads(StoreThreadReads):
    """Stops the audit between two reads (after its events, before its unit) until told."""

    def __init__(self, store: StoreWorker) -> None:
        super().__init__(store)
        self.paused = threading.Event()
        self.resume = threading.Event()

    def get_unit(self, unit_id: str) -> UnitRow | None:
        self.paused.set()
        self.resume.wait(timeout=30)
        return super().get_unit(unit_id)


def test_ingest_writes_while_a_claims_audit_is_computing(district: District) -> None:
    async def scenario() -> None:
        store = await StoreWorker.open(lambda: SqliteStore.open(str(district.db)))
        try:
            reads = PausedReads(store)
            claim = Claim(2, "U1", dt.datetime.now(dt.UTC), records_pb2.EVENT_TYPE_ENTRAPMENT)
            window, gap = dt.timedelta(minutes=30), dt.timedelta(seconds=60)
            audit = asyncio.create_task(asyncio.to_thread(audit_claim, reads, claim, window, gap))
            assert await asyncio.to_thread(reads.paused.wait, 30)
            # Mid-audit: the store thread is free for ingest (a whole-audit store call
            # would hold it here, and this write would wait for the audit).
            results = await with_timeout(
                store.write([HeartbeatOp("edge-1")], dt.datetime.now(dt.UTC)), 10
            )
            assert not audit.done() and len(results) == 1
            reads.resume.set()
            verdict = await with_timeout(audit)
            assert verdict.verdict == "cannot_tell" and verdict.claim is claim
        finally:
            reads.resume.set()
            await store.close()

    asyncio.run(scenario())

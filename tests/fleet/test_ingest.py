"""Group commit across streams, and its isolation of a bad write."""

from __future__ import annotations

import asyncio

import pytest

from fleet.ingest.committer import CommitterStoppedError, running_committer
from fleet.metrics import GatewayMetrics
from fleet.store.base import BatchOp, ControllerIdentity, HeartbeatOp, HelloOp, UnitClaim
from fleet.store.open import open_store
from fleet.store.worker import StoreWorker
from tests.fleet.factories import T0, record


def test_writes_of_many_streams_share_transactions_and_a_bad_one_fails_alone(
    store_target: str,
) -> None:
    async def scenario() -> None:
        store = await StoreWorker.open(lambda: open_store(store_target))
        metrics = GatewayMetrics()
        try:
            async with running_committer(store, lambda: T0, metrics, 1000) as committer:
                hellos = [
                    committer.submit(
                        HelloOp(f"a{i}", "0.1.0", (UnitClaim(f"U{i}", ControllerIdentity()),))
                    )
                    for i in range(50)
                ]
                welcomes = await asyncio.gather(*hellos)
                assert {w.committed_seq for w in welcomes if w} == {0}
                batches = [
                    committer.submit(BatchOp(f"a{i}", (record(1, f"U{i}"), record(2, f"U{i}"))))
                    for i in range(50)
                ]
                # Bypasses the gateway's checks: a seq the store cannot hold.
                bad = committer.submit(BatchOp("a0", (record(2**64 - 1, "U0"),)))
                beats = [committer.submit(HeartbeatOp(f"a{i}")) for i in range(50)]
                results = await asyncio.gather(*batches, bad, *beats, return_exceptions=True)
        finally:
            await store.close()
        acks = results[:50]
        assert all(not isinstance(r, BaseException) and r and r.committed_seq == 2 for r in acks)
        assert isinstance(results[50], Exception)
        assert results[51:] == [None] * 50
        transactions = metrics.value("liftwatch_fleet_group_writes_count")
        assert transactions < 100  # 150 writes after the hellos, far fewer commits
        assert metrics.value("liftwatch_fleet_group_retries_total") >= 1

    asyncio.run(scenario())


def test_a_stopped_committer_refuses_writes() -> None:
    async def scenario() -> None:
        store = await StoreWorker.open(lambda: open_store(":memory:"))
        async with running_committer(store, lambda: T0, GatewayMetrics(), 10) as committer:
            pass
        with pytest.raises(CommitterStoppedError):
            await committer.submit(HeartbeatOp("a1"))
        await store.close()

    asyncio.run(scenario())

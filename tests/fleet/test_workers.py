"""``serve --workers 2`` as real processes: both workers take agent streams on the one
port and commit to the one store (a SQLite file written by two processes, or PostgreSQL);
SIGTERM stops them all cleanly; a second fleet cannot join the port; a dead worker stops
the set."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import sqlite3
import urllib.request
from pathlib import Path

import grpc
import psycopg
import pytest

from hil_tests.processes import ServiceError, start
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2
from tests.fleet.factories import record
from tests.fleet.test_two_instances import CONNECTED, read_live
from tests.support import eventually

pytestmark = pytest.mark.e2e

AGENTS = 24  # connections the kernel spreads over the workers: all on one has odds 2**-23
BATCHES = 3
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # one connection per agent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by the parent) counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


async def _agent(address: str, index: int) -> int:
    """One agent on its own connection: Hello, BATCHES batches; the last seq acked."""
    agent_id, unit = f"w-agent-{index}", f"w-unit-{index}"
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(
            gateway_pb2.AgentFrame(
                hello=gateway_pb2.Hello(
                    agent_id=agent_id, units=[gateway_pb2.UnitDescriptor(unit_id=unit)]
                )
            )
        )
        welcome = await call.read()
        assert welcome.WhichOneof("frame") == "welcome", welcome
        acked = 0
        for n in range(BATCHES):
            seqs = (2 * n + 1, 2 * n + 2)
            # Timed now: the factories' default time is months old, and serve's own
            # retention run (at start, on whichever worker holds its lease) folds and
            # deletes records older than the window once they are committed, which
            # raced with the count of stored records below.
            now = dt.datetime.now(dt.UTC)
            batch = gateway_pb2.RecordBatch(records=[record(s, unit, time=now) for s in seqs])
            await call.write(gateway_pb2.AgentFrame(batch=batch))
            reply = await call.read()
            assert reply.WhichOneof("frame") == "ack", reply
            acked = reply.ack.up_to_seq
        await call.done_writing()
        return acked


def _stored(target: str) -> int:
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as conn:
            row = conn.execute("SELECT count(DISTINCT (agent_id, seq)) FROM records").fetchone()
    else:
        with contextlib.closing(sqlite3.connect(target)) as conn:
            row = conn.execute("SELECT count(*) FROM records").fetchone()
    return int(row[0]) if row else 0


def test_two_workers_share_port_and_store_and_stop_cleanly(
    store_target: str, tmp_path: Path
) -> None:
    async def scenario() -> None:
        fleet = await start(
            "fleet",
            "fleet",
            ["serve", "--db", store_target, "--listen", "127.0.0.1:0", "--http", "", "--workers=2"],
            tmp_path,
        )
        try:
            pids = [int(p) for p in fleet.ready["workers"]]
            assert len(pids) == 2 and all(_alive(p) for p in pids)
            acks = await asyncio.wait_for(
                asyncio.gather(*(_agent(fleet.ready["grpc"], i) for i in range(AGENTS))), 60
            )
            assert acks == [2 * BATCHES] * AGENTS
            assert all(_alive(p) for p in pids), fleet.log_tail()
        finally:
            status = await fleet.stop()  # SIGTERM to the parent
        log = fleet.log_path.read_text(errors="replace")
        assert status == 0, log[-3000:]
        for index in (0, 1):
            # Each worker logs the agents it served: both took a share of the streams.
            assert f"[worker {index}] fleet.ingest.gateway: agent w-agent-" in log, log[-3000:]
            assert f"[worker {index}] fleet.serve.server: stopped" in log, log[-3000:]
        assert not any(_alive(p) for p in pids)
        assert _stored(store_target) == AGENTS * BATCHES * 2

    asyncio.run(scenario())


def test_a_second_fleet_cannot_join_the_workers_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = str(tmp_path / "fleet.db")
        first = await start(
            "first",
            "fleet",
            ["serve", "--db", db, "--listen", "127.0.0.1:0", "--http", "", "--workers", "2"],
            tmp_path,
        )
        try:
            port = str(first.ready["grpc"])
            for name, workers in (("second-single", "1"), ("second-workers", "2")):
                with pytest.raises(ServiceError, match="exited with status 1"):
                    await start(
                        name,
                        "fleet",
                        ["serve", "--db", db, "--listen", port, "--http", "", "--workers", workers],
                        tmp_path,
                    )
        finally:
            assert await first.stop() == 0, first.log_tail()

    asyncio.run(scenario())


def test_a_dead_worker_stops_the_set(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = str(tmp_path / "fleet.db")
        fleet = await start(
            "fleet",
            "fleet",
            ["serve", "--db", db, "--listen", "127.0.0.1:0", "--http", "", "--workers", "2"],
            tmp_path,
        )
        try:
            pids = [int(p) for p in fleet.ready["workers"]]
            os.kill(pids[1], signal.SIGKILL)
            status = await asyncio.wait_for(fleet.process.wait(), 45)
        finally:
            await fleet.stop()
        assert status == 1, fleet.log_tail()
        assert "worker 1 (exit -9) died" in fleet.log_tail()
        assert not _alive(pids[0])

    asyncio.run(scenario())


def _committed_on(metrics_address: str) -> float:
    """liftwatch_fleet_records_committed_total as the worker at ``metrics_address`` says."""
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for line in text.splitlines():
        if line.startswith("liftwatch_fleet_records_committed_total "):
            return float(line.split()[1])
    raise AssertionError(f"no records counter on {metrics_address}")


def test_each_worker_serves_its_metrics_and_their_sum_is_the_fleets(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text('[http]\nmetrics_listen = "127.0.0.1:0"\n', encoding="utf-8")
    target = str(tmp_path / "fleet.db")

    async def scenario() -> None:
        fleet = await start(
            "fleet",
            "fleet",
            [
                *("serve", "--config", str(config), "--db", target),
                *("--listen", "127.0.0.1:0", "--http", "", "--workers=2"),
            ],
            tmp_path,
        )
        try:
            addresses = [str(a) for a in fleet.ready["metrics_workers"]]
            assert len(set(addresses)) == 2, fleet.ready
            await asyncio.wait_for(
                asyncio.gather(*(_agent(fleet.ready["grpc"], i) for i in range(AGENTS))), 60
            )
            counts = [await asyncio.to_thread(_committed_on, a) for a in addresses]
        finally:
            await fleet.stop()
        # The kernel spread the agents over both: each counted its share, the sum is all.
        assert all(c > 0 for c in counts), counts
        assert sum(counts) == AGENTS * BATCHES * 2  # every record acked, counted once

    asyncio.run(scenario())


async def _raise_event(address: str, index: int) -> None:
    """Agent ``index`` on its own connection raises one event (no alarm type)."""
    agent_id, unit = f"l-agent-{index}", f"l-unit-{index}"
    async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        hello = gateway_pb2.Hello(
            agent_id=agent_id, units=[gateway_pb2.UnitDescriptor(unit_id=unit)]
        )
        await call.write(gateway_pb2.AgentFrame(hello=hello))
        assert (await call.read()).WhichOneof("frame") == "welcome"
        event = record(1, unit, event=records_pb2.EVENT_TYPE_DOOR_HELD_OPEN, event_id=f"ev-{index}")
        await call.write(gateway_pb2.AgentFrame(batch=gateway_pb2.RecordBatch(records=[event])))
        assert (await call.read()).ack.up_to_seq == 1
        await call.done_writing()


def test_worker_0s_pages_see_what_every_worker_ingests_on_sqlite(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[http]\nauth = false\n", encoding="utf-8")

    async def scenario() -> None:
        fleet = await start(
            "fleet",
            "fleet",
            [
                *("serve", "--config", str(config), "--db", str(tmp_path / "fleet.db")),
                *("--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--workers=2"),
            ],
            tmp_path,
        )
        page: list[str] = []
        reading = asyncio.create_task(read_live(str(fleet.ready["http"]), page))
        try:
            await eventually(lambda: page, lambda p: CONNECTED in p, "the page subscribed")
            await asyncio.wait_for(
                asyncio.gather(*(_raise_event(fleet.ready["grpc"], i) for i in range(AGENTS))),
                60,
            )
            # The kernel spread the agents over both workers; only worker 0 serves pages.
            await eventually(
                lambda: page,
                lambda p: all(any(f'"ev-{i}"' in x for x in p) for i in range(AGENTS)),
                "every agent's event on worker 0's page",
                context=fleet.log_tail,
            )
        finally:
            reading.cancel()
            await fleet.stop()
        log = fleet.log_path.read_text(errors="replace")
        assert "[worker 1] fleet.ingest.gateway: agent l-agent-" in log, log[-3000:]

    asyncio.run(scenario())

"""Chaos with real processes: the fleet ends with exactly what the agent produced.

(a) the agent is killed with SIGKILL at random moments while cars run and faults are
injected; (b) the fleet is stopped for a long outage (LIFTWATCH_CHAOS_OUTAGE_S, default
120 s) and restarted; (c) the network path is cut and restored repeatedly through a
proxy the test controls. Each ends with the same check, by seq: every record the agent
numbered is at the fleet or still in the agent's outbox (nothing lost), and no event
phase is stored twice (nothing duplicated).
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
from pathlib import Path

import pytest

from agent.outbox import Outbox
from hil_tests.system import RunningSystem, SystemSpec, running_system

pytestmark = pytest.mark.e2e

UNITS = tuple(f"CHAOS-{car}" for car in range(1, 5))
SPEC = SystemSpec(unit_ids=UNITS, register_csv=None, detect={"entrapment_between_floors_s": 3.0})
FAULTS = ("entrapment", "door_close_failure", "door_open_failure")
AGENT_ID = "rig-agent-1"
DRAIN_DEADLINE_S = 120.0


def prepare_outbox(work_dir: Path) -> None:
    """Create the agent's outbox numbering from 1, so any lost seq shows as a gap."""
    Outbox(work_dir / "agent-data" / "outbox.db", wall=lambda: 0.0).close()


def outbox_state(path: Path) -> tuple[int, set[int]]:
    """(last seq handed out, seqs still waiting) of an outbox, read from its file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (last,) = db.execute("SELECT last_seq FROM sequence").fetchone()
        waiting = {int(s) for (s,) in db.execute("SELECT seq FROM records")}
    return int(last), waiting


def fleet_state(path: Path) -> tuple[set[int], list[tuple[str, int, int]]]:
    """(seqs the fleet holds for the agent, event phases stored more than once)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        seqs = {
            int(s) for (s,) in db.execute("SELECT seq FROM records WHERE agent_id = ?", (AGENT_ID,))
        }
        doubled = db.execute(
            "SELECT event_id, phase, count(*) FROM events GROUP BY event_id, phase "
            "HAVING count(*) > 1"
        ).fetchall()
    return seqs, doubled


async def drain_and_stop(system: RunningSystem) -> None:
    """Wait until the outbox is empty (everything acked), then stop the agent cleanly.

    First the running agent must have delivered something new: that proves it is up (and
    past installing its signal handlers) rather than still starting.
    """
    seqs, _ = fleet_state(system.fleet_db)
    await wait_records(system, len(seqs) + 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DRAIN_DEADLINE_S
    while loop.time() < deadline:
        _, waiting = outbox_state(system.agent_outbox)
        if not waiting:
            break
        await asyncio.sleep(0.2)
    else:
        pytest.fail(f"outbox not drained in {DRAIN_DEADLINE_S} s\n{system.agent.log_tail()}")
    assert await system.agent.stop() == 0, system.agent.log_tail()


def assert_nothing_lost_nothing_doubled(system: RunningSystem) -> int:
    last, waiting = outbox_state(system.agent_outbox)
    at_fleet, doubled = fleet_state(system.fleet_db)
    produced = set(range(1, last + 1))
    assert at_fleet <= produced, f"fleet holds seqs the agent never made: {at_fleet - produced}"
    lost = produced - at_fleet - waiting
    assert not lost, f"{len(lost)} records lost, e.g. seqs {sorted(lost)[:10]}"
    assert not doubled, f"event phases stored twice: {doubled[:5]}"
    assert last > 50, "too few records to prove anything"
    return last


async def wait_records(system: RunningSystem, count: int) -> None:
    """Wait until the fleet holds at least ``count`` records of the agent."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        seqs, _ = fleet_state(system.fleet_db)
        if len(seqs) >= count:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"fleet never reached {count} records\n{system.agent.log_tail()}")


def test_agent_killed_twenty_times_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(20)

    async def scenario() -> int:
        prepare_outbox(tmp_path)
        async with running_system(SPEC, tmp_path) as system:
            await wait_records(system, 10)
            for kill in range(20):
                if kill % 3 == 0:
                    await system.inject(rng.choice(UNITS), rng.choice(FAULTS))
                await asyncio.sleep(rng.uniform(0.2, 2.5))  # a random moment to kill at
                await system.kill_agent()
                await system.start_agent()
            for unit in UNITS:
                for fault in FAULTS:
                    await system.clear(unit, fault)
            await wait_records(system, 50)
            await drain_and_stop(system)
            return assert_nothing_lost_nothing_doubled(system)

    asyncio.run(scenario())


def test_a_long_fleet_outage_loses_nothing(tmp_path: Path) -> None:
    outage_s = float(os.environ.get("LIFTWATCH_CHAOS_OUTAGE_S", "120"))

    async def scenario() -> None:
        prepare_outbox(tmp_path)
        async with running_system(SPEC, tmp_path) as system:
            await wait_records(system, 10)
            await system.stop_fleet()
            await system.inject(UNITS[1], "entrapment")
            await asyncio.sleep(outage_s)  # the outage itself: its length is the test
            _, waiting = outbox_state(system.agent_outbox)
            assert len(waiting) > 10, "the agent should have buffered during the outage"
            await system.start_fleet()
            await system.clear(UNITS[1], "entrapment")
            await drain_and_stop(system)
            assert_nothing_lost_nothing_doubled(system)

    asyncio.run(scenario())


def test_cutting_the_network_repeatedly_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(7)

    async def scenario() -> None:
        prepare_outbox(tmp_path)
        async with running_system(SPEC, tmp_path, proxy_fleet=True) as system:
            assert system.proxy is not None
            await wait_records(system, 10)
            for cut in range(10):
                if cut % 4 == 0:
                    await system.inject(rng.choice(UNITS), rng.choice(FAULTS))
                await asyncio.sleep(rng.uniform(0.3, 2.0))  # link up for a while
                await system.proxy.cut()
                await asyncio.sleep(rng.uniform(0.3, 3.0))  # link down for a while
                await system.proxy.restore()
            for unit in UNITS:
                for fault in FAULTS:
                    await system.clear(unit, fault)
            await drain_and_stop(system)
            assert_nothing_lost_nothing_doubled(system)
            assert system.proxy.cut_count >= 10

    asyncio.run(scenario())

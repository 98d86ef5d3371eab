"""A full disk never costs an event (issue 14, 'disk_full_keeps_events'), with real
processes: the agent's data directory is a small tmpfs. With the fleet away (so nothing is
acked) the disk is filled to the last byte, an ENTRAPMENT is injected, and the agent keeps
it in its outbox by taking the reserve. Then the agent is killed with SIGKILL, the space
freed, fleet and agent started again: the fleet stores the ENTRAPMENT exactly once.

Mounting needs root (CI runs as root); elsewhere this skips, and under
LIFTWATCH_REQUIRE_SERVICES=1 it fails instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from hil_tests.system import SystemSpec, running_system
from protos.liftwatch.v1 import records_pb2
from tests.agent.test_outbox_disk_full import fill, mounted_tmpfs
from tests.support import eventually, log_tails

pytestmark = pytest.mark.e2e

UNIT = "DISKFULL-1"
SPEC = SystemSpec(unit_ids=(UNIT,), register_csv=None, detect={"entrapment_between_floors_s": 2.0})
# Room for the outbox of one car and its 8 MiB reserve (put in place when twice its size
# is free), and little more.
DISK_BYTES = 32 * 1024 * 1024


def outbox_entrapments(path: Path) -> list[int]:
    """Phases of the ENTRAPMENT events waiting in the outbox file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        payloads = [p for (p,) in db.execute("SELECT payload FROM records WHERE kind = 'event'")]
    events = [records_pb2.Record.FromString(p).event for p in payloads]
    return [e.phase for e in events if e.type == records_pb2.EVENT_TYPE_ENTRAPMENT]


def fleet_entrapments(path: Path) -> list[tuple[str, int]]:
    """(event id, phase) of every ENTRAPMENT row the fleet stored."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT event_id, phase FROM events WHERE type = ?",
            (records_pb2.EVENT_TYPE_ENTRAPMENT,),
        ).fetchall()
    return [(str(event_id), int(phase)) for event_id, phase in rows]


async def scenario(work_dir: Path) -> None:
    async with running_system(SPEC, work_dir) as system:

        def agent_log() -> str:
            return log_tails([system.agent])

        await eventually(system.fleet_db.exists, what="the fleet's database", context=agent_log)
        reserve = system.agent_outbox.with_name("outbox.db.reserve")
        await eventually(reserve.exists, what="the outbox reserve", context=agent_log)
        await system.stop_fleet()  # nothing is acked from here on
        filler = fill(system.agent_outbox.parent)
        await system.inject(UNIT, "entrapment")
        raised = records_pb2.PHASE_RAISED
        await eventually(
            lambda: raised in outbox_entrapments(system.agent_outbox),
            what="the ENTRAPMENT in the outbox of a full disk",
            context=agent_log,
        )
        assert not reserve.exists()  # the reserve made the room
        await system.kill_agent()
        filler.unlink()
        await system.start_fleet()
        await system.start_agent()
        await eventually(
            lambda: raised in [phase for _, phase in fleet_entrapments(system.fleet_db)],
            what="the ENTRAPMENT at the fleet",
            context=agent_log,
        )
        await eventually(
            lambda: raised not in outbox_entrapments(system.agent_outbox),
            what="the outbox drained of it",
            context=agent_log,
        )
        stored = [entry for entry in fleet_entrapments(system.fleet_db) if entry[1] == raised]
        assert len(stored) == 1, f"ENTRAPMENT RAISED stored {len(stored)} times: {stored}"


def test_a_full_disk_and_kill_9_keep_the_entrapment_exactly_once(tmp_path: Path) -> None:
    work_dir = tmp_path / "system"
    with mounted_tmpfs(work_dir / "agent-data", DISK_BYTES):
        asyncio.run(scenario(work_dir))

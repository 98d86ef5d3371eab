"""Scale-out with real processes: two fleets on one PostgreSQL, agents on either; one
fleet is killed (SIGKILL) and its agents fail over to the other. Nothing may be lost or
duplicated: every agent's seqs in the database are gap-free up to what it still holds."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from hil_tests.processes import Service, start
from tests.support import eventually, log_tails

pytestmark = pytest.mark.e2e

AGENTS = {"agent-a": "A", "agent-b": "B"}  # agent id -> the fleet it tries first


def _agent_config(agent_id: str, endpoints: list[str], modbus: str, data_dir: Path) -> str:
    lines = [
        "[agent]",
        f"id = {json.dumps(agent_id)}",
        f"data_dir = {json.dumps(str(data_dir))}",
        "state_interval_s = 0.5",
        'metrics_listen = ""',
        "",
        "[fleet]",
        f"endpoints = {json.dumps(endpoints)}",
        "insecure = true",
        "",
        "[[bus]]",
        'name = "group-1"',
        f"url = {json.dumps(modbus)}",
        "poll_hz = 5.0",
        "timeout_s = 0.5",
    ]
    for car in range(1, 5):
        lines += [
            "",
            "[[unit]]",
            f'id = "{agent_id}-car{car}"',
            'bus = "group-1"',
            f"slave = {car}",
            'profile = "reference"',
        ]
    return "\n".join(lines) + "\n"


def _committed(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT agent_id, committed_seq FROM agents").fetchall()
    return {str(a): int(s) for a, s in rows}


def _seqs(url: str, agent_id: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT seq FROM records WHERE agent_id = %s ORDER BY seq", (agent_id,)
        ).fetchall()
    return [int(r[0]) for r in rows]


async def scenario(url: str, work: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        fleets: dict[str, Service] = {}
        for name in ("A", "B"):
            fleet = await start(
                f"fleet-{name}",
                "fleet",
                ["serve", "--db", url, "--listen", "127.0.0.1:0", "--http", ""],
                work,
            )
            stack.push_async_callback(fleet.stop)
            fleets[name] = fleet
        emulator = await start(
            "emulator",
            "hil_tests",
            ["emulate", "--modbus", "tcp://127.0.0.1:0", "--cars", "4", "--control", "127.0.0.1:0"],
            work,
        )
        stack.push_async_callback(emulator.stop)
        agents: dict[str, Service] = {}
        for agent_id, first in AGENTS.items():
            order = [first, "B" if first == "A" else "A"]
            config = work / f"{agent_id}.toml"
            config.write_text(
                _agent_config(
                    agent_id,
                    [str(fleets[n].ready["grpc"]) for n in order],
                    str(emulator.ready["modbus"]),
                    work / agent_id,
                ),
                encoding="utf-8",
            )
            agent = await start(
                agent_id, "agent", ["run", "--config", str(config)], work, wait_ready=False
            )
            stack.push_async_callback(agent.stop)
            agents[agent_id] = agent
        services = [*fleets.values(), emulator, *agents.values()]

        before = await eventually(
            lambda: asyncio.to_thread(_committed, url),
            lambda c: all(c.get(a, 0) > 0 for a in AGENTS),
            "both agents committing",
            interval_s=0.2,
            context=lambda: log_tails(services),
        )
        fleets["A"].process.kill()  # no goodbye: its agent must notice and fail over
        await fleets["A"].process.wait()
        await eventually(
            lambda: asyncio.to_thread(_committed, url),
            lambda c: all(c[a] > before[a] + 10 for a in AGENTS),
            "both agents committing through fleet B after fleet A died",
            interval_s=0.2,
            context=lambda: log_tails(services),
        )
        for agent in agents.values():
            assert await agent.stop() == 0, agent.log_tail()
        assert fleets["B"].process.returncode is None, fleets["B"].log_tail()

    for agent_id in AGENTS:
        stored = _seqs(url, agent_id)
        with contextlib.closing(sqlite3.connect(work / agent_id / "outbox.db")) as outbox:
            held = [int(r[0]) for r in outbox.execute("SELECT seq FROM records ORDER BY seq")]
        assert len(stored) == len(set(stored))  # the primary key would refuse, but check
        every = sorted(set(stored) | set(held))
        gaps = [(a, b) for a, b in itertools.pairwise(every) if b != a + 1]
        assert gaps == [], f"{agent_id}: records lost between {gaps}"
        assert stored == list(range(stored[0], stored[-1] + 1)), f"{agent_id}: gap in the fleet"
    with psycopg.connect(url) as conn:
        (dupes,) = conn.execute(
            "SELECT count(*) - count(DISTINCT (agent_id, seq)) FROM records"
        ).fetchone() or (0,)
    assert dupes == 0


def test_two_fleets_one_postgres_failover_loses_and_duplicates_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    asyncio.run(scenario(pg_url, tmp_path))

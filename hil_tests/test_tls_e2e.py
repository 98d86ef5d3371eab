"""End to end over mutual TLS: fleet, emulator and agent as real processes, with
certificates from `liftwatch-fleet pki`, the agent admitted for its registered units only."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hil_tests.processes import run_cli, start
from hil_tests.system import SystemSpec, agent_config_text, emulator_args, fleet_config_text
from tests.support import eventually

pytestmark = pytest.mark.e2e

AGENT_ID = "rig-agent-1"  # what `agent_config_text` names the agent
UNITS = ("TLS-CAR-1", "TLS-CAR-2")
PLAINTEXT_LINE = "insecure = true  # the rig runs on loopback only"


def agent_rejects(metrics_at: str, code: str) -> float:
    """The agent's ``liftwatch_agent_fleet_rejects_total{code}`` (0 before the first)."""
    with urllib.request.urlopen(f"http://{metrics_at}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    wanted = f'liftwatch_agent_fleet_rejects_total{{code="{code}"}} '
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line.removeprefix(wanted))
    return 0.0


async def plaintext_health(address: str) -> grpc.StatusCode:
    """What a client without TLS gets from the fleet's port."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def scenario(work_dir: Path) -> None:
    pki = work_dir / "pki"
    db = work_dir / "fleet.db"
    for args in (
        ["init", str(pki)],
        ["server", str(pki), "--host", "127.0.0.1", "--host", "localhost"],
        ["agent", str(pki), AGENT_ID],
    ):
        await run_cli("fleet", ["pki", *args, "--json"])
    # Only the first car is registered: the agent's Hello (both cars) is refused until
    # the operator registers the second.
    await run_cli(
        "fleet", ["agents", "add", AGENT_ID, "--unit", UNITS[0], "--db", str(db), "--json"]
    )

    spec = SystemSpec(unit_ids=UNITS, register_csv=None)
    fleet_toml = work_dir / "fleet.toml"
    fleet_toml.write_text(
        fleet_config_text(spec, work_dir)
        + f'\n[tls]\ncert = "{pki}/server.pem"\nkey = "{pki}/server.key"\n'
        f'client_ca = "{pki}/ca.pem"\n',
        encoding="utf-8",
    )
    async with contextlib.AsyncExitStack() as stack:
        fleet = await start("fleet", "fleet", ["serve", "--config", str(fleet_toml)], work_dir)
        stack.push_async_callback(fleet.stop)
        address = str(fleet.ready["grpc"])
        assert await plaintext_health(address) == grpc.StatusCode.UNAVAILABLE

        emulator = await start("emulator", "hil_tests", emulator_args(spec, work_dir), work_dir)
        stack.push_async_callback(emulator.stop)
        text = agent_config_text(spec, str(emulator.ready["modbus"]), address, work_dir / "data")
        assert PLAINTEXT_LINE in text
        agent_toml = work_dir / "agent.toml"
        agent_toml.write_text(
            text.replace(
                PLAINTEXT_LINE,
                f'ca = "{pki}/ca.pem"\ncert = "{pki}/agents/{AGENT_ID}.pem"\n'
                f'key = "{pki}/agents/{AGENT_ID}.key"',
            ),
            encoding="utf-8",
        )
        agent = await start("agent", "agent", ["run", "--config", str(agent_toml)], work_dir)
        stack.push_async_callback(agent.stop)  # the agent stops first
        services = (fleet, emulator, agent)

        metrics_at = str(agent.ready["metrics"])
        await eventually(
            lambda: asyncio.to_thread(agent_rejects, metrics_at, "UNIT_NOT_PERMITTED"),
            lambda count: count >= 1,
            "the fleet refusing the unregistered second car",
            watching=services,
            interval_s=0.2,
        )
        await run_cli(
            "fleet", ["agents", "add", AGENT_ID, "--unit", UNITS[1], "--db", str(db), "--json"]
        )

        async def units() -> list[dict[str, Any]]:
            listed = await run_cli("fleet", ["units", "--monitored", "--db", str(db), "--json"])
            return [u for u in listed["units"] if u["unit_id"] in UNITS]

        listed = await eventually(
            units,
            lambda us: len(us) == 2 and all(u["status"] == "online" and u["firmware"] for u in us),
            "both cars online with firmware, over mutual TLS",
            watching=services,
            interval_s=0.2,
        )
        assert {u["agent_id"] for u in listed} == {AGENT_ID}
        assert "mutual TLS" in fleet.log_tail(200)

    for service in services:
        assert service.process.returncode == 0, f"{service.name}:\n{service.log_tail()}"


def test_records_arrive_over_mutual_tls_for_registered_units(tmp_path: Path) -> None:
    asyncio.run(scenario(tmp_path))

"""How fast `agents remove` and `agents revoke` cut off an agent that is streaming.

Starts a real fleet manager process under mutual TLS on loopback (SQLite in a temporary
directory, certificates from `fleet.auth.pki`), opens an agent's stream, runs the real CLI
command in another process, and times from the command's exit until the fleet's Reject
reaches the agent (the fleet polls for access changes every
`fleet.ingest.access.ACCESS_POLL_S`). Prints one JSON object::

    {"runs", "poll_s", "remove_s": {"p50", "max"}, "revoke_s": {"p50", "max"}}

Target: max under about a second (the poll plus one store read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from fleet.auth.pki import init_ca, issue_agent, issue_server
from fleet.ingest.access import ACCESS_POLL_S
from fleet.store.sqlite import SqliteStore
from hil_tests.processes import start
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2


def _hello(agent_id: str, unit: str) -> gateway_pb2.AgentFrame:
    return gateway_pb2.AgentFrame(
        hello=gateway_pb2.Hello(
            agent_id=agent_id,
            agent_version="bench",
            units=[
                gateway_pb2.UnitDescriptor(
                    unit_id=unit, controller=records_pb2.ControllerInfo(model="RC-3000")
                )
            ],
        )
    )


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fleet", *args], check=True, capture_output=True)


async def _cut_off(address: str, pki: Path, agent_id: str, command: list[str]) -> float:
    """Seconds from ``command``'s exit until the fleet ends ``agent_id``'s open stream."""
    agents = pki / "agents"
    credentials = grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (agents / f"{agent_id}.key").read_bytes(),
        (agents / f"{agent_id}.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(_hello(agent_id, f"U-{agent_id}"))
        welcome = await call.read()
        assert welcome.WhichOneof("frame") == "welcome", welcome
        await asyncio.to_thread(_cli, *command)
        done = time.perf_counter()
        frame = await asyncio.wait_for(call.read(), 30)
        ended = time.perf_counter() - done
        assert frame.WhichOneof("frame") == "reject", frame
        return ended


def _summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}


async def main(runs: int) -> dict[str, object]:
    """Measure ``runs`` removals and ``runs`` revocations; the report."""
    with tempfile.TemporaryDirectory(prefix="lw-cutoff-") as tmp:
        work = Path(tmp)
        pki = work / "pki"
        init_ca(pki)
        issue_server(pki, ["127.0.0.1"])
        db = work / "fleet.db"
        store = SqliteStore.open(str(db))
        agents = [f"edge-{i}" for i in range(2 * runs)]
        for agent_id in agents:
            issue_agent(pki, agent_id)
            store.add_agent_units(agent_id, [f"U-{agent_id}"])
        store.close()
        config = work / "fleet.toml"
        config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n[http]\nlisten = ""\n[query]\nlisten = ""\n'
            f'[store]\npath = "{db}"\n[tls]\ncert = "pki/server.pem"\nkey = "pki/server.key"\n'
            'client_ca = "pki/ca.pem"\n'
        )
        fleet = await start("fleet", "fleet", ["serve", "--config", str(config)], work)
        try:
            address = str(fleet.ready["grpc"])
            removal = [
                await _cut_off(address, pki, a, ["agents", "remove", a, "--db", str(db)])
                for a in agents[:runs]
            ]
            revocation = [
                await _cut_off(address, pki, a, ["agents", "revoke", a, "--db", str(db)])
                for a in agents[runs:]
            ]
        finally:
            await fleet.stop()
    return {
        "runs": runs,
        "poll_s": ACCESS_POLL_S,
        "remove_s": _summary(removal),
        "revoke_s": _summary(revocation),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="removals and revocations each")
    parser.add_argument("--json", action="store_true", help="accepted; the output is JSON")
    arguments = parser.parse_args()
    print(json.dumps(asyncio.run(main(arguments.runs))))

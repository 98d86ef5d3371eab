"""Two fleet instances on one PostgreSQL behave as one for alarm dispatch (issue 18,
item 3): the instance holding the dispatch role sends an entrapment's first step to the
rescue webhook; it is killed (SIGKILL, no goodbye) before the escalation is due; the
other instance takes the role when the lease runs out and sends the escalation. A real
local HTTP receiver gets exactly one request per alarm step."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import grpc
import pytest

from fleet.serve.roles import LEASE_S
from hil_tests.processes import Service, start
from protos.liftwatch.v1 import gateway_pb2_grpc, records_pb2
from tests.fleet.factories import batch, hello, record
from tests.support import eventually, log_tails

pytestmark = pytest.mark.e2e

ESCALATE_AFTER_S = 6


class Receiver:
    """A webhook receiver on loopback: keeps the path of every POST, answers 200."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(
                (
                    int(x.split(b":", 1)[1])
                    for x in lines
                    if x.lower().startswith(b"content-length:")
                ),
                0,
            )
            await reader.readexactly(length)
            self.paths.append(lines[0].split()[1].decode())
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


def _config(port: int) -> str:
    return "\n".join(
        [
            "[alarms]",
            'types = ["ENTRAPMENT"]',
            'targets = ["rescue"]',
            'escalation_targets = ["duty"]',
            f"escalate_after_s = {ESCALATE_AFTER_S}",
            "repeat_s = 0",  # one send per step: a second one would be a duplicate
            "",
            "[alarms.target.rescue]",
            'kind = "webhook"',
            f'url = "http://127.0.0.1:{port}/rescue"',
            "",
            "[alarms.target.duty]",
            'kind = "webhook"',
            f'url = "http://127.0.0.1:{port}/duty"',
            "",
        ]
    )


async def _raise_entrapment(address: str) -> None:
    now = dt.datetime.now(dt.UTC)
    async with grpc.aio.insecure_channel(address) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(hello("agent-x", "U1"))
        assert (await call.read()).WhichOneof("frame") == "welcome"
        event = record(
            1, "U1", time=now, event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="trapped-1"
        )
        await call.write(batch(event))
        assert (await call.read()).ack.up_to_seq == 1
        await call.done_writing()


async def scenario(url: str, work: Path) -> None:
    receiver = Receiver()
    port = await receiver.start()
    config = work / "fleet.toml"
    config.write_text(_config(port), encoding="utf-8")
    async with contextlib.AsyncExitStack() as stack:
        fleets: dict[str, Service] = {}
        for name in ("A", "B"):  # A first: it takes the roles, B finds them held
            fleet = await start(
                f"fleet-{name}",
                "fleet",
                [
                    "serve",
                    "--config",
                    str(config),
                    "--db",
                    url,
                    "--listen",
                    "127.0.0.1:0",
                    "--http",
                    "",
                    "--query",
                    "",
                ],
                work,
            )
            stack.push_async_callback(fleet.stop)
            fleets[name] = fleet
        services = list(fleets.values())
        # Ingested through B, dispatched by A: the store is the one queue.
        await _raise_entrapment(str(fleets["B"].ready["grpc"]))
        await eventually(
            lambda: receiver.paths,
            lambda p: "/rescue" in p,
            "the rescue step sent (by A)",
            context=lambda: log_tails(services),
        )
        fleets["A"].process.kill()  # mid-escalation: the duty step is not due yet
        await fleets["A"].process.wait()
        await eventually(
            lambda: receiver.paths,
            lambda p: "/duty" in p,
            "the escalation sent (by B, once A's dispatch lease ran out)",
            deadline_s=ESCALATE_AFTER_S + 2 * LEASE_S + 30,
            context=lambda: log_tails(services),
        )
        assert fleets["B"].process.returncode is None, fleets["B"].log_tail()
        assert "now runs the dispatch" in fleets["B"].log_tail(), fleets["B"].log_tail()
    assert sorted(receiver.paths) == ["/duty", "/rescue"], receiver.paths
    assert receiver.server is not None
    receiver.server.close()


def test_one_webhook_per_alarm_step_when_the_dispatching_instance_dies(
    pg_url: str, tmp_path: Path
) -> None:
    asyncio.run(scenario(pg_url, tmp_path))

"""Two fleet instances on one PostgreSQL behave as one (issue 18, item 3): the instance
holding the dispatch role (A) sends an entrapment's first step to the rescue webhook; it
is killed (SIGKILL, no goodbye) before the escalation is due; the other (B) takes the
role when the lease runs out and sends the escalation. A real local HTTP receiver gets
exactly one request per alarm step. A dashboard live stream on B shows the entrapment
ingested through A (relayed by LISTEN/NOTIFY), and after A's death an event ingested
through B: live updates keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import grpc
import psycopg
import pytest

from fleet.serve.roles import LEASE_S
from fleet.web.relay import WATCH_CHANNEL
from hil_tests.processes import Service, start
from protos.liftwatch.v1 import gateway_pb2_grpc, records_pb2
from tests.fleet.factories import batch, hello, record
from tests.support import eventually, live_stream, log_tails

pytestmark = pytest.mark.e2e

ESCALATE_AFTER_S = 6
ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT
HELD_OPEN = records_pb2.EVENT_TYPE_DOOR_HELD_OPEN  # no alarm type: no webhook
CONNECTED = "(connected)"


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
            "[http]",
            "auth = false",  # the test's page reads the live stream without a login
            "",
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


async def _raise(
    address: str, agent_id: str, event_type: records_pb2.EventType, event_id: str
) -> None:
    """An agent ``agent_id`` with unit ``agent_id``-car1 raises one event through the
    fleet at ``address``."""
    now = dt.datetime.now(dt.UTC)
    async with grpc.aio.insecure_channel(address) as channel:
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        await call.write(hello(agent_id, f"{agent_id}-car1"))
        assert (await call.read()).WhichOneof("frame") == "welcome"
        event = record(1, f"{agent_id}-car1", time=now, event=event_type, event_id=event_id)
        await call.write(batch(event))
        assert (await call.read()).ack.up_to_seq == 1
        await call.done_writing()


def _delivered(url: str, target: str) -> bool:
    """Whether the store records a delivered send to ``target``."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM alarm_deliveries WHERE target = %s AND delivered_us IS NOT NULL",
            (target,),
        ).fetchone()
    return bool(row and row[0])


def _listening(url: str) -> int:
    """How many sessions wait for live notifications (each instance's relay has one)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (f"LISTEN {WATCH_CHANNEL}",)
        ).fetchone()
    return int(row[0]) if row else 0


async def read_live(http_address: str, seen: list[str]) -> None:
    """Append every ``data:`` payload of the dashboard's live stream to ``seen``, after
    `CONNECTED` once the stream is subscribed."""
    async with live_stream(http_address) as stream:
        if stream.status == 200:
            seen.append(CONNECTED)
            await stream.data(seen)


async def scenario(url: str, work: Path) -> None:
    receiver = Receiver()
    port = await receiver.start()
    config = work / "fleet.toml"
    config.write_text(_config(port), encoding="utf-8")
    async with contextlib.AsyncExitStack() as stack:
        fleets: dict[str, Service] = {}
        for name, http in (("A", ""), ("B", "127.0.0.1:0")):  # A first: it takes the roles
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
                    http,
                    "--query",
                    "",
                ],
                work,
            )
            stack.push_async_callback(fleet.stop)
            fleets[name] = fleet
        services = list(fleets.values())
        page: list[str] = []
        reading = asyncio.create_task(read_live(str(fleets["B"].ready["http"]), page))
        stack.callback(reading.cancel)
        # Both relays listening, B's page subscribed: nothing relayed before is missed.
        await eventually(
            lambda: asyncio.to_thread(_listening, url), lambda n: n == 2, "both relays listening"
        )
        await eventually(lambda: page, lambda p: CONNECTED in p, "B's page subscribed")
        # Ingested through A, which dispatches it; B's page sees it by the relay.
        await _raise(str(fleets["A"].ready["grpc"]), "agent-x", ENTRAPMENT, "trapped-1")
        await eventually(
            lambda: receiver.paths,
            lambda p: "/rescue" in p,
            "the rescue step sent (by A)",
            context=lambda: log_tails(services),
        )
        await eventually(
            lambda: page, lambda p: any("trapped-1" in x for x in p), "A's event on B's page"
        )
        # Between the steps: the rescue send recorded as delivered (a kill between the
        # receiver's 200 and that record is at-least-once's window: the send is repeated).
        await eventually(
            lambda: asyncio.to_thread(_delivered, url, "rescue"), what="the rescue step recorded"
        )
        fleets["A"].process.kill()  # mid-escalation: the duty step is not due yet
        await fleets["A"].process.wait()
        # Live updates keep flowing: an event ingested through B reaches its page.
        await _raise(str(fleets["B"].ready["grpc"]), "agent-y", HELD_OPEN, "held-1")
        await eventually(
            lambda: page, lambda p: any("held-1" in x for x in p), "B's event on B's page"
        )
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

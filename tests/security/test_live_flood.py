"""One user cannot stall ingest through ``/api/live`` (issue 14, item 4; the probe
``live_stream_flood``; its ack-time figures come from ``bench/live_flood.py --json``).

A contractor floods the live stream with its API token and two login sessions, never
reading: the caps hold (429 naming the limit), the agent's ENTRAPMENT is acked while the
flood is open, and once the sockets close every stream is gone and its share given back.
A client that takes nothing is dropped rather than buffered for."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

from fleet.config import FleetConfig, StoreConfig
from fleet.web.auth import SESSION_COOKIE
from fleet.web.http import bind
from fleet.web.live import LiveHub, LiveMessage, LiveStreamResponse, StreamLimits, UnitContractors
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import batch, hello, record
from tests.fleet.harness import Fleet, running_fleet
from tests.fleet.test_web_auth import Client
from tests.security.conftest import District, with_timeout
from tests.support import LiveStream, eventually

GAUGE = "liftwatch_fleet_live_subscribers"
PASSWORD = "correct horse battery"  # the district's users' password


async def open_live(fleet: Fleet, header: str) -> tuple[int, str, asyncio.StreamWriter]:
    """``GET /api/live`` with ``header`` (Authorization or Cookie): the status, the body
    for a refusal, and the connection (left open and unread on a 200)."""
    stream = await LiveStream.open(fleet.http, "/api/live", header)
    body = await stream.body() if stream.status != 200 else ""
    return stream.status, body, stream.writer


def slam(writer: asyncio.StreamWriter) -> None:
    """Close with RST, as a vanished client's connection ends."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def gauge(fleet: Fleet) -> float:
    """The fleet's open live streams, as /metrics says."""
    return fleet.metrics.value(GAUGE)


def test_one_user_floods_the_live_stream_and_ingest_keeps_acking(district: District) -> None:
    config = FleetConfig(store=StoreConfig(path=str(district.db)))

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            token = f"Authorization: Bearer {district.contractor_token}"
            flood = await asyncio.gather(*(open_live(fleet, token) for _ in range(20)))
            accepted = [w for status, _, w in flood if status == 200]
            refused = [body for status, body, _ in flood if status == 429]
            # One API token is one session: 4 streams ([http] live_streams_per_session).
            assert len(accepted) == 4 and len(refused) == 16
            assert "live_streams_per_session" in refused[0]
            # Two browser logins of the same user: the user's cap (8) is reached on the
            # first, the second gets nothing.
            sessions = []
            for _ in range(2):
                browser = Client(fleet.http)
                assert await browser.login("c1", PASSWORD) == 200
                sessions.append(f"Cookie: {SESSION_COOKIE}={browser.cookie}")
            first = await asyncio.gather(*(open_live(fleet, sessions[0]) for _ in range(6)))
            accepted += [w for status, _, w in first if status == 200]
            assert [status for status, _, _ in first].count(200) == 4
            status, body, other = await open_live(fleet, sessions[1])
            assert status == 429 and "live_streams_per_user" in body
            other.close()
            assert await gauge(fleet) == 8
            assert fleet.metrics.value("liftwatch_fleet_live_refused_total") == 19

            # Ingest acks an ENTRAPMENT while the eight streams are open and unread.
            call = await fleet.connect(hello("edge-1", "U1"))
            assert (await with_timeout(call.read())).WhichOneof("frame") == "welcome"
            for seq in range(1, 4):
                entrapment = record(
                    seq, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id=f"e{seq}"
                )
                await call.write(batch(entrapment))
                frame = await with_timeout(call.read())
                assert frame.WhichOneof("frame") == "ack" and frame.ack.up_to_seq == seq
                assert await gauge(fleet) == 8  # the flood was in progress
            await call.done_writing()

            # The client vanishes: every stream ends, and the user's share comes back.
            for writer in accepted:
                slam(writer)
            await eventually(lambda: gauge(fleet), lambda open_streams: open_streams == 0)
            status, _, again = await open_live(fleet, token)
            assert status == 200
            again.close()
            await eventually(lambda: gauge(fleet), lambda open_streams: open_streams == 0)

    asyncio.run(with_timeout(scenario(), 60))


def test_a_client_that_takes_nothing_is_dropped_not_buffered_for() -> None:
    async def scenario() -> None:
        hub = LiveHub(UnitContractors(), [], StreamLimits(send_timeout_s=0.2))
        subscription = hub.subscribe("", user="c1", session="s")
        sent: list[Any] = []
        stalled = asyncio.Event()

        async def send(message: Any) -> None:
            # The first two writes go out (headers, the hello); then the client's window
            # is full and the server's write never completes.
            if len(sent) >= 2:
                stalled.set()
                await asyncio.Event().wait()
            sent.append(message)

        async def receive() -> Any:
            await asyncio.Event().wait()  # the client neither sends nor closes

        response = LiveStreamResponse(hub, subscription, keepalive_s=60, reconnect_ms=1000)
        streaming = asyncio.create_task(response({"type": "http"}, receive, send))
        hub.publish(LiveMessage("event", "U1", {"unit_id": "U1"}))
        await with_timeout(streaming, 10)
        assert stalled.is_set()
        assert hub.open_streams == 0 and hub.streams_of("c1") == 0
        assert hub.dropped_subscribers == 1
        # Nothing more is queued for it.
        hub.publish(LiveMessage("event", "U1", {"unit_id": "U1"}))
        assert subscription.queue.qsize() <= 1

    asyncio.run(scenario())


def test_the_kernel_closes_a_connection_whose_client_stopped_reading() -> None:
    """The backstop behind the dropped stream: uvicorn's last bytes to a client that
    never reads would hold the socket and megabytes of send buffer for ever."""
    server = bind("127.0.0.1:0", stalled_after_s=1.0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(server.getsockname())
    accepted, _ = server.accept()
    accepted.setblocking(False)
    chunk = b"x" * 65536

    async def scenario() -> None:
        async def writable_until_closed() -> bool:
            # Keep offering data; the client's window stays shut, so it piles up unsent
            # until the kernel gives up on the connection.
            try:
                while True:
                    accepted.send(chunk)
            except BlockingIOError:
                return False
            except OSError:
                return True

        await eventually(writable_until_closed, lambda closed: closed)

    try:
        asyncio.run(with_timeout(scenario(), 30))
    finally:
        for sock in (accepted, client, server):
            sock.close()


def test_with_auth_off_each_address_counts_as_one_user(district: District) -> None:
    config = FleetConfig(store=StoreConfig(path=str(district.db)))

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=False) as fleet:
            flood = await asyncio.gather(*(open_live(fleet, "Accept: */*") for _ in range(10)))
            statuses = sorted(status for status, _, _ in flood)
            assert statuses == [200] * 8 + [429] * 2
            assert "address 127.0.0.1" in next(body for status, body, _ in flood if status == 429)
            for _, _, writer in flood:
                slam(writer)
            await eventually(lambda: gauge(fleet), lambda open_streams: open_streams == 0)

    asyncio.run(with_timeout(scenario(), 60))

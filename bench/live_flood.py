"""One contractor floods ``/api/live``: does ingest still ack an ENTRAPMENT at once?

Runs the real fleet manager as a process on loopback (HTTP auth on, a contractor C1 with
an API token, unit U1 of C1), and in this process an agent streaming ENTRAPMENT events
for U1 over the gRPC gateway, one at a time, timing each from the batch's write to its
ack (the fleet acks after the group commit). Meanwhile ``--streams`` connections open
``GET /api/live`` with the contractor's token, as fast as they can, and never read
what the fleet sends them (the 2026 attack: 1,500 abandoned streams). After
``--hold-s`` they are closed abruptly (RST), and the bench watches the fleet's CPU and
its ``liftwatch_fleet_live_subscribers`` gauge until the streams are gone.

Prints one JSON object::

    {"streams": N, "accepted": ..., "refused": {"429": ...}, "acks": ...,
     "ack_ms": {"p50", "p99", "max"},            # ENTRAPMENT acks while the flood is open
     "ack_ms_after_close": {"p50", "p99", "max"}, # ... and after the sockets closed
     "subscribers_zero_after_s": ...,             # closing -> the gauge reads 0
     "fleet_cpu_s_after_close": ...}              # fleet CPU seconds in the 5 s after close

Target (issue 14, probe ``live_stream_flood``): ack p99 under 250 ms during the flood.

    python bench/live_flood.py --json [--streams 1500] [--hold-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc

from fleet.auth.passwords import hash_password
from fleet.auth.roles import Role
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore
from hil_tests.processes import Service, start
from protos.liftwatch.v1 import gateway_pb2, gateway_pb2_grpc, records_pb2

UNIT = "U1"
AGENT = "bench-agent"
CPU_WINDOW_S = 5.0


def prepare(work: Path) -> tuple[Path, str]:
    """A fleet config and store in ``work``: U1 of contractor C1, the agent registered for
    it, and user c1 (contractor C1); returns the config path and c1's API token."""
    db = work / "fleet.db"
    store = SqliteStore.open(str(db))
    now = dt.datetime.now(dt.UTC)
    try:
        store.upsert_register([RegisterEntry(UNIT, contractor="C1")])
        store.add_agent_units(AGENT, [UNIT])
        store.add_user("c1", Role.CONTRACTOR, hash_password("bench password 1"), "C1", now=now)
        token = store.create_token("c1", "flood", now)
    finally:
        store.close()
    config = work / "fleet.toml"
    config.write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[http]\nlisten = "127.0.0.1:0"\n'
        f'[store]\npath = "{db}"\n',
        encoding="utf-8",
    )
    return config, token


def _entrapment(seq: int) -> gateway_pb2.AgentFrame:
    record = records_pb2.Record(seq=seq, unit_id=UNIT)
    record.time.GetCurrentTime()
    record.event.CopyFrom(
        records_pb2.Event(
            event_id=f"flood-{seq}",
            type=records_pb2.EVENT_TYPE_ENTRAPMENT,
            phase=records_pb2.PHASE_RAISED,
            floor=1,
            reason="bench",
        )
    )
    return gateway_pb2.AgentFrame(batch=gateway_pb2.RecordBatch(records=[record]))


class Agent:
    """One agent stream; `ack_ms` times a one-ENTRAPMENT batch from write to ack."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._seq = int(time.time() * 1000)

    @classmethod
    async def connect(cls, channel: grpc.aio.Channel) -> Agent:
        """Hello for U1 and wait for the Welcome."""
        call = gateway_pb2_grpc.AgentGatewayStub(channel).Connect()
        unit = gateway_pb2.UnitDescriptor(
            unit_id=UNIT, controller=records_pb2.ControllerInfo(model="RC-3000")
        )
        await call.write(
            gateway_pb2.AgentFrame(
                hello=gateway_pb2.Hello(agent_id=AGENT, agent_version="bench", units=[unit])
            )
        )
        frame = await call.read()
        if frame.WhichOneof("frame") != "welcome":
            raise RuntimeError(f"the fleet did not welcome the agent: {frame}")
        return cls(call)

    async def ack_ms(self) -> float:
        """Send one ENTRAPMENT and wait for its ack; the milliseconds between."""
        self._seq += 1
        started = time.perf_counter()
        await self._call.write(_entrapment(self._seq))
        frame = await self._call.read()
        if frame.WhichOneof("frame") != "ack":
            raise RuntimeError(f"expected an ack, got {frame}")
        return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        """End the stream."""
        await self._call.done_writing()


async def open_stream(http: str, token: str) -> tuple[int, socket.socket | None]:
    """``GET /api/live`` with ``token``; (status, the socket kept open, unread) — the socket
    is None when the fleet refused the stream (or the connection failed: status 0)."""
    host, port = http.rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return 0, None
    request = (
        f"GET /api/live HTTP/1.1\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    try:
        line = await asyncio.wait_for(reader.readline(), 30)
        status = int(line.split()[1]) if line.startswith(b"HTTP/") else 0
    except (OSError, TimeoutError, ValueError, IndexError):
        status = 0
    sock: socket.socket | None = writer.get_extra_info("socket")
    if status != 200 or sock is None:
        writer.close()
        return status, None
    # Keep the socket, stop reading: the transport is detached so that nothing in this
    # process drains the fleet's messages (an abandoned page).
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    writer.transport.abort()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return status, raw


def abort(sock: socket.socket, rst: bool = True) -> None:
    """Close ``sock``: with RST (``rst``: a vanished host), else with FIN (a closed tab)."""
    if rst:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def subscribers(http: str) -> float | None:
    """The fleet's ``liftwatch_fleet_live_subscribers`` gauge (None when unreadable)."""
    try:
        with urllib.request.urlopen(f"http://{http}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("liftwatch_fleet_live_subscribers "):
            return float(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of ``values`` in ms, rounded to 0.1."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1], 1)}


async def _acks_until(agent: Agent, stop: asyncio.Event, into: list[float]) -> None:
    while not stop.is_set():
        into.append(await agent.ack_ms())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)


async def measure(streams: int, hold_s: float, rst: bool, work: Path) -> dict[str, Any]:
    """Run the fleet, the agent and the flood; the figures as the module docstring says."""
    config, token = prepare(work)
    fleet: Service = await start("fleet", "fleet", ["serve", "--config", str(config)], work)
    http = str(fleet.ready["http"])
    sockets: list[socket.socket] = []
    refused: dict[str, int] = {}
    during: list[float] = []
    after: list[float] = []
    try:
        async with grpc.aio.insecure_channel(str(fleet.ready["grpc"])) as channel:
            agent = await Agent.connect(channel)
            for _ in range(20):  # warm up
                await agent.ack_ms()
            stop = asyncio.Event()
            acking = asyncio.create_task(_acks_until(agent, stop, during))
            for start_at in range(0, streams, 100):
                opened = await asyncio.gather(
                    *(open_stream(http, token) for _ in range(min(100, streams - start_at)))
                )
                for status, sock in opened:
                    if sock is not None:
                        sockets.append(sock)
                    else:
                        refused[str(status)] = refused.get(str(status), 0) + 1
            await asyncio.sleep(hold_s)
            stop.set()
            await acking
            cpu_before = cpu_seconds(fleet.process.pid or 0)
            closed_at = time.monotonic()
            for sock in sockets:
                abort(sock, rst)
            stop = asyncio.Event()
            acking = asyncio.create_task(_acks_until(agent, stop, after))
            zero_after: float | None = None
            while time.monotonic() - closed_at < CPU_WINDOW_S:
                if zero_after is None:
                    gauge = await asyncio.to_thread(subscribers, http)
                    if gauge == 0:
                        zero_after = time.monotonic() - closed_at
                await asyncio.sleep(0.1)
            cpu_after = cpu_seconds(fleet.process.pid or 0) - cpu_before
            while zero_after is None and time.monotonic() - closed_at < 120:
                gauge = await asyncio.to_thread(subscribers, http)
                if gauge == 0:
                    zero_after = time.monotonic() - closed_at
                await asyncio.sleep(0.5)
            stop.set()
            await acking
            await agent.close()
    finally:
        for sock in sockets:
            abort(sock)
        await fleet.stop()
    return {
        "streams": streams,
        "close": "rst" if rst else "fin",
        "accepted": len(sockets),
        "refused": refused,
        "acks": len(during),
        "ack_ms": percentiles(during),
        "ack_ms_after_close": percentiles(after),
        "subscribers_zero_after_s": None if zero_after is None else round(zero_after, 2),
        "fleet_cpu_s_after_close": round(cpu_after, 2),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints JSON with ``--json``, a summary otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1500, help="live streams to open")
    parser.add_argument("--hold-s", type=float, default=10.0, help="how long to hold them")
    parser.add_argument(
        "--close", choices=("rst", "fin"), default="fin", help="how the flood's sockets close"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="live-flood-") as tmp:
        result = asyncio.run(measure(args.streams, args.hold_s, args.close == "rst", Path(tmp)))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

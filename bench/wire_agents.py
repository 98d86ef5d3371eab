"""Simulated agents that speak gRPC's wire format directly: the cheap load generator of
``fleet_ingest.py``.

Why not grpc.aio: a grpc.aio channel per simulated agent (each agent has its own TCP
connection, as real agents do) costs the load generator about as much CPU per message as
the fleet spends serving it. On a 2-core machine shared with the fleet that halves what
the fleet can have and the benchmark measures the load generator. Here one asyncio
`Protocol` per connection speaks HTTP/2 (RFC 9113) with the gRPC framing on top, and every
process runs one scheduler for all its agents instead of a coroutine and a timer each:

- a call is one stream (id 1) opened with a fixed HPACK header block (static-table and
  literal fields only, so nothing is compressed and no table state is kept); the fleet's
  response headers and trailers are decoded (``hpack``) only for the ``retry-after-ms``
  a fleet admitting streams at its limit sends (the agent waits that long, as the real
  agent's uplink does); trailers (HEADERS with END_STREAM) end the call, and ending
  before the run ends is counted as an error, unless ``reconnect`` is set
  (``fleet_ingest.py --restart-at``): then an agent whose call ended after its Welcome
  connects again with the real agent's back-off, resends what was not acked past the new
  Welcome's committed seq, and notes when its first ack after the restart came;
- messages are pre-serialized: heartbeats are one constant frame, a CarState record is
  assembled from cached pieces (the unit field of each agent, the timestamp of the
  tick, one CarState per floor and motion), and only the rare events go through protobuf.
  `check_encoding` compares the assembly with protobuf's own at start;
- flow control is honoured both ways, SETTINGS and PINGs are answered, and each
  connection sends a keepalive PING every 30 s, as the grpcio channel options did.

The fleet sees the same thing as from grpcio clients: one HTTP/2 connection and one
Connect stream per agent, the same frames in the same order. ``--client grpcio`` in
``fleet_ingest.py`` still runs the grpcio agents, to compare.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import heapq
import random
import struct
import time
from typing import Any

import hpack

from protos.liftwatch.v1 import gateway_pb2, records_pb2

PATH = b"/liftwatch.v1.AgentGateway/Connect"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STREAM = 1  # one call per connection: always stream 1

# Frame types and flags (RFC 9113, section 6).
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE = 0x2, 0x4
DEFAULT_WINDOW = 65_535
# What we let the fleet send before a WINDOW_UPDATE: more than a run's acks.
RECEIVE_WINDOW = 1 << 30
KEEPALIVE_S = 30.0
# A call the fleet refuses before its Welcome (a connection storm: the fleet cancels calls
# it cannot take up in time) is retried like the real agent does, at most this often.
CONNECT_ATTEMPTS = 5
RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0  # the real agent's back-off ceiling (agent.uplink.Backoff)
RETRY_AFTER_KEY = b"retry-after-ms"  # fleet.ingest.admission
CARS = 4
EVENT_PROBABILITY = 0.01  # per agent and tick: a RAISED, cleared on the next tick

_HEADER = struct.Struct(">I")  # length (24 bits used) | type | flags | stream
_TICK, _BEAT, _PING = 0, 1, 2


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + _HEADER.pack(stream) + payload


def _itself(agent: WireAgent) -> WireAgent:
    return agent


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (``tag`` = field number << 3 | 2)."""
    return bytes([tag]) + _varint(len(payload)) + payload


def _hpack_string(text: bytes) -> bytes:
    assert len(text) < 127  # a 7-bit length, no Huffman coding
    return bytes([len(text)]) + text


def request_headers(authority: str) -> bytes:
    """The HPACK block of a Connect call: static-table entries and literal fields without
    indexing only (RFC 7541), so the block is the same on every connection."""
    return b"".join(
        [
            b"\x83",  # :method POST (static index 3)
            b"\x86",  # :scheme http (static index 6)
            b"\x04" + _hpack_string(PATH),  # :path, name from static index 4
            b"\x01" + _hpack_string(authority.encode()),  # :authority (index 1)
            b"\x0f\x10" + _hpack_string(b"application/grpc"),  # content-type (index 31)
            b"\x00" + _hpack_string(b"te") + _hpack_string(b"trailers"),
        ]
    )


def grpc_data(message: bytes, *, end: bool = False) -> bytes:
    """One DATA frame on the call's stream carrying one uncompressed gRPC message."""
    return _frame(
        DATA, END_STREAM if end else 0, STREAM, b"\x00" + _HEADER.pack(len(message)) + message
    )


HEARTBEAT = gateway_pb2.AgentFrame(heartbeat=gateway_pb2.Heartbeat()).SerializeToString()
# A CarState per (floor, moving): the records reuse these bytes.
_CAR_STATES = {
    (floor, moving): _field(
        0x52,  # Record.car_state = 10
        records_pb2.CarState(
            floor=floor,
            moving=moving,
            door=records_pb2.DOOR_STATE_CLOSED,
            mode=records_pb2.SERVICE_MODE_NORMAL,
        ).SerializeToString(),
    )
    for floor in range(1, 31)
    for moving in (False, True)
}


def timestamp_field(seconds: int, nanos: int) -> bytes:
    """Record.time = 3 of a moment."""
    record = records_pb2.Record()
    record.time.seconds = seconds
    record.time.nanos = nanos
    return _field(0x1A, record.time.SerializeToString())


def car_state_record(seq: int, unit_field: bytes, time_field: bytes, state: bytes) -> bytes:
    """A serialized Record: seq = 1, unit_id = 2 (pre-encoded), time = 3, car_state = 10."""
    return b"\x08" + _varint(seq) + unit_field + time_field + state


def batch_message(records: list[bytes]) -> bytes:
    """A serialized AgentFrame{batch = 2: RecordBatch{records = 1}} of serialized Records."""
    return _field(0x12, b"".join([_field(0x0A, r) for r in records]))


def check_encoding() -> None:
    """Raise AssertionError unless the hand-assembled frames parse as protobuf builds them."""
    now = dt.datetime(2030, 1, 2, 3, 4, 5, 678_901, tzinfo=dt.UTC)
    seconds, micros = divmod(int(now.timestamp() * 1_000_000), 1_000_000)
    expected = gateway_pb2.AgentFrame()
    for seq, (floor, moving) in ((300, (7, True)), (2**40, (30, False))):
        record = expected.batch.records.add(seq=seq, unit_id="bench-000001-car3")
        record.time.FromDatetime(now)
        record.car_state.floor = floor
        record.car_state.moving = moving
        record.car_state.door = records_pb2.DOOR_STATE_CLOSED
        record.car_state.mode = records_pb2.SERVICE_MODE_NORMAL
    time_field = timestamp_field(seconds, micros * 1000)
    unit_field = _field(0x12, b"bench-000001-car3")
    built = batch_message(
        [
            car_state_record(300, unit_field, time_field, _CAR_STATES[7, True]),
            car_state_record(2**40, unit_field, time_field, _CAR_STATES[30, False]),
        ]
    )
    assert gateway_pb2.AgentFrame.FromString(built) == expected, "batch encoding differs"
    assert gateway_pb2.AgentFrame.FromString(HEARTBEAT).WhichOneof("frame") == "heartbeat"


class WireAgent(asyncio.Protocol):
    """One simulated agent: its connection, its Connect call, its seqs and ack latencies."""

    def __init__(self, agent_id: str, authority: str, loop: asyncio.AbstractEventLoop) -> None:
        self.agent_id = agent_id
        self.units = [f"{agent_id}-car{c}" for c in range(1, CARS + 1)]
        self._unit_fields = [_field(0x12, u.encode()) for u in self.units]
        self._authority = authority
        self._loop = loop
        self.seq = 0
        self.acked = 0
        self.latencies: list[float] = []
        self.steady: list[float] = []  # of batches sent at or after `steady_from`
        self.steady_from = float("inf")
        self.error: str | None = None
        self._finishing = False  # we half-closed: the fleet's trailers are expected now
        self.heartbeat_s = 10.0
        self.open_event: tuple[str, str] | None = None
        self._sent: collections.deque[tuple[int, float]] = collections.deque()
        # Batches not acked yet, (last seq, message): resent after a reconnect.
        self.unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self.timed: list[tuple[float, float]] = []  # (sent at, ack latency) of each batch
        self.retry_after_s: float | None = None  # the fleet's hint when it turned us away
        self.acked_once: asyncio.Future[float] = loop.create_future()  # when, this connection
        # Called once when a call that had its Welcome fails (``reconnect``: at once, as the
        # real agent's read of the stream ends at once).
        self.on_lost: Any = None
        self._headers = hpack.Decoder()
        self._transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._messages = bytearray()
        self._received = 0  # DATA bytes since our last WINDOW_UPDATE
        self._send_window = DEFAULT_WINDOW  # the fleet's, for our DATA: connection ...
        self._stream_window = DEFAULT_WINDOW  # ... and stream
        self._stream_initial = DEFAULT_WINDOW
        self._blocked: collections.deque[bytes] = collections.deque()
        self.welcome: asyncio.Future[gateway_pb2.Welcome] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Preface, our SETTINGS and windows, the call's headers and the Hello."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        settings = struct.pack(
            ">HIHI", SETTINGS_ENABLE_PUSH, 0, SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW
        )
        transport.write(
            PREFACE
            + _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, _HEADER.pack(RECEIVE_WINDOW - DEFAULT_WINDOW))
            + _frame(HEADERS, END_HEADERS, STREAM, request_headers(self._authority))
        )
        self._send(self._hello())

    def data_received(self, data: bytes) -> None:
        """Parse whole frames; act on each."""
        buffer = self._in
        buffer += data
        at = 0
        while len(buffer) - at >= 9:
            length = int.from_bytes(buffer[at : at + 3], "big")
            if len(buffer) - at < 9 + length:
                break
            kind, flags = buffer[at + 3], buffer[at + 4]
            stream = _HEADER.unpack_from(buffer, at + 5)[0] & 0x7FFFFFFF
            payload = bytes(buffer[at + 9 : at + 9 + length])
            at += 9 + length
            self._on_frame(kind, flags, stream, payload)
        del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: before `finish`, the agent failed."""
        if not self._finishing:
            self._fail(f"connection lost: {exc}" if exc else "connection closed")
        if not self.closed.done():
            self.closed.set_result(None)

    # -- frames ----------------------------------------------------------------------------

    def _on_frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if kind == DATA:
            length = len(payload)
            self._received += length
            if flags & PADDED:
                payload = payload[1 : length - payload[0]]
            self._messages += payload
            self._take_messages()
            if self._received > RECEIVE_WINDOW // 2:
                assert self._transport is not None
                increment = _HEADER.pack(self._received)
                self._transport.write(
                    _frame(WINDOW_UPDATE, 0, 0, increment)
                    + _frame(WINDOW_UPDATE, 0, STREAM, increment)
                )
                self._received = 0
            if flags & END_STREAM:
                self._ended("the fleet ended the call")
        elif kind == HEADERS:
            self._read_headers(flags, payload)
            if flags & END_STREAM:  # trailers: the call is over
                self._ended("the fleet ended the call (trailers)")
        elif kind == SETTINGS:
            if not flags & ACK:
                for offset in range(0, len(payload) - 5, 6):
                    key, value = struct.unpack_from(">HI", payload, offset)
                    if key == SETTINGS_INITIAL_WINDOW_SIZE:
                        self._stream_window += value - self._stream_initial
                        self._stream_initial = value
                assert self._transport is not None
                self._transport.write(_frame(SETTINGS, ACK, 0, b""))
                self._unblock()
        elif kind == PING:
            if not flags & ACK:
                assert self._transport is not None
                self._transport.write(_frame(PING, ACK, 0, payload))
        elif kind == WINDOW_UPDATE:
            increment = _HEADER.unpack(payload)[0] & 0x7FFFFFFF
            if stream == 0:
                self._send_window += increment
            else:
                self._stream_window += increment
            self._unblock()
        elif kind == RST_STREAM:
            self._ended(f"the fleet reset the call (code {_HEADER.unpack(payload)[0]})")
        elif kind == GOAWAY:
            self._ended("the fleet sent GOAWAY")

    def _read_headers(self, flags: int, payload: bytes) -> None:
        # Every block goes through the one decoder of the connection (HPACK's table).
        if flags & PADDED:
            payload = payload[1 : len(payload) - payload[0]]
        if flags & 0x20:  # PRIORITY: stream dependency and weight first
            payload = payload[5:]
        with contextlib.suppress(hpack.HPACKError):
            for name, value in self._headers.decode(payload, raw=True):
                if name == RETRY_AFTER_KEY:
                    with contextlib.suppress(ValueError):
                        self.retry_after_s = int(value) / 1000

    def _take_messages(self) -> None:
        messages = self._messages
        while len(messages) >= 5:
            size = _HEADER.unpack_from(messages, 1)[0]
            if len(messages) < 5 + size:
                return
            frame = gateway_pb2.FleetFrame.FromString(bytes(messages[5 : 5 + size]))
            del messages[: 5 + size]
            self._on_message(frame)

    def _on_message(self, frame: gateway_pb2.FleetFrame) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "ack":
            now = self._loop.time()
            up_to = frame.ack.up_to_seq
            self.acked = max(self.acked, up_to)
            sent = self._sent
            if not self.acked_once.done():
                self.acked_once.set_result(now)
            while sent and sent[0][0] <= up_to:
                at = sent.popleft()[1]
                self.latencies.append(now - at)
                self.timed.append((at, now - at))
                if at >= self.steady_from:
                    self.steady.append(now - at)
            unacked = self.unacked
            while unacked and unacked[0][0] <= up_to:
                unacked.popleft()
            if self.acked >= self.seq and not self.drained.done():
                self.drained.set_result(None)
        elif kind == "welcome" and not self.welcome.done():
            self.welcome.set_result(frame.welcome)
        else:
            self._ended(f"the fleet sent {kind}: {frame}"[:200])

    def _ended(self, why: str) -> None:
        if not self._finishing:
            self._fail(why)
        if not self.closed.done():
            self.closed.set_result(None)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
            if self.on_lost is not None and self.welcome.done():
                self._loop.call_soon(self.on_lost)
        for future in (self.welcome, self.drained, self.acked_once):
            if not future.done():
                future.set_exception(ConnectionError(why))
                future.exception()  # retrieved: a failed agent is counted, not raised

    # -- sending ---------------------------------------------------------------------------

    def _send(self, message: bytes, *, end: bool = False) -> None:
        frame = grpc_data(message, end=end)
        size = len(frame) - 9
        if self._blocked or size > min(self._send_window, self._stream_window):
            self._blocked.append(frame)
            return
        self._send_window -= size
        self._stream_window -= size
        assert self._transport is not None
        self._transport.write(frame)

    def _unblock(self) -> None:
        assert self._transport is not None
        while self._blocked:
            size = len(self._blocked[0]) - 9
            if size > min(self._send_window, self._stream_window):
                return
            self._send_window -= size
            self._stream_window -= size
            self._transport.write(self._blocked.popleft())

    def _hello(self) -> bytes:
        return gateway_pb2.AgentFrame(
            hello=gateway_pb2.Hello(
                agent_id=self.agent_id,
                agent_version="bench-0.1",
                units=[
                    gateway_pb2.UnitDescriptor(
                        unit_id=u,
                        controller=records_pb2.ControllerInfo(
                            vendor="Bench", model="RC-3000", firmware="3.2.0", profile="reference"
                        ),
                    )
                    for u in self.units
                ],
            )
        ).SerializeToString()

    def tick(
        self, rng: random.Random, time_field: bytes, stamp: dt.datetime, *, send: bool = True
    ) -> bool:
        """Send one tick: a CarState per car, and sometimes an event raised or cleared;
        False when the connection is gone. Without ``send`` only keep it for later."""
        if send and (self._transport is None or self._transport.is_closing()):
            return False
        seq = self.seq
        records = []
        for unit_field in self._unit_fields:
            seq += 1
            state = _CAR_STATES[rng.randint(1, 30), rng.random() < 0.3]
            records.append(car_state_record(seq, unit_field, time_field, state))
        event: tuple[str, str] | None = None
        phase = records_pb2.PHASE_RAISED
        if self.open_event is not None:
            event, phase, self.open_event = self.open_event, records_pb2.PHASE_CLEARED, None
        elif rng.random() < EVENT_PROBABILITY:
            event = (rng.choice(self.units), f"{self.agent_id}-{seq}")
            self.open_event = event
        if event is not None:
            seq += 1
            record = records_pb2.Record(seq=seq, unit_id=event[0])
            record.time.FromDatetime(stamp)
            record.event.event_id = event[1]
            record.event.type = records_pb2.EVENT_TYPE_DOOR_HELD_OPEN
            record.event.phase = phase
            record.event.onset.FromDatetime(stamp)
            records.append(record.SerializeToString())
        self.seq = seq
        self._sent.append((seq, self._loop.time()))
        message = batch_message(records)
        self.unacked.append((seq, message))
        if send:
            self._send(message)
        return True

    def keep(self, rng: random.Random, time_field: bytes, stamp: dt.datetime) -> bool:
        """A tick while the fleet is away: built and kept (as the real agent's outbox keeps
        records) for `resume` to send; True."""
        return self.tick(rng, time_field, stamp, send=False)

    def resume(self, before: WireAgent, committed: int) -> None:
        """Carry on from ``before`` (the same agent's last connection) after a Welcome
        saying the fleet holds up to ``committed``: its seqs and figures, and the batches
        it sent that the fleet has not got, sent again now."""
        self.seq, self.open_event = before.seq, before.open_event
        self.latencies, self.steady, self.timed = before.latencies, before.steady, before.timed
        self.steady_from = before.steady_from
        self.acked = max(before.acked, committed)
        self._sent = before._sent
        while self._sent and self._sent[0][0] <= committed:
            self._sent.popleft()  # committed, its ack lost with the connection
        for last_seq, message in before.unacked:
            if last_seq > committed:
                self.unacked.append((last_seq, message))
                self._send(message)

    def heartbeat(self) -> None:
        """Send a Heartbeat."""
        if self._transport is not None and not self._transport.is_closing():
            self._send(HEARTBEAT)

    def ping(self) -> None:
        """Send a keepalive PING."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_frame(PING, 0, 0, b"\x00" * 8))

    def finish(self) -> None:
        """Half-close the call (the fleet then ends it with trailers)."""
        self._finishing = True
        if self._transport is None or self._transport.is_closing():
            return
        end = _frame(DATA, END_STREAM, STREAM, b"")  # empty: needs no window, but comes last
        if self._blocked:
            self._blocked.append(end)
        else:
            self._transport.write(end)

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.close()


async def run_agents(
    address: str,
    first: int,
    count: int,
    seconds: float,
    ramp_s: float,
    interval_s: float,
    drain_timeout_s: float,
    settle_s: float = 0.0,
    reconnect: bool = False,
) -> dict[str, Any]:
    """Run agents ``first`` .. ``first + count - 1`` against ``address``; their report:
    connected, batches, failed, reconnects (calls refused before their Welcome and tried
    again), deferred (calls the fleet turned away with a retry-after-ms slot, waited
    out), errors, latencies_ms, steady_latencies_ms (of the batches sent ``settle_s``
    or more after the ramp ended, and with ``reconnect`` none sent between the first
    lost connection and ``settle_s`` after the last agent was back), agents {id: [sent
    seq, acked seq]}. With ``reconnect`` (the fleet restarts during the run) also
    lost_at (monotonic time of the first connection lost after Welcome), back (agents
    acked again after losing theirs) and back_at (monotonic time of the last of those
    first acks)."""
    check_encoding()
    loop = asyncio.get_running_loop()
    host, _, port = address.rpartition(":")
    origin = loop.time()
    end_at = origin + ramp_s + seconds
    rng = random.Random(first)
    agents = [WireAgent(f"bench-{i:06d}", address, loop) for i in range(first, first + count)]
    for agent in agents:
        agent.steady_from = origin + ramp_s + settle_s
    due: list[tuple[float, int, int]] = []  # (when, what, agent index): the one scheduler
    stats = {"connected": 0, "batches": 0, "reconnects": 0, "deferred": 0}
    lost: dict[int, float] = {}  # agents whose connection ended after Welcome: when
    back: dict[int, float] = {}  # ... and when they were acked again
    resuming: set[int] = set()

    async def connect(index: int, agent: WireAgent, before: WireAgent | None = None) -> None:
        if before is None:
            await asyncio.sleep(max(0.0, origin + ramp_s * index / max(1, count) - loop.time()))
        attempt = failures = 0
        while True:
            if attempt:
                hint = agent.retry_after_s
                if hint is not None:
                    # The fleet gave this call its slot: wait it out, as agent.uplink does
                    # (a little later than asked, the back-off not growing).
                    stats["deferred"] += 1
                    await asyncio.sleep(hint * rng.uniform(1.0, 1.1))
                else:
                    # As the real agent's uplink: a jittered, doubling back-off, then a new
                    # connection.
                    stats["reconnects"] += 1
                    failures += 1
                    # With ``reconnect`` the fleet may be restarting under a first
                    # connect too: keep trying until the run ends, as a real agent does.
                    if before is None and failures >= CONNECT_ATTEMPTS and not reconnect:
                        return
                    ceiling = min(RECONNECT_MAX_S, RECONNECT_INITIAL_S * 2 ** (failures - 1))
                    await asyncio.sleep(rng.uniform(ceiling / 2, ceiling))
                if loop.time() >= end_at:
                    return
                agent = WireAgent(agent.agent_id, address, loop)
                agent.steady_from = origin + ramp_s + settle_s
                if before is None:
                    agents[index] = agent
            attempt += 1
            try:
                await loop.create_connection(functools.partial(_itself, agent), host, int(port))
                welcome = await asyncio.wait_for(agent.welcome, 60)
                break
            except (OSError, ConnectionError, TimeoutError) as exc:
                agent.close()
                agent.error = agent.error or f"{type(exc).__name__}: {exc}"
        agent.error = None
        agent.heartbeat_s = float(welcome.heartbeat_interval_s or 10)
        if reconnect:
            agent.on_lost = functools.partial(reconnect_later, index)
        if before is not None:
            # No await since the Welcome: nothing was kept on ``before`` meanwhile.
            agent.resume(before, welcome.committed_seq)
            agents[index] = agent
            resuming.discard(index)
            with contextlib.suppress(ConnectionError):
                back[index] = await agent.acked_once
            return  # its ticks, beats and pings are still scheduled
        stats["connected"] += 1
        now = loop.time()
        # A random phase: real agents do not tick in step.
        heapq.heappush(due, (now + rng.uniform(0, interval_s), _TICK, index))
        heapq.heappush(due, (now + agent.heartbeat_s, _BEAT, index))
        heapq.heappush(due, (now + KEEPALIVE_S, _PING, index))

    def reconnect_later(index: int) -> None:
        # The fleet went away under this agent (a restart): connect again, resume.
        if index in resuming:
            return
        resuming.add(index)
        lost.setdefault(index, loop.time())
        before = agents[index]  # stays there, keeping its ticks, until resumed
        before.close()
        fresh = WireAgent(before.agent_id, address, loop)
        fresh.steady_from = before.steady_from
        connecting.append(asyncio.create_task(connect(index, fresh, before)))

    connecting = [asyncio.create_task(connect(n, a)) for n, a in enumerate(agents)]
    second = -1
    time_field = b""
    stamp = dt.datetime.now(dt.UTC)
    while True:
        now = loop.time()
        if now >= end_at:
            break
        if due and due[0][0] <= now:
            wall = time.time_ns()
            if wall // 1_000_000 != second:  # one timestamp per millisecond, shared
                second = wall // 1_000_000
                time_field = timestamp_field(wall // 1_000_000_000, wall % 1_000_000_000)
                stamp = dt.datetime.fromtimestamp(wall / 1e9, dt.UTC)
            while due and due[0][0] <= now:
                when, what, index = heapq.heappop(due)
                agent = agents[index]
                if reconnect and index not in resuming and agent.error is not None:
                    reconnect_later(index)
                    agent = agents[index]
                if what == _TICK:
                    if index in resuming:
                        # Kept as the real agent's outbox keeps it, sent on resuming.
                        stats["batches"] += agent.keep(rng, time_field, stamp)
                    else:
                        stats["batches"] += agent.tick(rng, time_field, stamp)
                    heapq.heappush(due, (when + interval_s, _TICK, index))
                elif what == _BEAT:
                    agent.heartbeat()
                    heapq.heappush(due, (when + agent.heartbeat_s, _BEAT, index))
                else:
                    agent.ping()
                    heapq.heappush(due, (when + KEEPALIVE_S, _PING, index))
        wake = min(due[0][0] if due else now + 0.01, now + 0.01, end_at)
        await asyncio.sleep(max(0.0, wake - loop.time()))
    while connecting:
        waiting, connecting[:] = list(connecting), []
        await asyncio.gather(*waiting)
    live = [a for a in agents if a.welcome.done() and a.error is None]
    for agent in live:
        if agent.acked >= agent.seq and not agent.drained.done():
            agent.drained.set_result(None)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(a.drained for a in live), return_exceptions=True), drain_timeout_s
        )
    for agent in live:
        agent.finish()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(a.closed for a in live), return_exceptions=True), drain_timeout_s
        )
    for agent in agents:
        agent.close()
    errors = [a.error for a in agents if a.error is not None]
    steady = [x for a in agents for x in a.steady]
    if lost:
        # Not steady: what was sent from the first connection lost until the last agent
        # was back and settle_s more.
        calm_from = max(back.values(), default=end_at) + settle_s
        storm_from = min(lost.values())
        steady = [
            latency
            for a in agents
            for at, latency in a.timed
            if at >= a.steady_from and not storm_from <= at < calm_from
        ]
    return {
        "connected": stats["connected"],
        "batches": stats["batches"],
        "failed": len(errors),
        "reconnects": stats["reconnects"],
        "deferred": stats["deferred"],
        "errors": errors[:5],
        "latencies_ms": [round(x * 1000, 3) for a in agents for x in a.latencies],
        "steady_latencies_ms": [round(x * 1000, 3) for x in steady],
        "agents": {a.agent_id: [a.seq, a.acked] for a in agents},
        "lost_at": min(lost.values(), default=None),
        "lost": len(lost),
        "back": len(back),
        "back_at": max(back.values(), default=None),
    }

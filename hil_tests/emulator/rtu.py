"""Modbus RTU slave for a `CarGroup` on one serial line, written at the byte level.

Why not pymodbus's RTU server, which the TCP side uses (`server.py`): the link faults must
change an answer byte by byte (a corrupted CRC, garbage, another slave id, silence) and
answers must leave when they would on a wire at that speed, both below what a library
server exposes; and a slave that misjudges frame ends is exactly what the agent's RTU link
must be tested against, so the framing (`rtu_frame.py`) is ours to control.

All cars answer on one line under their own slave ids; frames for other ids are ignored
(another device on the bus may own them) and frames with a bad CRC are dropped, as a real
slave does. Reads (FC 0x01-0x04) are answered from the reference map (`rtu_frame.answer`),
write function codes get exception 0x01. Link faults (`link.py`) change the answer byte by
byte: silence, delay, a corrupted CRC, garbage, another slave id, exception 0x04.

Framing: a request's length follows from its function code, so a complete frame is
handled as soon as its last byte arrives; bytes that do not make a frame (an unknown
function code, noise) are judged when the line falls silent for one frame gap.

I/O choice: pyserial in non-blocking mode with `loop.add_reader` on its file descriptor,
on the emulator's one event loop. No reader thread: the time a request's last byte arrived
is then the loop's own clock reading, which the wire-timing schedule (`loop.call_at`) uses
directly, and the physics, the control port and the TCP server stay on one thread. Both a
pty and a USB-RS485 adapter's tty support this.

With `wire_timing` each answer is written when the request plus the answer would have
finished on a wire at that line speed (`WireTiming.answer_delay_s`), counted from the
arrival of the request's last byte; a late-answer fault adds its delay on top. The event
loop's timers fire up to a millisecond late (epoll rounds timeouts up to whole
milliseconds), which at 115200 baud is a seventh of a transaction: so the timer is set a
little early and the last stretch is waited out exactly (a spin of at most
`_SPIN_S`; this is test equipment, and its CPU is not the point).
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import serial  # type: ignore[import-untyped]  # pyserial ships no type information

from hil_tests.emulator.group import CarGroup
from hil_tests.emulator.link import LinkAction
from hil_tests.emulator.rtu_frame import (
    MAX_FRAME,
    MIN_FRAME,
    ExceptionCode,
    answer,
    crc_ok,
    exception_frame,
    parse_request,
    request_length,
    with_crc,
)
from hil_tests.emulator.wire import SerialFormat, WireTiming, frame_gap_s

log = logging.getLogger(__name__)
_SPIN_S = 0.0015

# A pty or USB adapter delivers a frame in chunks that can be a millisecond or more apart,
# so the silence that ends an unparseable frame is never shorter than this.
MIN_SILENCE_S = 0.01
READ_CHUNK = 4096


def corrupt(frame: bytes, action: LinkAction, slave: int, rng: random.Random, length: int) -> bytes:
    """`frame` as a link fault `action` turns it on the wire (pure, for the transports)."""
    if action is LinkAction.CRC_ERROR:
        return frame[:-2] + bytes(b ^ 0xA5 for b in frame[-2:])
    if action is LinkAction.GARBAGE:
        return rng.randbytes(length)
    if action is LinkAction.WRONG_SLAVE:
        return with_crc(bytes((slave,)) + frame[1:-2])
    return frame


class RtuSlaveLine:
    """The slave side of one RS-485 line: every car of `group`, under ids 1..N."""

    def __init__(
        self,
        group: CarGroup,
        port: str,
        *,
        baud: int = 19200,
        fmt: SerialFormat | None = None,
        wire_timing: WireTiming | None = None,
        seed: int = 0,
    ) -> None:
        """Prepare to serve `group` on tty `port` at `baud` and `fmt` (default 8E1)."""
        self.group = group
        self.port = port
        self.baud = baud
        self.fmt = fmt or SerialFormat()
        self.wire_timing = wire_timing
        self.frames_dropped = 0  # bad CRC or no frame at all, for tests and logs
        self._rng = random.Random(seed)
        self._serial: Any = None  # serial.Serial, untyped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer = bytearray()
        self._silence: asyncio.TimerHandle | None = None
        self._pending: set[asyncio.TimerHandle] = set()
        self._out = bytearray()
        self._writing = False

    async def start(self) -> None:
        """Open the port and start answering; raises OSError when it cannot be opened."""
        self._loop = asyncio.get_running_loop()
        try:
            port = self._open(self.fmt.parity)
        except (serial.SerialException, ValueError, OSError) as exc:
            if self.fmt.parity == "N":
                raise OSError(f"cannot open serial port {self.port}: {exc}") from exc
            # Linux ptys may refuse PARENB (EINVAL); a pty carries no parity bits anyway, and
            # the character format still counts in the wire timing.
            try:
                port = self._open("N")
            except (serial.SerialException, ValueError, OSError):
                raise OSError(f"cannot open serial port {self.port}: {exc}") from exc
            log.warning(
                "%s refused parity %s (%s); opened without parity", self.port, self.fmt.parity, exc
            )
        self._serial = port
        self._loop.add_reader(port.fileno(), self._on_readable)
        log.info(
            "modbus rtu on %s at %d %s for %d cars%s",
            self.port,
            self.baud,
            self.fmt,
            len(self.group.cars),
            f", wire timing {self.wire_timing}" if self.wire_timing else "",
        )

    def _open(self, parity: str) -> Any:
        return serial.Serial(
            port=self.port,
            baudrate=self.baud,
            bytesize=self.fmt.data_bits,
            parity=parity,
            stopbits=self.fmt.stop_bits,
            timeout=0,
            write_timeout=0,
            exclusive=True,
        )

    async def stop(self) -> None:
        """Stop answering and close the port; answers not yet due are not sent."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._silence is not None:
            self._silence.cancel()
        port, self._serial = self._serial, None
        if port is not None and self._loop is not None:
            self._loop.remove_reader(port.fileno())
            if self._writing:
                self._loop.remove_writer(port.fileno())
            port.close()

    # --- receiving -------------------------------------------------------------------

    def _on_readable(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        port = self._serial
        if port is None:
            return
        try:
            data = port.read(READ_CHUNK)
        except (serial.SerialException, OSError) as exc:
            # The other end went away for good (socat ended, adapter unplugged); keep the
            # rest of the emulator serving rather than spin on a dead descriptor.
            log.error("serial port %s failed, no longer answering on it: %s", self.port, exc)
            self._loop.remove_reader(port.fileno())
            return
        if data:
            self.feed(data, now)

    def feed(self, data: bytes, now: float) -> None:
        """Take `data` that arrived at loop time `now`; answer every complete frame."""
        self._buffer += data
        while self._buffer:
            length = request_length(bytes(self._buffer[:7]))
            if length is None or length == 0:
                break
            if length > MAX_FRAME:
                self._drop("impossible length")
                break
            if len(self._buffer) < length:
                break
            frame = bytes(self._buffer[:length])
            if not crc_ok(frame):
                # A slave cannot resynchronise inside a damaged frame: drop all until silence.
                self._drop("bad CRC")
                break
            del self._buffer[:length]
            self._handle(frame, now)
        self._arm_silence()

    def _arm_silence(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self._buffer and self._loop is not None:
            gap = max(MIN_SILENCE_S, frame_gap_s(self.baud, self.fmt))
            self._silence = self._loop.call_later(gap, self._on_silence)

    def _on_silence(self) -> None:
        """The line fell silent: what is buffered is one whole frame, or noise."""
        assert self._loop is not None
        self._silence = None
        frame, self._buffer = bytes(self._buffer), bytearray()
        if MIN_FRAME <= len(frame) <= MAX_FRAME and crc_ok(frame):
            self._handle(frame, self._loop.time())  # e.g. a function code we do not know
        elif frame:
            self.frames_dropped += 1
            log.debug("dropped %d bytes that were no frame", len(frame))

    def _drop(self, why: str) -> None:
        self.frames_dropped += 1
        log.debug("dropped %d bytes: %s", len(self._buffer), why)
        self._buffer.clear()

    # --- answering -------------------------------------------------------------------

    def _handle(self, frame: bytes, now: float) -> None:
        request = parse_request(frame)
        if request is None or request.slave not in self.group.cars:
            return  # broadcast (0) or another device's id: not ours to answer
        self.group.advance_to(now)
        decision = self.group.links[request.slave].decide(now)
        if decision.action is LinkAction.SILENT:
            return
        if decision.action is LinkAction.EXCEPTION:
            reply = exception_frame(
                request.slave, request.function, ExceptionCode.SERVER_DEVICE_FAILURE
            )
        else:
            reply = answer(request, self.group.registers(request.slave))
            reply = corrupt(
                reply, decision.action, decision.slave, self._rng, decision.garbage_length
            )
        due = now + decision.delay_s
        if self.wire_timing is not None:
            due += self.wire_timing.answer_delay_s(len(frame), len(reply))
        self._schedule(due, reply)

    def _schedule(self, due: float, reply: bytes) -> None:
        assert self._loop is not None
        handle: asyncio.TimerHandle | None = None

        loop = self._loop

        def send() -> None:
            if handle is not None:
                self._pending.discard(handle)
            while loop.time() < due:
                pass  # the last fraction of a millisecond, waited out exactly
            self._send(reply)

        if due <= loop.time():
            send()
            return
        handle = loop.call_at(due - _SPIN_S, send)
        self._pending.add(handle)

    def _send(self, reply: bytes) -> None:
        self._out += reply
        self._flush()

    def _flush(self) -> None:
        port, loop = self._serial, self._loop
        if port is None or loop is None:
            return
        try:
            written = port.write(bytes(self._out)) or 0
        except serial.SerialTimeoutException:
            written = 0  # the tty buffer is full: finish when it drains
        except (serial.SerialException, OSError) as exc:
            log.error("serial port %s write failed: %s", self.port, exc)
            self._out.clear()
            written = 0
        del self._out[:written]
        want = bool(self._out)
        if want != self._writing:
            if want:
                loop.add_writer(port.fileno(), self._flush)
            else:
                loop.remove_writer(port.fileno())
            self._writing = want

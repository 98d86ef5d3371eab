"""A read-only Modbus link (TCP endpoint or RTU serial line), with failures sorted by kind.

Only the four read function codes are reachable from here (1 coils, 2 discrete inputs,
3 holding registers, 4 input registers): monitoring must never be able to move a car or
change its settings, so this module exposes no write at all, and a test checks it.

The pymodbus client is configured so that the scheduler owns every policy: no retries
unless configured, no automatic reconnect, and no closing of the connection after a run
of unanswered requests (pymodbus closes a TCP connection after retries+3 of them by
default; on a shared line one dead slave would blind every other car). RTU frames that
pymodbus drops silently (bad CRC, an answer from another slave id) would all look like
timeouts; the link watches the raw bytes of each request to tell them apart.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from time import monotonic
from typing import Any, Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.framer.rtu import FramerRTU

from agent.bus.plan import Read, Table
from agent.bus.wire import SerialFormat

# pymodbus logs every unanswered request at ERROR with a packet dump; on a line with a dead
# slave that floods a Pi's journal. The scheduler counts and logs failures itself.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# pymodbus compares its no-response counter against this; large enough to never trip.
_NEVER_CLOSE = 2**31


class LinkFault(enum.Enum):
    """Why a request got no usable answer; each kind is counted separately."""

    TIMEOUT = "timeout"
    CRC = "crc"  # bytes arrived but made no valid frame (garbled, CRC or framing error)
    WRONG_SLAVE = "wrong_slave"  # a valid frame, from another slave id
    EXCEPTION_RESPONSE = "exception_response"
    DISCONNECTED = "disconnected"
    MALFORMED = "malformed"  # a valid frame with the wrong contents (count, decode error)


class LinkError(Exception):
    """A request that got no usable answer."""

    def __init__(self, fault: LinkFault, detail: str) -> None:
        super().__init__(f"{fault.value}: {detail}")
        self.fault = fault


class ModbusLink(Protocol):
    """What the scheduler needs of a transport: one read at a time, and close."""

    @property
    def last_byte_at(self) -> float | None:
        """The `time.monotonic` instant the link last received anything (None if unknown,
        as on TCP): the RTU silence before the next request counts from it."""
        ...

    async def read(self, slave: int, read: Read) -> list[int]:
        """The items of ``read`` from ``slave`` (bits as 0/1); `LinkError` on failure."""
        ...

    def close(self) -> None:
        """Release the connection; a later read reconnects."""
        ...


@dataclass(frozen=True, slots=True)
class TcpEndpoint:
    """A Modbus TCP server or gateway."""

    host: str
    port: int
    timeout_s: float
    retries: int = 0


@dataclass(frozen=True, slots=True)
class SerialEndpoint:
    """A serial port carrying Modbus RTU."""

    device: str
    baudrate: int
    serial_format: SerialFormat
    timeout_s: float
    retries: int = 0


def classify_silence(received: Sequence[bytes], slave: int) -> LinkFault:
    """Why an RTU request got no accepted answer, from the bytes that did arrive.

    A frame with a valid CRC from another slave id is WRONG_SLAVE; any other bytes are
    CRC (garbled); nothing at all is TIMEOUT.
    """
    for data in received:
        for start in range(len(data)):
            length = _frame_length(data[start:])
            if length and data[start] != slave:
                frame = data[start : start + length]
                crc = frame[-2] << 8 | frame[-1]
                if FramerRTU.check_CRC(frame[:-2], crc):
                    return LinkFault.WRONG_SLAVE
    return LinkFault.CRC if any(received) else LinkFault.TIMEOUT


def _frame_length(data: bytes) -> int:
    # A read response (slave, function, byte count, data, CRC) or an exception (5 bytes).
    if len(data) < 5:
        return 0
    function = data[1]
    if function & 0x80 and function & 0x7F in (1, 2, 3, 4):
        return 5
    if function in (1, 2, 3, 4):
        length = 5 + data[2]
        return length if len(data) >= length else 0
    return 0


class PymodbusLink:
    """A pymodbus client restricted to the four read functions."""

    def __init__(self, client: Any, where: str) -> None:
        self._client = client
        self._where = where
        self._received: list[bytes] = []
        self.last_byte_at: float | None = None
        client.set_max_no_responses(_NEVER_CLOSE)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus calls this as each request leaves and as each chunk of bytes arrives,
        # from the loop's read callback: the arrival time is the closest the agent gets
        # to the end of a frame on the wire (never before it).
        if sending:
            self._received = []
        else:
            self.last_byte_at = monotonic()
            self._received.append(bytes(data))
        return data

    async def read(self, slave: int, read: Read) -> list[int]:
        """Read ``read`` from ``slave``; raise `LinkError` with the fault's kind."""
        if not self._client.connected:
            try:
                connected = await self._client.connect()
            except Exception as exc:  # OSError, ModbusException, termios.error, ...
                raise LinkError(LinkFault.DISCONNECTED, f"{self._where}: {exc!r}") from exc
            if not connected:
                raise LinkError(LinkFault.DISCONNECTED, f"cannot open {self._where}")
        call = _READ_CALLS[read.table]
        try:
            response = await getattr(self._client, call)(
                read.address, count=read.count, device_id=slave
            )
        except ConnectionException as exc:
            raise LinkError(LinkFault.DISCONNECTED, str(exc)) from exc
        except ModbusIOException as exc:
            if "device id" in str(exc):  # pymodbus's check of a TCP answer's unit id
                raise LinkError(LinkFault.WRONG_SLAVE, f"slave {slave}: {exc}") from exc
            fault = self._silence(slave)
            raise LinkError(fault, f"slave {slave} {read}: no valid answer") from exc
        except ModbusException as exc:
            raise LinkError(LinkFault.MALFORMED, f"slave {slave} {read}: {exc}") from exc
        if response.isError():
            raise LinkError(LinkFault.EXCEPTION_RESPONSE, f"slave {slave} {read}: {response}")
        items = (
            [int(b) for b in response.bits[: read.count]]
            if read.table.is_bits
            else list(response.registers)
        )
        if len(items) != read.count:
            raise LinkError(
                LinkFault.MALFORMED, f"slave {slave} {read}: {len(items)} items, asked {read.count}"
            )
        return items

    def _silence(self, slave: int) -> LinkFault:
        return LinkFault.TIMEOUT

    def close(self) -> None:
        """Close the connection; a later read reconnects."""
        self._client.close()


# The only client methods the agent ever calls: reads. tests/agent/test_bus_readonly.py
# asserts that nothing else is reachable.
_READ_CALLS = {
    Table.COIL: "read_coils",
    Table.DISCRETE_INPUT: "read_discrete_inputs",
    Table.HOLDING: "read_holding_registers",
    Table.INPUT: "read_input_registers",
}
READ_FUNCTIONS = frozenset(_READ_CALLS.values())


class ModbusTcpLink(PymodbusLink):
    """One Modbus TCP connection, shared by every slave behind that endpoint."""

    def __init__(self, endpoint: TcpEndpoint) -> None:
        self.endpoint = endpoint
        client = AsyncModbusTcpClient(
            endpoint.host,
            port=endpoint.port,
            timeout=endpoint.timeout_s,
            retries=endpoint.retries,
            reconnect_delay=0,  # reconnects are the scheduler's, visibly backed off
            # No trace_packet: TCP needs neither the raw bytes (its failures are told
            # apart by pymodbus) nor their arrival time (no silent interval), and the
            # hook costs a call and a copy per packet.
        )
        super().__init__(client, f"{endpoint.host}:{endpoint.port}")


class ModbusRtuLink(PymodbusLink):
    """One serial port carrying Modbus RTU, shared by every slave on the line."""

    def __init__(self, endpoint: SerialEndpoint) -> None:
        self.endpoint = endpoint
        fmt = endpoint.serial_format
        client = AsyncModbusSerialClient(
            endpoint.device,
            framer=FramerType.RTU,
            baudrate=endpoint.baudrate,
            bytesize=fmt.bytesize,
            parity=fmt.parity,
            stopbits=fmt.stopbits,
            timeout=endpoint.timeout_s,
            retries=endpoint.retries,
            reconnect_delay=0,
            trace_packet=self._trace_packet,
        )
        super().__init__(client, endpoint.device)

    def _silence(self, slave: int) -> LinkFault:
        return classify_silence(self._received, slave)

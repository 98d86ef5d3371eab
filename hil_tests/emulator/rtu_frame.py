"""Pure Modbus RTU framing for the slave side: CRC-16/Modbus, request parsing, answers.

No I/O here: `rtu.py` feeds received bytes in and writes what comes out. Requests are
parsed only as far as a slave must to find where a frame ends and whom it addresses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

MIN_FRAME = 4  # slave id, function code, CRC (2 bytes)
MAX_FRAME = 256  # the RTU limit on a whole frame
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000


class Function(enum.IntEnum):
    """The function codes this slave understands (all reads) or knows to refuse (writes)."""

    READ_COILS = 0x01
    READ_DISCRETE_INPUTS = 0x02
    READ_HOLDING_REGISTERS = 0x03
    READ_INPUT_REGISTERS = 0x04
    WRITE_SINGLE_COIL = 0x05
    WRITE_SINGLE_REGISTER = 0x06
    WRITE_MULTIPLE_COILS = 0x0F
    WRITE_MULTIPLE_REGISTERS = 0x10


READS = frozenset(
    {
        Function.READ_COILS,
        Function.READ_DISCRETE_INPUTS,
        Function.READ_HOLDING_REGISTERS,
        Function.READ_INPUT_REGISTERS,
    }
)
_FIXED_LENGTH = {0x01: 8, 0x02: 8, 0x03: 8, 0x04: 8, 0x05: 8, 0x06: 8}
_BYTE_COUNT_AT = {0x0F: 6, 0x10: 6}  # write-multiple: byte count field, then that many bytes


class ExceptionCode(enum.IntEnum):
    """Modbus exception codes this slave sends."""

    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """CRC-16/Modbus of `data` (polynomial 0xA001 reflected, initial 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(body: bytes) -> bytes:
    """`body` followed by its CRC, low byte first as RTU sends it."""
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes) -> bool:
    """True when `frame` is long enough and its last two bytes are the CRC of the rest."""
    return len(frame) >= MIN_FRAME and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def request_length(buffer: bytes) -> int | None:
    """Length of the request frame starting at `buffer[0]`, as far as its header tells.

    Returns 0 when more bytes are needed to tell, None for a function code whose request
    length this slave cannot know (such a frame ends only at the line's silence).
    """
    if len(buffer) < 2:
        return 0
    function = buffer[1]
    if function in _FIXED_LENGTH:
        return _FIXED_LENGTH[function]
    if function in _BYTE_COUNT_AT:
        at = _BYTE_COUNT_AT[function]
        if len(buffer) <= at:
            return 0
        return at + 1 + buffer[at] + 2
    return None


@dataclass(frozen=True)
class Request:
    """A request frame with a good CRC, decoded as far as a read needs."""

    slave: int
    function: int
    address: int
    count: int
    size: int  # bytes of the whole frame, CRC included

    @property
    def is_read(self) -> bool:
        """True for the four read function codes."""
        return self.function in READS


def parse_request(frame: bytes) -> Request | None:
    """Decode a complete frame; None when its CRC is bad (a slave drops such frames silently)."""
    if not crc_ok(frame):
        return None
    address = count = 0
    if frame[1] in READS and len(frame) == 8:
        address = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
    return Request(frame[0], frame[1], address, count, len(frame))


def exception_frame(slave: int, function: int, code: int) -> bytes:
    """An exception answer: function code with its high bit set, then the exception code."""
    return with_crc(bytes((slave, (function | 0x80) & 0xFF, code)))


def registers_frame(slave: int, function: int, registers: list[int]) -> bytes:
    """An answer to FC 0x03/0x04 carrying `registers` (each 0..0xFFFF)."""
    payload = b"".join(r.to_bytes(2, "big") for r in registers)
    return with_crc(bytes((slave, function, len(payload))) + payload)


def bits_frame(slave: int, function: int, bits: list[bool]) -> bytes:
    """An answer to FC 0x01/0x02 carrying `bits`, least significant bit first in each byte."""
    packed = bytearray((len(bits) + 7) // 8)
    for i, bit in enumerate(bits):
        if bit:
            packed[i // 8] |= 1 << (i % 8)
    return with_crc(bytes((slave, function, len(packed))) + bytes(packed))


def answer(request: Request, registers: list[int]) -> bytes:
    """The answer of a healthy, read-only slave whose whole map is `registers`.

    Holding (0x03) and input (0x04) registers both read the map. Coils (0x01) and discrete
    inputs (0x02) read its bits: bit address n is bit n % 16 of register n // 16, so the
    status words at registers 2 and 3 are bits 32..63. Writes get ILLEGAL_FUNCTION: the
    monitor must never be able to change a controller.
    """
    slave, function = request.slave, request.function
    if not request.is_read:
        return exception_frame(slave, function, ExceptionCode.ILLEGAL_FUNCTION)
    bitwise = function in (Function.READ_COILS, Function.READ_DISCRETE_INPUTS)
    limit = MAX_READ_BITS if bitwise else MAX_READ_REGISTERS
    if not 1 <= request.count <= limit:
        return exception_frame(slave, function, ExceptionCode.ILLEGAL_DATA_VALUE)
    size = 16 * len(registers) if bitwise else len(registers)
    if request.address + request.count > size:
        return exception_frame(slave, function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
    if bitwise:
        first = request.address
        bits = [
            bool(registers[n // 16] >> (n % 16) & 1) for n in range(first, first + request.count)
        ]
        return bits_frame(slave, function, bits)
    return registers_frame(
        slave, function, registers[request.address : request.address + request.count]
    )

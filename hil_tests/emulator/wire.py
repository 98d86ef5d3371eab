"""Serial character formats and the time Modbus RTU frames take on an RS-485 wire.

A character on the wire is 1 start bit + data bits + 1 parity bit (unless parity is N) +
stop bits: 11 bits for 8E1, 10 for 8N1. A slave only knows a request has ended after the
line stayed silent for 3.5 characters, and the master only knows the answer has ended after
another such silence (the Modbus serial line spec fixes that gap at 1.75 ms above 19200 baud,
where 3.5 characters would be too short for UARTs to time). So one transaction costs

    wire_time_s = (request_bytes + response_bytes) * bits_per_char / baud + 2 * gap

    gap = 3.5 * bits_per_char / baud    if baud <= 19200
        = 0.00175                       otherwise

Example: reading 16 registers (8 request bytes, 37 response bytes) at 19200 8E1 takes
45 * 11 / 19200 + 2 * 3.5 * 11 / 19200 = 29.8 ms; at 115200 8N1 it takes 7.4 ms.
Benchmarks use this for the physical limit of a bus. The emulator's `--wire-timing`
completes each answer `answer_delay_s` after the request's last byte arrived: the request,
the slave's end-of-request silence and the answer (`wire_time_s` less the trailing gap,
which is the master's to keep before its next request, as the agent's inter-frame delay
does; counting it here too would charge every transaction two gaps of silence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FIXED_GAP_ABOVE_BAUD = 19200
FIXED_GAP_S = 0.00175
GAP_CHARACTERS = 3.5
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)

_FORMAT = re.compile(r"^([5-8])([NEO])([12])$")


@dataclass(frozen=True)
class SerialFormat:
    """Data bits, parity (N, E or O) and stop bits of each character, e.g. 8E1."""

    data_bits: int = 8
    parity: str = "E"
    stop_bits: int = 1

    def __post_init__(self) -> None:
        if self.data_bits not in (5, 6, 7, 8):
            raise ValueError(f"data bits must be 5..8, got {self.data_bits}")
        if self.parity not in ("N", "E", "O"):
            raise ValueError(f"parity must be N, E or O, got {self.parity!r}")
        if self.stop_bits not in (1, 2):
            raise ValueError(f"stop bits must be 1 or 2, got {self.stop_bits}")

    @property
    def bits_per_char(self) -> int:
        """Bits one character occupies on the wire, start bit included."""
        return 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits

    def __str__(self) -> str:
        return f"{self.data_bits}{self.parity}{self.stop_bits}"


def parse_format(text: str) -> SerialFormat:
    """Parse `8E1`-style text (case-insensitive); ValueError says what is expected."""
    match = _FORMAT.match(text.strip().upper())
    if match is None:
        raise ValueError(f"serial format {text!r} is not DATA PARITY STOP such as 8E1 or 8N1")
    return SerialFormat(int(match[1]), match[2], int(match[3]))


def _as_format(fmt: SerialFormat | str) -> SerialFormat:
    return fmt if isinstance(fmt, SerialFormat) else parse_format(fmt)


def _check_baud(baud: int) -> None:
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud rate must be a positive integer, got {baud!r}")


def char_time_s(baud: int, fmt: SerialFormat | str) -> float:
    """Seconds one character takes at `baud` in format `fmt`."""
    _check_baud(baud)
    return _as_format(fmt).bits_per_char / baud


def frame_gap_s(baud: int, fmt: SerialFormat | str) -> float:
    """The silent interval that ends an RTU frame: 3.5 characters, 1.75 ms above 19200."""
    if baud > FIXED_GAP_ABOVE_BAUD:
        _check_baud(baud)
        return FIXED_GAP_S
    return GAP_CHARACTERS * char_time_s(baud, fmt)


def wire_time_s(
    request_bytes: int, response_bytes: int, baud: int, fmt: SerialFormat | str
) -> float:
    """Seconds from the start of a request to the end of its answer on the wire (see module doc).

    `fmt` is a `SerialFormat` or text such as "8E1". Raises ValueError on negative byte
    counts, a non-positive baud rate or a malformed format.
    """
    if request_bytes < 0 or response_bytes < 0:
        raise ValueError("byte counts cannot be negative")
    chars = request_bytes + response_bytes
    return chars * char_time_s(baud, fmt) + 2 * frame_gap_s(baud, fmt)


@dataclass(frozen=True)
class WireTiming:
    """A line speed to imitate: `--wire-timing 19200,8E1`."""

    baud: int
    fmt: SerialFormat

    def __post_init__(self) -> None:
        _check_baud(self.baud)

    def answer_delay_s(self, request_bytes: int, response_bytes: int) -> float:
        """When the answer's last byte is on the wire, from the request's first byte:
        `wire_time_s` less the trailing silence the master keeps before its next request."""
        return self.transaction_s(request_bytes, response_bytes) - frame_gap_s(self.baud, self.fmt)

    def transaction_s(self, request_bytes: int, response_bytes: int) -> float:
        """`wire_time_s` at this line speed."""
        return wire_time_s(request_bytes, response_bytes, self.baud, self.fmt)

    def __str__(self) -> str:
        return f"{self.baud},{self.fmt}"


def parse_wire_timing(text: str) -> WireTiming:
    """Parse `BAUD,FORMAT`, e.g. `19200,8E1`; ValueError says what is wrong."""
    baud_text, sep, fmt_text = text.partition(",")
    if not sep:
        raise ValueError(f"expected BAUD,FORMAT such as 19200,8E1, got {text!r}")
    return WireTiming(parse_baud(baud_text), parse_format(fmt_text))


def parse_baud(text: str) -> int:
    """Parse a baud rate: a positive integer (any value; real adapters take odd rates too)."""
    try:
        baud = int(text)
    except ValueError:
        raise ValueError(f"baud rate {text!r} is not an integer") from None
    if not 0 < baud <= 4_000_000:
        raise ValueError(f"baud rate {baud} is outside 1..4000000")
    return baud

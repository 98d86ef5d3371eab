"""Time on an RS-485 line: what one Modbus RTU transaction costs at a baud rate and format.

The formula (DESIGN.md, field notes): a character is 1 start bit, the data bits, a parity
bit unless parity is N, and the stop bits (11 bits for 8E1, 10 for 8N1). A frame is
preceded by a silent interval of 3.5 characters up to 19200 baud and a fixed 1.75 ms
above. A read of N registers is an 8-byte request and a 5 + 2N byte response; a read of
N bits answers with 5 + ceil(N / 8) bytes. One transaction is the request, the response
and the two silent intervals that separate them from their neighbours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

READ_REQUEST_BYTES = 8  # slave, function, address (2), count (2), CRC (2)
RESPONSE_OVERHEAD_BYTES = 5  # slave, function, byte count, CRC (2)
FAST_BAUD_GAP_S = 0.00175  # the standard's fixed silent interval above 19200 baud


class FormatError(ValueError):
    """A serial format string that is not like ``8E1``."""


@dataclass(frozen=True, slots=True)
class SerialFormat:
    """Character framing of a serial line: data bits, parity (N/E/O) and stop bits."""

    bytesize: int = 8
    parity: str = "E"
    stopbits: int = 1

    @classmethod
    def parse(cls, text: str) -> SerialFormat:
        """``"8E1"`` -> SerialFormat(8, "E", 1); raises `FormatError` saying what is wrong."""
        if len(text) != 3 or not text[0].isdigit() or not text[2].isdigit():
            raise FormatError(f"must look like 8E1 or 8N1, got {text!r}")
        bytesize, parity, stopbits = int(text[0]), text[1].upper(), int(text[2])
        if bytesize not in (7, 8):
            raise FormatError(f"data bits must be 7 or 8, got {bytesize} in {text!r}")
        if parity not in ("N", "E", "O"):
            raise FormatError(f"parity must be N, E or O, got {parity!r} in {text!r}")
        if stopbits not in (1, 2):
            raise FormatError(f"stop bits must be 1 or 2, got {stopbits} in {text!r}")
        return cls(bytesize, parity, stopbits)

    def __str__(self) -> str:
        return f"{self.bytesize}{self.parity}{self.stopbits}"

    @property
    def bits_per_char(self) -> int:
        """Bits on the wire per character, start bit included."""
        return 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits


def char_time_s(baud: int, fmt: SerialFormat) -> float:
    """Seconds one character occupies the line."""
    return fmt.bits_per_char / baud


def silent_interval_s(baud: int, fmt: SerialFormat) -> float:
    """The RTU inter-frame gap: 3.5 characters, but 1.75 ms above 19200 baud."""
    return 3.5 * char_time_s(baud, fmt) if baud <= 19200 else FAST_BAUD_GAP_S


def response_bytes(count: int, *, bits: bool) -> int:
    """Bytes of the answer to a read of ``count`` registers (or bits when ``bits``)."""
    data = math.ceil(count / 8) if bits else 2 * count
    return RESPONSE_OVERHEAD_BYTES + data


def transaction_time_s(count: int, baud: int, fmt: SerialFormat, *, bits: bool = False) -> float:
    """Wire time of one read of ``count`` registers (or bits): both frames and both gaps."""
    chars = READ_REQUEST_BYTES + response_bytes(count, bits=bits)
    return chars * char_time_s(baud, fmt) + 2 * silent_interval_s(baud, fmt)

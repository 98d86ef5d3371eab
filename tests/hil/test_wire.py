"""Wire timing formula and RTU framing, pure."""

from __future__ import annotations

import pytest

from hil_tests.emulator.rtu_frame import (
    answer,
    crc16,
    crc_ok,
    parse_request,
    request_length,
    with_crc,
)
from hil_tests.emulator.wire import (
    SerialFormat,
    frame_gap_s,
    parse_format,
    parse_wire_timing,
    wire_time_s,
)


def test_design_examples() -> None:
    # DESIGN.md: 16 registers at 19200 8E1 about 30 ms; at 115200 8N1 about 7 ms.
    assert wire_time_s(8, 37, 19200, "8E1") == pytest.approx(45 * 11 / 19200 + 7 * 11 / 19200)
    assert wire_time_s(8, 37, 19200, "8E1") == pytest.approx(0.0298, abs=1e-4)
    assert wire_time_s(8, 37, 115200, "8N1") == pytest.approx(45 * 10 / 115200 + 0.0035)


def test_gap_is_fixed_above_19200() -> None:
    assert frame_gap_s(38400, "8N1") == 0.00175
    assert frame_gap_s(9600, "8N1") == pytest.approx(3.5 * 10 / 9600)
    assert SerialFormat(7, "N", 2).bits_per_char == 10
    assert parse_format("8o1") == SerialFormat(8, "O", 1)


@pytest.mark.parametrize("text", ["8X1", "9N1", "8N3", "", "8N"])
def test_bad_formats_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="serial format"):
        parse_format(text)


def test_wire_timing_option() -> None:
    timing = parse_wire_timing("19200,8E1")
    assert (timing.baud, str(timing.fmt)) == (19200, "8E1")
    assert timing.transaction_s(8, 37) == wire_time_s(8, 37, 19200, "8E1")
    for bad in ("19200", "fast,8E1", "0,8E1", "19200,8Z1"):
        with pytest.raises(ValueError):
            parse_wire_timing(bad)
    with pytest.raises(ValueError):
        wire_time_s(-1, 0, 19200, "8E1")


def test_crc_matches_a_known_frame() -> None:
    # Read 10 holding registers from slave 1: a frame every Modbus manual prints.
    assert with_crc(bytes.fromhex("01030000000a")) == bytes.fromhex("01030000000ac5cd")
    assert crc16(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value
    assert crc_ok(bytes.fromhex("01030000000ac5cd"))
    assert not crc_ok(bytes.fromhex("01030000000ac5ce"))


def test_request_length_from_the_header() -> None:
    assert request_length(b"\x01") == 0
    assert request_length(b"\x01\x03") == 8
    assert request_length(b"\x01\x10\x00\x00\x00\x02") == 0
    assert request_length(b"\x01\x10\x00\x00\x00\x02\x04") == 13
    assert request_length(b"\x01\x2b") is None


def test_answers_of_a_read_only_slave() -> None:
    regs = [1, 2, 0b1000_0000_0000_0101, 0]
    read = parse_request(with_crc(bytes.fromhex("010300010002")))
    assert read is not None
    assert answer(read, regs) == with_crc(bytes.fromhex("0103040002") + bytes.fromhex("8005"))
    coils = parse_request(with_crc(bytes.fromhex("010100200003")))  # bits 32..34 = reg 2
    assert coils is not None and answer(coils, regs) == with_crc(bytes.fromhex("01010105"))
    beyond = parse_request(with_crc(bytes.fromhex("010300030002")))
    assert beyond is not None and answer(beyond, regs) == with_crc(bytes.fromhex("018302"))
    write = parse_request(with_crc(bytes.fromhex("010600010005")))
    assert write is not None and answer(write, regs) == with_crc(bytes.fromhex("018601"))
    assert parse_request(bytes.fromhex("01030000000ac5ce")) is None

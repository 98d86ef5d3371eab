"""A hostile regional platform against northbound forwarding (probe
``northbound_hostile_platform``).

A real HTTP server on loopback answers the fleet's POST with an endless body, or sends its
answer a byte at a time, never finishing, or asks to be left alone for ever (a Retry-After
of 400 digits: infinity, which the forwarder would wait out holding its lease). Each send
must end (RETRY or REJECTED, as the status says) having read a bounded part of the body,
within its ``timeout_s`` (the lease that fences a send assumes it is over by then,
docs/northbound.md; an endless body buffered whole would fill the fleet's memory), and
ask for no longer a wait than ``retry_max_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from fleet.northbound.config import PlatformConfig
from fleet.northbound.mapping import Rendered
from fleet.northbound.transport import (
    MAX_ANSWER_BYTES,
    REASON_CHARS,
    HttpTransport,
    Outcome,
    SendResult,
)
from tests.support import eventually

Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]
MESSAGE = Rendered("alarm", "key-1", "/alarms", "", {"unit": "U1"})


@contextlib.asynccontextmanager
async def platform(answer: Answer) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback HTTP server reading each request's head and body, then ``answer``-ing;
    yields its URL and, per connection, the bytes it managed to write before the client
    went away."""
    written: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        counter = _Counting(writer)
        try:
            await answer(counter)  # type: ignore[arg-type]
        except (ConnectionError, OSError):
            pass  # the fleet hung up: what this test wants
        finally:
            written.append(counter.count)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", written
    finally:
        server.close()
        await server.wait_closed()


class _Counting:
    """A StreamWriter that counts what it wrote."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += len(data)
        self._writer.write(data)

    async def drain(self) -> None:
        await self._writer.drain()


async def _endless_400(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    while True:  # about 1 GB a second on loopback, for ever
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()


async def _drip_200(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
    while True:  # one byte every 50 ms: every read comes well within httpx's timeout
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.05)


def _send(url: str, timeout_s: float) -> tuple[Outcome, str]:
    result = _result(url, timeout_s)
    return result.outcome, result.reason


def _result(url: str, timeout_s: float) -> SendResult:
    async def main_() -> SendResult:
        transport = HttpTransport(
            PlatformConfig(name="hostile", mapping="gbt24476", url=url, timeout_s=timeout_s)
        )
        try:
            return await transport.send(MESSAGE)
        finally:
            await transport.aclose()

    return asyncio.run(asyncio.wait_for(main_(), 60))


def test_an_endless_refusal_is_read_only_as_far_as_its_reason() -> None:
    async def main_() -> tuple[tuple[Outcome, str], list[int]]:
        async with platform(_endless_400) as (url, written):
            result = await asyncio.to_thread(_send, url, 20.0)
            # The handler records its count once the fleet hung up.
            await eventually(lambda: len(written), bool, "the platform's connection closed")
            return result, written

    (outcome, reason), written = asyncio.run(asyncio.wait_for(main_(), 90))
    assert outcome is Outcome.REJECTED
    assert reason.startswith("xxx") and len(reason) == REASON_CHARS
    # What the server got into the socket before the fleet hung up: the part read, and
    # what the kernel's buffers held; nowhere near the gigabytes an unbounded read takes.
    assert written[0] < MAX_ANSWER_BYTES + 64 * 1024 * 1024, written


def test_an_answer_dripping_a_byte_at_a_time_ends_at_timeout_s() -> None:
    async def main_() -> tuple[Outcome, str]:
        async with platform(_drip_200) as (url, _):
            return await asyncio.to_thread(_send, url, 1.0)

    outcome, reason = asyncio.run(asyncio.wait_for(main_(), 90))
    assert outcome is Outcome.RETRY
    assert reason == "no whole answer within 1 s"


async def _busy_for_ever(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 503 Busy\r\nRetry-After: " + b"9" * 400 + b"\r\nContent-Length: 0\r\n\r\n"
    )
    await writer.drain()


def test_a_retry_after_of_infinity_waits_at_most_retry_max_s() -> None:
    async def main_() -> SendResult:
        async with platform(_busy_for_ever) as (url, _):
            return await asyncio.to_thread(_result, url, 5.0)

    result = asyncio.run(asyncio.wait_for(main_(), 90))
    assert result.outcome is Outcome.RETRY and result.status == 503
    assert result.retry_after_s == PlatformConfig(name="p", mapping="m").retry_max_s

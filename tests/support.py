"""Test support shared by tests/ and hil_tests/.

`eventually` is the one way a test waits for something another task, thread or process
does: a condition polled against a deadline, never a sleep hoping a race is over. The test
goes on the moment the condition holds; the deadline only bounds how long a broken system
takes to fail, so it is generous (a loaded 2-core CI machine is slow, not wrong).

`LiveStream` (and `live_stream`) is the one client of the dashboard's live stream
(``/api/live``, server-sent events) that the tests read, hold or cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import pytest

from hil_tests.processes import Service

T = TypeVar("T")
# Long enough for real processes on a loaded machine; a healthy system is far quicker.
DEADLINE_S = 60.0


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = ...,
    what: str = ...,
    *,
    deadline_s: float = ...,
    interval_s: float = ...,
    watching: Sequence[Service] = ...,
    context: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    done: Callable[[T], object] = ...,
    what: str = ...,
    *,
    deadline_s: float = ...,
    interval_s: float = ...,
    watching: Sequence[Service] = ...,
    context: Callable[[], str] | None = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    done: Callable[[Any], object] = bool,
    what: str = "the condition",
    *,
    deadline_s: float = DEADLINE_S,
    interval_s: float = 0.05,
    watching: Sequence[Service] = (),
    context: Callable[[], str] | None = None,
) -> Any:
    """Call ``probe`` (a function or a coroutine function) until ``done(result)`` is true
    and return that result.

    Fails the test, naming ``what`` and the last result, once ``deadline_s`` has passed on
    the event loop's clock; at once if a process in ``watching`` has exited. The failure
    carries the log tails of ``watching`` and whatever ``context()`` says. A blocking probe
    (a database read) goes as ``lambda: asyncio.to_thread(read)``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        exited = [s.name for s in watching if s.process.returncode is not None]
        if exited:
            pytest.fail(f"{', '.join(exited)} exited while waiting for {what}{log_tails(watching)}")
        outcome = probe()
        result = await outcome if inspect.isawaitable(outcome) else outcome
        if done(result):
            return result
        if loop.time() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            pytest.fail(
                f"timed out after {deadline_s:g} s waiting for {what}; last: {result!r}"
                f"{log_tails(watching)}{extra}"
            )
        await asyncio.sleep(interval_s)


def log_tails(services: Sequence[Service]) -> str:
    """The last log lines of each of ``services``, under its name (for a failure message)."""
    return "".join(f"\n--- {s.name} ---\n{s.log_tail()}" for s in services)


def documented_defaults(docstring: str) -> dict[str, dict[str, Any]]:
    """The ``key = value`` lines of a config module's docs block, by ``[section]``.

    Array-of-tables sections (``[[bus]]``) and template sections (``[alarms.target.NAME]``)
    are keyed by their bare name; values that are not TOML (``...``) are left out, and a
    value spanning lines (an array) is read to its end. Used to check that every default
    the docs quote is the default the loader applies.
    """
    sections: dict[str, dict[str, Any]] = {}
    section: dict[str, Any] | None = None
    lines = [line.split("#", 1)[0].rstrip() for line in docstring.splitlines()]
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition(" = ")
        if section is None or not sep:
            continue
        for extra in range(4):
            try:
                section[key] = tomllib.loads(f"v = {value}")["v"]
                break
            except tomllib.TOMLDecodeError:
                if i + extra >= len(lines):
                    break
                value += " " + lines[i + extra].strip()
    return sections


@dataclass
class LiveStream:
    """A client's side of one ``text/event-stream`` request (the dashboard's live stream),
    spoken over a raw socket so a test can hold it open unread or cut it as it likes."""

    status: int
    headers: dict[str, str]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, http: str, path: str = "/api/live", *headers: str) -> LiveStream:
        """``GET path`` at ``http`` (host:port) with ``headers`` ("Name: value" lines) and
        the response's status line and headers read.

        On a 200 the hub has subscribed the stream (it does so before answering), so
        whatever is published from now on reaches it.
        """
        host, port = http.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        extra = "".join(f"{line}\r\n" for line in headers)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {http}\r\n{extra}"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        head: dict[str, str] = {}
        while line := (await reader.readline()).decode().strip():
            name, _, value = line.partition(":")
            head[name.strip().lower()] = value.strip()
        return cls(status, head, reader, writer)

    async def body(self) -> str:
        """The body of a refusal (a response with a Content-Length, not a stream)."""
        return (await self.reader.readexactly(int(self.headers["content-length"]))).decode()

    async def data(self, seen: list[str] | None = None, until: str | None = None) -> list[str]:
        """Append the payload of each ``data:`` line to ``seen`` (a new list if None) and
        return it once a payload contains ``until``, or when the stream ends.

        ``seen`` is filled as lines arrive, so a test may watch it while this runs in a task.
        """
        seen = [] if seen is None else seen
        while line := (await self.reader.readline()).decode():
            # Chunk-size lines and comments (": keepalive") are not data: skip them.
            if line.startswith("data: "):
                seen.append(line[6:].strip())
                if until is not None and until in seen[-1]:
                    break
        return seen

    def close(self) -> None:
        """Drop the connection (the server sees its client gone)."""
        self.writer.close()


@contextlib.asynccontextmanager
async def live_stream(
    http: str, path: str = "/api/live", *headers: str
) -> AsyncIterator[LiveStream]:
    """`LiveStream.open`, closed on leaving the block."""
    stream = await LiveStream.open(http, path, *headers)
    try:
        yield stream
    finally:
        stream.close()

"""Uploads and request bodies are bounded before they are read (issue 14, "Uploads"; the
probe ``upload_size_first``): a declared Content-Length over the limit is refused 413
before one byte of the body is sent, a chunked body is cut off with 413 once it passes the
limit, and the app never takes more than the limit."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from fleet.config import FleetConfig, StoreConfig
from fleet.web.http import BodyLimit, BodyLimits
from tests.fleet.harness import Fleet, running_fleet
from tests.security.conftest import District, with_timeout

CLAIMS = "/api/reports/claims"
CHUNK = 64 * 1024


async def _status(reader: asyncio.StreamReader) -> tuple[int, str]:
    status = int((await reader.readline()).split()[1])
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return status, (await reader.readexactly(length)).decode()


async def _post_head(fleet: Fleet, token: str, path: str, framing: str) -> Any:
    host, port = fleet.http.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {fleet.http}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: text/csv\r\n{framing}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


def test_a_declared_or_streamed_body_over_the_limit_is_refused_413(district: District) -> None:
    config = FleetConfig(store=StoreConfig(path=str(district.db)))

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            # 300 MB declared, nothing sent: answered at once.
            reader, writer = await _post_head(
                fleet, district.regulator_token, CLAIMS, "Content-Length: 300000000"
            )
            status, body = await with_timeout(_status(reader))
            writer.close()
            assert status == 413 and "max_upload_bytes" in body
            # Any other route takes a small JSON body only.
            reader, writer = await _post_head(
                fleet, district.regulator_token, "/auth/login", "Content-Length: 100000"
            )
            status, body = await with_timeout(_status(reader))
            writer.close()
            assert status == 413 and "max_body_bytes" in body

            # Chunked, no length declared: cut off once past 2 MiB.
            reader, writer = await _post_head(
                fleet, district.regulator_token, CLAIMS, "Transfer-Encoding: chunked"
            )
            answer = asyncio.create_task(_status(reader))
            sent = 0
            chunk = (
                f"{CHUNK:x}\r\n".encode()
                + b"U1,2026-01-01T00:00:00Z,X\n".ljust(CHUNK, b"#")
                + b"\r\n"
            )
            while not answer.done() and sent < 64 * 1024 * 1024:
                try:
                    writer.write(chunk)
                    await writer.drain()
                except (ConnectionError, OSError):
                    break
                sent += CHUNK
            status, body = await with_timeout(answer)
            writer.close()
            assert status == 413 and "max_upload_bytes" in body
            assert sent < 64 * 1024 * 1024  # refused long before the client gave up
            assert (
                fleet.metrics.value("liftwatch_fleet_bad_input_total", {"kind": "request_body"})
                == 3
            )

    asyncio.run(with_timeout(scenario(), 60))


def test_the_app_never_takes_more_than_the_limit_of_a_streamed_body() -> None:
    async def scenario() -> None:
        taken: list[int] = []
        pulled = 0
        answers: list[MutableMapping[str, Any]] = []
        refusals: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            while True:  # an app that reads whatever it is given
                message = await receive()
                if message["type"] != "http.request":
                    raise ConnectionError("client gone")
                taken.append(len(message["body"]))

        async def endless_body() -> dict[str, Any]:
            nonlocal pulled
            pulled += CHUNK
            return {"type": "http.request", "body": b"x" * CHUNK, "more_body": True}

        async def send(message: MutableMapping[str, Any]) -> None:
            answers.append(message)

        limited = BodyLimit(app, BodyLimits(body=1024, upload=256 * 1024), refusals.append)
        scope = {"type": "http", "path": CLAIMS, "headers": [], "method": "POST"}
        await with_timeout(limited(scope, endless_body, send))
        assert answers[0]["status"] == 413 and refusals == ["streamed"]
        # Read from the client: the limit plus the one chunk that passed it, no more.
        assert pulled == 256 * 1024 + CHUNK
        assert sum(taken) <= 256 * 1024

    asyncio.run(scenario())

"""A webhook send on its own (fleet.alarms.dispatch.send_webhook, on httpx): a receiver
that never answers fails the send within its bound instead of holding it, a redirect is
not taken for the receiver's 2xx, and a 2xx gets the signed body through. The whole
dispatch (retries with back-off, escalation) is tests/fleet/test_alarms.py's."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from fleet.alarms.config import TargetConfig
from fleet.alarms.dispatch import SIGNATURE_HEADER, TIMESTAMP_HEADER, send_webhook, signature
from fleet.store.base import AlarmRow

SECRET = "hook-secret"
ALARM = AlarmRow(
    alarm_id=7,
    unit_id="U1",
    event_id="e-1",
    agent_id="a1",
    type=1,
    floor=3,
    reason="",
    onset=None,
    raised=dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC),
    state="open",
)
BODY = b'{"alarm_id":7}'


async def receiver(
    reply: bytes | None, requests: list[bytes]
) -> tuple[asyncio.Server, TargetConfig]:
    """A local HTTP receiver answering every request with ``reply`` (None: never)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        requests.append(head + await reader.readexactly(length))
        if reply is None:
            await asyncio.Event().wait()  # holds the connection open, answers nothing
        writer.write(reply or b"")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, TargetConfig(
        "rescue", "webhook", url=f"http://127.0.0.1:{port}/hook", secret=SECRET
    )


def run_send(reply: bytes | None, timeout_s: float) -> tuple[Exception | None, list[bytes]]:
    requests: list[bytes] = []

    async def main() -> Exception | None:
        server, target = await receiver(reply, requests)
        try:
            # The outer bound only keeps a broken send from hanging the test run.
            await asyncio.wait_for(send_webhook(target, BODY, ALARM, timeout_s), 30)
        except RuntimeError as exc:
            return exc
        finally:
            server.close()
        return None

    return asyncio.run(main()), requests


def test_a_receiver_that_never_answers_fails_the_send_within_its_bound() -> None:
    failure, requests = run_send(None, timeout_s=0.5)
    assert len(requests) == 1
    assert failure is not None and "no answer within 0.5 s" in str(failure)


def test_a_redirect_is_not_taken_for_success() -> None:
    reply = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\n\r\n"
    failure, requests = run_send(reply, timeout_s=5)
    assert len(requests) == 1
    assert failure is not None and "HTTP 302" in str(failure)


@pytest.mark.parametrize("status", [200, 204])
def test_a_2xx_takes_the_signed_body(status: int) -> None:
    reply = f"HTTP/1.1 {status} OK\r\nContent-Length: 0\r\n\r\n".encode()
    failure, requests = run_send(reply, timeout_s=5)
    assert failure is None
    (request,) = requests
    head, body = request.split(b"\r\n\r\n", 1)
    headers = {
        k.strip().lower(): v.strip()
        for k, v in (line.split(":", 1) for line in head.decode().split("\r\n")[1:])
    }
    assert body == BODY
    assert head.startswith(b"POST /hook HTTP/1.1")
    stamp = headers[TIMESTAMP_HEADER.lower()]
    assert headers[SIGNATURE_HEADER.lower()] == signature(SECRET, stamp, BODY)
    assert headers["x-liftwatch-alarm"] == "7"

"""Sending one rendered message to a platform, and what its answer means for delivery.

Every send ends in one `Outcome`:

- ``DELIVERED``: the platform took it (HTTP 2xx; 409 too: the platform says it already
  holds a message with this idempotency key, i.e. an earlier send of it arrived; MQTT:
  the broker's PUBACK at QoS 1).
- ``REJECTED``: the platform refused *this message* (another 4xx: 400, 404, 413, 422 ...):
  it goes to the dead-letter list with the platform's reason; sending it again unchanged
  would be refused again.
- ``RETRY``: the platform cannot take anything now (no connection, a timeout, 5xx, 408,
  429; and 401/403, since a credential problem is the fleet's, not the record's): the
  same message is tried again after a back-off, or after the platform's Retry-After.

Authentication: ``token`` (``Authorization: Bearer`` over HTTP, the MQTT password over
MQTT), ``hmac`` (HTTP: ``X-LiftWatch-Signature: sha256=HEX`` over ``TIMESTAMP.BODY`` with
``X-LiftWatch-Timestamp``, the same scheme as the rescue webhooks,
`fleet.alarms.dispatch.signature`), ``mtls`` (a client certificate and key; ``ca`` is the
platform's CA, else the system's). Each HTTP request carries ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import enum
import json
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from fleet.alarms.dispatch import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from fleet.northbound.config import PlatformConfig
from fleet.northbound.mapping import Rendered

KEY_HEADER = "Idempotency-Key"
# The longest reason kept of a platform's refusal (its body, else its status line).
REASON_CHARS = 500
# The most of an HTTP answer's body read (enough for a JSON reason): a platform answering
# with an endless body must not fill the fleet's memory.
MAX_ANSWER_BYTES = 64 * 1024
# Statuses that say "not now" rather than "not this message".
RETRY_STATUSES = frozenset({401, 403, 408, 425, 429})


class Outcome(enum.Enum):
    """What a send came to (see the module docstring)."""

    DELIVERED = "delivered"
    REJECTED = "rejected"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class SendResult:
    """A send's outcome, the HTTP status (None for MQTT or no answer), the platform's
    reason (or the error), and the seconds it asked us to wait (Retry-After), if any."""

    outcome: Outcome
    status: int | None
    reason: str
    retry_after_s: float | None = None


class Transport(Protocol):
    """Sends rendered messages to one platform."""

    async def send(self, message: Rendered) -> SendResult:
        """Send ``message`` once; never raises for a platform's or network's failure."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...


def client_tls(platform: PlatformConfig) -> ssl.SSLContext:
    """The TLS context for the platform: its CA (else the system's), and with
    ``auth = "mtls"`` our client certificate."""
    context = ssl.create_default_context(cafile=str(platform.ca) if platform.ca else None)
    if platform.auth == "mtls":
        assert platform.cert is not None and platform.key is not None
        context.load_cert_chain(str(platform.cert), str(platform.key))
    return context


def _secret(path: Path | None) -> str:
    assert path is not None
    return path.read_text().strip()


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date; None when
    absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class _Answer:
    """What the forwarder reads of an HTTP answer: its status, Retry-After and at most
    `MAX_ANSWER_BYTES` of its body."""

    status: int
    phrase: str
    retry_after: str | None
    text: str


async def _answer_of(response: httpx.Response) -> _Answer:
    """``response``'s `_Answer`, reading no more than `MAX_ANSWER_BYTES` of its body (raw:
    an encoded body is not inflated)."""
    head = bytearray()
    async for chunk in response.aiter_raw():
        head += chunk[: MAX_ANSWER_BYTES - len(head)]
        if len(head) >= MAX_ANSWER_BYTES:
            break
    return _Answer(
        response.status_code,
        response.reason_phrase,
        response.headers.get("Retry-After"),
        head.decode("utf-8", errors="replace"),
    )


def _reason(response: _Answer) -> str:
    text = response.text.strip()
    with contextlib.suppress(ValueError):
        parsed: Any = json.loads(text)
        if isinstance(parsed, dict):
            for key in ("reason", "message", "msg", "error", "detail"):
                if isinstance(parsed.get(key), str):
                    text = parsed[key]
                    break
    return (text or f"HTTP {response.status} {response.phrase}")[:REASON_CHARS]


class HttpTransport:
    """HTTP(S) JSON push: one POST per message to ``url + path``, on a kept-alive client."""

    def __init__(self, platform: PlatformConfig) -> None:
        self._platform = platform
        self._base = platform.url.rstrip("/")
        self._token = _secret(platform.token_file) if platform.auth == "token" else ""
        self._hmac = _secret(platform.secret_file) if platform.auth == "hmac" else ""
        verify: ssl.SSLContext | bool = (
            client_tls(platform) if self._base.startswith("https://") else True
        )
        self._client = httpx.AsyncClient(
            timeout=platform.timeout_s, verify=verify, follow_redirects=False
        )

    async def send(self, message: Rendered) -> SendResult:
        """POST ``message``; see `Outcome` for how the answer is read."""
        body = message.encoded()
        headers = {"Content-Type": "application/json; charset=utf-8", KEY_HEADER: message.key}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if self._hmac:
            stamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = signature(self._hmac, stamp, body)
        # The answer is read raw (not inflated), so no compressed body is asked for.
        headers["Accept-Encoding"] = "identity"
        try:
            # The whole exchange within timeout_s (httpx's timeout is per read: a platform
            # sending a byte at a time would hold the send, and the lease that fences it,
            # for ever), and never more of the body than the reason needs.
            async with asyncio.timeout(self._platform.timeout_s):
                async with self._client.stream(
                    "POST", self._base + message.path, content=body, headers=headers
                ) as streamed:
                    response = await _answer_of(streamed)
        except TimeoutError:
            return SendResult(
                Outcome.RETRY, None, f"no whole answer within {self._platform.timeout_s:g} s"
            )
        except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
            # ssl.SSLError: under TLS 1.3 a refused client certificate arrives as an alert
            # after the handshake, which httpx may pass on unwrapped.
            return SendResult(Outcome.RETRY, None, f"{type(exc).__name__}: {exc}"[:REASON_CHARS])
        status = response.status
        if 200 <= status < 300 or status == 409:
            return SendResult(Outcome.DELIVERED, status, "")
        wait = retry_after(response.retry_after)
        if wait is not None:
            # At most retry_max_s: a Retry-After of a year (or of 400 digits, infinity)
            # would stop the forwarder for that long, holding its lease.
            wait = min(wait, self._platform.retry_max_s)
        if status >= 500 or status in RETRY_STATUSES:
            return SendResult(Outcome.RETRY, status, _reason(response), wait)
        return SendResult(Outcome.REJECTED, status, _reason(response))

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        await self._client.aclose()


class MqttTransport:
    """MQTT: a QoS 1 publish per message to the mapping's topic, on one connection that
    is opened again after a failure. A PUBACK is delivery: MQTT 3.1.1 has no way for the
    platform to refuse one message, so an MQTT platform never dead-letters."""

    def __init__(self, platform: PlatformConfig) -> None:
        self._platform = platform
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def _connect(self) -> Any:
        import aiomqtt  # the `mqtt` extra, needed only with an mqtt platform

        p = self._platform
        password = _secret(p.token_file) if p.auth == "token" else None
        tls = client_tls(p) if p.auth == "mtls" or p.ca is not None else None
        client = aiomqtt.Client(
            p.host,
            p.port,
            username=p.username or None,
            password=password,
            tls_context=tls,
            identifier=f"liftwatch-{p.source_id}-{p.name}",
            timeout=p.timeout_s,
        )
        await self._stack.enter_async_context(client)
        return client

    async def send(self, message: Rendered) -> SendResult:
        """Publish ``message`` at QoS 1 and wait for the PUBACK."""
        try:
            import aiomqtt
        except ImportError:
            return SendResult(
                Outcome.RETRY, None, "the mqtt transport needs aiomqtt (liftwatch[mqtt])"
            )
        try:
            if self._client is None:
                self._client = await asyncio.wait_for(self._connect(), self._platform.timeout_s)
            await asyncio.wait_for(
                self._client.publish(message.topic, message.encoded(), qos=1),
                self._platform.timeout_s,
            )
        except (aiomqtt.MqttError, TimeoutError, OSError) as exc:
            await self._drop()
            return SendResult(
                Outcome.RETRY,
                None,
                f"mqtt {self._platform.host}:{self._platform.port}: {exc or type(exc).__name__}",
            )
        return SendResult(Outcome.DELIVERED, None, "")

    async def _drop(self) -> None:
        self._client = None
        stack, self._stack = self._stack, contextlib.AsyncExitStack()
        with contextlib.suppress(Exception):
            await stack.aclose()

    async def aclose(self) -> None:
        """Disconnect."""
        await self._drop()


def open_transport(platform: PlatformConfig) -> Transport:
    """The transport ``platform.transport`` names."""
    if platform.transport == "mqtt":
        return MqttTransport(platform)
    return HttpTransport(platform)

"""uvicorn on the serve event loop: the JSON API beside the grpc.aio server, over HTTPS
when ``[http] cert`` and ``key`` are set (checked here, before the ready line).

The socket is bound here, before the ready line is printed, so that port 0 works and a
client that connects at once is queued by the kernel rather than refused. serve owns the
signals; uvicorn must not install its own handlers over them.

A client that stops reading cannot hold a connection for ever: the kernel closes one
whose data has waited `STALLED_CONNECTION_S` (TCP_USER_TIMEOUT, Linux).

Every request body is bounded before it is read (`BodyLimit`): a declared Content-Length
over the limit is answered 413 at once, and a chunked body is cut off with 413 as soon as
more than the limit has come; the app never holds more than the limit (uvicorn itself
buffers at most 64 KiB ahead of the app). Uploads (`UPLOAD_PATHS`) get
``[http] max_upload_bytes``, every other request ``[http] max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleet.config import split_listen

log = logging.getLogger(__name__)


class HttpBindError(Exception):
    """The HTTP listen address cannot be bound, or its certificate not used."""


def check_certificate(cert: Path, key: Path) -> None:
    """Raise `HttpBindError` naming ``http.cert``/``http.key`` when they cannot serve TLS
    (uvicorn would only fail inside its task, after the fleet said it was ready)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise HttpBindError(f"http.cert/http.key: cannot read {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise HttpBindError(
            f"http.cert/http.key: {cert} and {key} are no PEM certificate and matching "
            f"unencrypted key ({exc})"
        ) from None


# A connection whose sent data stays unacknowledged, or unsent behind a zero window (a
# client that stopped reading), this long is closed by the kernel (TCP_USER_TIMEOUT). The
# app drops such a live stream sooner ([http] live_send_timeout_s), but the response's
# last bytes would otherwise hold the socket and its send buffer (megabytes) for ever.
STALLED_CONNECTION_S = 60.0

# The routes that take an upload (a file's worth of CSV), not a small JSON body.
# Maintenance records too: their own bound (fleet.web.maintenance.MAX_RECORDS_BYTES, 2 MB)
# was unreachable behind max_body_bytes (64 kB, about 1,500 records).
UPLOAD_PATHS = frozenset({"/api/reports/claims", "/api/maintenance/records"})


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """The longest request body: ``upload`` on `UPLOAD_PATHS`, ``body`` elsewhere (bytes;
    the ``[http] max_body_bytes`` and ``max_upload_bytes`` keys)."""

    body: int = 65536
    upload: int = 2 * 1024 * 1024


class BodyLimit:
    """ASGI middleware: a request body over its `BodyLimits` is refused with 413 before the
    app reads it, by its declared Content-Length or, streamed (chunked), as soon as the
    limit is passed; a Content-Length that is no number is refused with 400.
    ``refused(kind)`` is told of each refusal ("declared", "streamed", "bad_length")."""

    def __init__(
        self,
        app: ASGIApp,
        limits: BodyLimits,
        refused: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._app = app
        self._limits = limits
        self._refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body bounded (see the class)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        upload = path in UPLOAD_PATHS
        limit = self._limits.upload if upload else self._limits.body
        key = "http.max_upload_bytes" if upload else "http.max_body_bytes"
        declared = _content_length(scope)
        if declared is not None:
            # ASCII digits only: int() would take "²" or " 1_0 " too.
            if not (declared.isascii() and declared.isdigit()):
                self._refused("bad_length")
                await _answer(send, 400, f"Content-Length: expected a byte count, got {declared!r}")
                return
            if int(declared) > limit:
                self._refused("declared")
                await _answer(send, 413, f"body: at most {limit} bytes for {path} ({key})")
                return
        received = 0
        answered = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    answered = True
                    self._refused("streamed")
                    if not started:
                        await _answer(send, 413, f"body: at most {limit} bytes for {path} ({key})")
                    # To the app, the client has gone: it stops reading and answers nobody.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # we answered already; the app's late reply goes nowhere
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, bounded_receive, guarded_send)
        except Exception:
            if not answered:
                raise
            # The app saw a disconnect mid-body (starlette's ClientDisconnect): expected.


def _content_length(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return bytes(value).decode("latin-1").strip()
    return None


async def _answer(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is not read: this connection cannot carry another
                # request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _LoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve's handlers stay in charge of SIGTERM / SIGINT


def bind(listen: str, stalled_after_s: float = STALLED_CONNECTION_S) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the kernel picks), whose
    connections the kernel closes once their data has waited ``stalled_after_s``."""
    host, port = split_listen(listen)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise HttpBindError(f"cannot listen on {listen} (http): {exc.strerror or exc}") from None
    if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; accepted connections inherit it
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(stalled_after_s * 1000))
    return sock


@contextlib.asynccontextmanager
async def running_http(
    app: ASGIApp,
    listen: str,
    cert: Path | None = None,
    key: Path | None = None,
    body_limits: BodyLimits | None = None,
    refused: Callable[[str], None] = lambda kind: None,
) -> AsyncIterator[str]:
    """Serve ``app`` on ``listen`` for the block (HTTPS with ``cert`` and ``key``), every
    request body bounded by ``body_limits`` (`BodyLimit`; ``refused`` is told of each
    refusal); yields the bound ``host:port``."""
    if cert is not None and key is not None:
        check_certificate(cert, key)
    sock = bind(listen)
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = uvicorn.Config(
        BodyLimit(app, body_limits or BodyLimits(), refused),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    server = _LoopServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="http")
    try:
        yield address
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()

"""uvicorn on the serve event loop: the JSON API beside the grpc.aio server, over HTTPS
when ``[http] cert`` and ``key`` are set (checked here, before the ready line).

The socket is bound here, before the ready line is printed, so that port 0 works and a
client that connects at once is queued by the kernel rather than refused. serve owns the
signals; uvicorn must not install its own handlers over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

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


class _LoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # serve's handlers stay in charge of SIGTERM / SIGINT


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: the kernel picks)."""
    host, port = split_listen(listen)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as exc:
        raise HttpBindError(f"cannot listen on {listen} (http): {exc.strerror or exc}") from None


@contextlib.asynccontextmanager
async def running_http(
    app: ASGIApp, listen: str, cert: Path | None = None, key: Path | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` on ``listen`` for the block (HTTPS with ``cert`` and ``key``); yields
    the bound ``host:port``."""
    if cert is not None and key is not None:
        check_certificate(cert, key)
    sock = bind(listen)
    host, port = sock.getsockname()[:2]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config = uvicorn.Config(
        app,
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

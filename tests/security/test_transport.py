"""Item 2 of issue 14: no plaintext beyond this machine unless a person asks for it, and
HTTPS from the fleet itself. Real `fleet.serve.server.serve` runs on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from fleet.cli.main import main
from fleet.config import FleetConfig, HttpConfig, QueryConfig, ServerConfig, StoreConfig, TlsConfig
from fleet.ingest.access import is_loopback, plaintext_problems
from fleet.serve.server import ServeError, serve
from tests.fleet.test_tls import Pki

MEMORY_STORE = StoreConfig(path=":memory:")


def _config(grpc: str, query: str = "", http: str = "", **tls: Any) -> FleetConfig:
    return FleetConfig(
        server=ServerConfig(listen=grpc),
        query=QueryConfig(listen=query),
        http=HttpConfig(listen=http),
        store=MEMORY_STORE,
        tls=TlsConfig(**tls),
    )


@contextlib.asynccontextmanager
async def serving(config: FleetConfig) -> AsyncIterator[Mapping[str, str]]:
    """Serve ``config`` for the block; yields the bound addresses."""
    bound: asyncio.Future[Mapping[str, str]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, bound.set_result))
    waiters: set[asyncio.Future[Any]] = {task, bound}
    done, _ = await asyncio.wait(waiters, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    assert bound in done, f"server did not start: {task.exception() if task.done() else 'timeout'}"
    try:
        yield bound.result()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (_config("0.0.0.0:0"), "server.listen"),
        (_config("127.0.0.1:0", query="0.0.0.0:0"), "query.listen"),
        (_config("127.0.0.1:0", http="[::]:0"), "http.listen"),
        (_config("fleet.example.gov.cn:0"), "server.listen"),
        (
            dataclasses.replace(
                _config("127.0.0.1:0", cert=Path("s.pem"), key=Path("s.key"), client_ca=Path("c")),
                query=QueryConfig(listen="0.0.0.0:0", auth=False),
            ),
            "query.auth",
        ),
    ],
)
def test_plaintext_on_a_non_loopback_address_is_refused(config: FleetConfig, key: str) -> None:
    with pytest.raises(ServeError) as refused:
        asyncio.run(serve(config))
    message = str(refused.value)
    assert message.startswith(f"{key} = ")
    assert "tls.plaintext = true" in message and "serve --insecure-plaintext" in message


def test_the_cli_refuses_too_naming_the_key(capsys: Any) -> None:
    args = ["serve", "--db", ":memory:", "--listen", "0.0.0.0:0", "--http", "", "--query", ""]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("liftwatch-fleet: error: server.listen = '0.0.0.0:0' would serve")


def test_loopback_needs_no_flag_and_the_flag_warns_at_every_start(caplog: Any) -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "[::1]", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "[::]", "10.1.2.3", "fleet.local")] == [False] * 4
    assert plaintext_problems(_config("127.0.0.1:0", "127.0.0.1:0", "localhost:0")) == []

    async def start_twice() -> None:
        flagged = _config("0.0.0.0:0", plaintext=True)
        for _ in range(2):
            async with serving(flagged) as addresses:
                assert addresses["grpc"].startswith("0.0.0.0:")

    with caplog.at_level(logging.WARNING, logger="fleet.serve.server"):
        asyncio.run(start_twice())
    warnings = [r.getMessage() for r in caplog.records if "tls.plaintext = true" in r.getMessage()]
    assert len(warnings) == 2


def _get(url: str, context: ssl.SSLContext | None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=context) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_https_from_http_cert_and_key(pki: Pki, tmp_path: Path) -> None:
    config = dataclasses.replace(
        _config("127.0.0.1:0", http="127.0.0.1:0"),
        tls=pki.tls,
        http=HttpConfig(
            listen="127.0.0.1:0", cert=pki.dir / "server.pem", key=pki.dir / "server.key"
        ),
    )
    trusting = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))

    async def scenario() -> None:
        async with serving(config) as addresses:
            port = addresses["http"].rpartition(":")[2]
            url = f"https://localhost:{port}/api/openapi.json"
            status, body = await asyncio.to_thread(_get, url, trusting)
            assert status == 200 and body["openapi"].startswith("3.")
            # Plain HTTP to the HTTPS port gets no answer from the API.
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/api/openapi.json", None)

    asyncio.run(scenario())

    broken = dataclasses.replace(
        config, http=dataclasses.replace(config.http, key=pki.dir / "agents" / "edge-1.key")
    )
    with pytest.raises(ServeError, match=r"http\.cert/http\.key: .* no PEM certificate"):
        asyncio.run(serve(broken))

"""Cookies and headers: every response (page, API, static file, /metrics, errors) carries
the security headers; HSTS and the cookie's Secure flag follow the configuration (the
server's HTTPS, or ``[http] secure_cookies = true`` behind a proxy), never the Host
header; /metrics can move to a listener of its own and ask for a token."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fleet.config import FleetConfig, HttpConfig, QueryConfig, ServerConfig, StoreConfig
from fleet.serve.server import ServeError, serve
from fleet.web.headers import SECURITY_HEADERS
from tests.fleet.test_tls import Pki
from tests.security.conftest import District
from tests.security.test_transport import serving

PATHS = (
    "/",
    "/static/app.js",
    "/api/openapi.json",
    "/api/units",  # 401 without a login
    "/api/events?limit=%C2%B2",  # 401 before the 400: no login
    "/metrics",
    "/no/such/page",  # 404
)
HSTS = "strict-transport-security"


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes


def _send(
    url: str,
    context: ssl.SSLContext | None = None,
    *,
    body: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        reply = urllib.request.urlopen(request, timeout=10, context=context)
    except urllib.error.HTTPError as exc:
        reply = exc
    with reply:
        return Reply(
            reply.status,
            {k.lower(): v for k, v in reply.headers.items()},
            reply.headers.get_all("Set-Cookie") or [],
            reply.read(),
        )


def _config(district: District, **http: Any) -> FleetConfig:
    return FleetConfig(
        server=ServerConfig(listen="127.0.0.1:0"),
        query=QueryConfig(listen=""),
        http=dataclasses.replace(HttpConfig(listen="127.0.0.1:0"), **http),
        store=StoreConfig(path=str(district.db)),
    )


def _login(base: str, context: ssl.SSLContext | None = None, host: str = "") -> Reply:
    return _send(
        f"{base}/auth/login",
        context,
        body={"username": "reg", "password": "correct horse battery"},
        headers={"Host": host} if host else None,
    )


def _check_every_path(base: str, context: ssl.SSLContext | None, hsts: bool) -> list[str]:
    """What is missing, per path ("" when all is there)."""
    missing = []
    for path in PATHS:
        reply = _send(f"{base}{path}", context)
        absent = [
            name.decode() for name, _ in SECURITY_HEADERS if name.decode() not in reply.headers
        ]
        if (HSTS in reply.headers) != hsts:
            absent.append(HSTS if hsts else f"no {HSTS}")
        if absent:
            missing.append(f"{path} ({reply.status}): {absent}")
    return missing


def test_plain_http_every_response_has_the_headers_and_no_hsts(district: District) -> None:
    async def main_() -> tuple[list[str], Reply, Reply, str]:
        async with serving(_config(district)) as addresses:
            base = f"http://{addresses['http']}"
            missing = await asyncio.to_thread(_check_every_path, base, None, False)
            plain = await asyncio.to_thread(_login, base)
            # A Host header naming a real site changes nothing.
            hosted = await asyncio.to_thread(_login, base, None, "fleet.example.org")
            page = await asyncio.to_thread(_send, f"{base}/")
            return missing, plain, hosted, page.headers["content-security-policy"]

    missing, plain, hosted, page_csp = asyncio.run(main_())
    assert missing == []
    assert plain.status == hosted.status == 200
    assert not any("Secure" in c for c in plain.cookies + hosted.cookies)
    # The page keeps its own policy (it loads its scripts); everything else allows nothing.
    assert "script-src 'self'" in page_csp


def test_https_sends_hsts_and_secure_cookies(pki: Pki, district: District) -> None:
    config = _config(district, cert=pki.dir / "server.pem", key=pki.dir / "server.key")
    trusting = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))

    async def main_() -> tuple[list[str], Reply]:
        async with serving(config) as addresses:
            base = f"https://localhost:{addresses['http'].rpartition(':')[2]}"
            missing = await asyncio.to_thread(_check_every_path, base, trusting, True)
            return missing, await asyncio.to_thread(_login, base, trusting)

    missing, login = asyncio.run(main_())
    assert missing == []
    (cookie,) = login.cookies
    assert "Secure" in cookie and "HttpOnly" in cookie
    assert "max-age=31536000" in login.headers[HSTS]


def test_behind_a_tls_proxy_the_configuration_says_https(district: District) -> None:
    config = _config(district, secure_cookies=True, hsts_max_age_s=600)

    async def main_() -> tuple[list[str], Reply]:
        async with serving(config) as addresses:
            base = f"http://{addresses['http']}"
            missing = await asyncio.to_thread(_check_every_path, base, None, True)
            return missing, await asyncio.to_thread(_login, base)

    missing, login = asyncio.run(main_())
    assert missing == []
    assert "Secure" in login.cookies[0]
    assert login.headers[HSTS] == "max-age=600; includeSubDomains"


def test_metrics_on_its_own_listener_with_a_token(district: District, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text("s3cret-metrics-token\n", encoding="utf-8")
    config = _config(district, metrics_listen="127.0.0.1:0", metrics_token_file=token_file)

    async def main_() -> tuple[Reply, Reply, Reply, Reply]:
        async with serving(config) as addresses:
            metrics = f"http://{addresses['metrics']}/metrics"
            return (
                await asyncio.to_thread(_send, metrics),
                await asyncio.to_thread(_send, metrics, headers={"Authorization": "Bearer wrong"}),
                await asyncio.to_thread(
                    _send, metrics, headers={"Authorization": "Bearer s3cret-metrics-token"}
                ),
                await asyncio.to_thread(_send, f"http://{addresses['http']}/metrics"),
            )

    anonymous, wrong, right, on_api_port = asyncio.run(main_())
    assert anonymous.status == wrong.status == 401
    assert b"metrics_token_file" in anonymous.body
    assert right.status == 200 and b"liftwatch_fleet_frames_total" in right.body
    assert "x-content-type-options" in right.headers
    assert on_api_port.status in (401, 404)  # not served there (the SPA's auth may answer)
    assert b"liftwatch_fleet" not in on_api_port.body


@pytest.mark.parametrize(
    ("text", "why"), [("", "must hold one token"), ("two words", "must hold one token")]
)
def test_an_unusable_metrics_token_file_stops_serve(
    district: District, tmp_path: Path, text: str, why: str
) -> None:
    token_file = tmp_path / "metrics.token"
    token_file.write_text(text, encoding="utf-8")
    with pytest.raises(ServeError, match=rf"http\.metrics_token_file: .*{why}"):
        asyncio.run(serve(_config(district, metrics_token_file=token_file)))


def test_metrics_listen_beyond_loopback_needs_tls(district: District) -> None:
    with pytest.raises(ServeError, match=r"http\.metrics_listen"):
        asyncio.run(serve(_config(district, metrics_listen="0.0.0.0:0")))

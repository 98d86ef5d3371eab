"""Security headers on every HTTP response: pages, the JSON API, static files, /metrics,
errors included.

A route that sets one of these headers itself keeps its own (the dashboard page sends its
Content-Security-Policy, which lets it load its scripts); everything else gets a policy
that allows nothing, fit for JSON, CSV and the event stream. HSTS goes out while the site
is HTTPS (`fleet.config.HttpConfig.https_site`): from this server's TLS, or a proxy's.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def security_headers(hsts_max_age_s: int) -> tuple[tuple[bytes, bytes], ...]:
    """The headers every response carries; HSTS with ``hsts_max_age_s`` > 0."""
    if hsts_max_age_s <= 0:
        return SECURITY_HEADERS
    hsts = f"max-age={hsts_max_age_s}; includeSubDomains".encode()
    return (*SECURITY_HEADERS, (b"strict-transport-security", hsts))


class SecurityHeaders:
    """ASGI middleware adding `security_headers` to every HTTP response ``app`` sends
    (a header the response already has is left as it is)."""

    def __init__(self, app: ASGIApp, hsts_max_age_s: int = 0) -> None:
        self.app = app
        self.headers = security_headers(hsts_max_age_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)

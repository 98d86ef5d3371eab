"""Who is asking: sessions (the dashboard) and API tokens (scripts), and what they may do.

A browser logs in with ``POST /auth/login`` (JSON ``{"username", "password"}``) and gets
the session cookie ``lw_session`` (HttpOnly, SameSite=Strict, Secure when the site is
HTTPS by configuration: ``[http] secure_cookies``) and the session's CSRF token in the
body. Every state-changing request made with the cookie must carry that token in
``X-CSRF-Token``; the cookie alone (which a browser attaches to a forged cross-site
request) is never enough. A script sends ``Authorization: Bearer lwt_...``
(``liftwatch-fleet users token``) and needs no CSRF token, since a browser never attaches
it by itself.

With ``[http] auth = false`` every request acts as an administrator: only for a closed
test network (serve warns at start).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fleet.auth.passwords import hash_password, verify_password
from fleet.auth.roles import Principal, Role
from fleet.auth.throttle import LoginThrottle, ThrottleSettings, retry_after
from fleet.clock import Clock
from fleet.metrics import GatewayMetrics
from fleet.read.scope import Scope
from fleet.read.shape import out, response, to_json
from fleet.store.worker import StoreWorker

log = logging.getLogger(__name__)

SESSION_COOKIE = "lw_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Who acts when auth is off: everything is allowed, and the history says so.
OPEN_PRINCIPAL = Principal(username="", role=Role.ADMIN, display_name="(auth disabled)")


class AccessDeniedError(Exception):
    """The request may not do this; ``status`` is 401 (who are you?) or 403 (not you)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """``enabled``: require a login; ``session_ttl``: how long a session lasts;
    ``throttle``: how failed logins slow down the next (`fleet.auth.throttle`);
    ``secure_cookies``: mark the cookie Secure (`fleet.config.HttpConfig.https_site`)."""

    enabled: bool = True
    session_ttl: dt.timedelta = dt.timedelta(hours=12)
    secure_cookies: bool = True
    throttle: ThrottleSettings = field(default_factory=ThrottleSettings)


def principal_of(request: Request) -> Principal:
    """The principal `Authenticator.admit` put on ``request``."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise AccessDeniedError(401, "not logged in")
    return principal


def scope_of(request: Request) -> Scope:
    """The units the admitted caller of ``request`` may read: every read takes it."""
    return Scope.of(principal_of(request))


def _principal(row: object) -> Principal:
    username = str(getattr(row, "username", ""))
    return Principal(
        username=username,
        role=Role(str(getattr(row, "role", ""))),
        contractor=str(getattr(row, "contractor", "")),
        display_name=str(getattr(row, "display_name", "")) or username,
    )


class Authenticator:
    """Resolves requests to principals and serves the login, logout and me endpoints."""

    def __init__(
        self, store: StoreWorker, clock: Clock, settings: AuthSettings, metrics: GatewayMetrics
    ) -> None:
        self._store = store
        self._clock = clock
        self.settings = settings
        self._metrics = metrics
        # Failed logins slow down the next attempts (per username and per address).
        self.throttle = LoginThrottle(settings.throttle, clock)
        # Verified against when the user is unknown, so that a wrong name costs the same
        # time as a wrong password (no user enumeration by timing).
        self._dummy_hash = hash_password("not-a-real-password")

    async def admit(self, request: Request) -> Principal:
        """The principal of ``request`` (also stored on it), or `AccessDeniedError`:
        401 without a valid session or token, 403 for a state change without the
        session's CSRF token."""
        if not self.settings.enabled:
            request.state.principal = OPEN_PRINCIPAL
            return OPEN_PRINCIPAL
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AccessDeniedError(401, "Authorization: expected 'Bearer lwt_...'")
            row = await self._store.call(lambda s: s.token_user(token.strip()))
            if row is None:
                self._metrics.bad_input.labels(kind="api_token").inc()
                raise AccessDeniedError(401, "API token unknown or revoked")
            principal = _principal(row)
        else:
            session_id = request.cookies.get(SESSION_COOKIE, "")
            if not session_id:
                raise AccessDeniedError(401, "not logged in")
            now = self._clock()
            found = await self._store.call(lambda s: s.session(session_id, now))
            if found is None:
                raise AccessDeniedError(401, "session expired; log in again")
            row, csrf = found
            if request.method not in SAFE_METHODS:
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent or not hmac.compare_digest(sent, csrf):
                    self._metrics.bad_input.labels(kind="csrf").inc()
                    raise AccessDeniedError(403, "missing or wrong X-CSRF-Token")
            principal = _principal(row)
        request.state.principal = principal
        return principal

    async def login(self, request: Request) -> Response:
        """``POST /auth/login``: a session for a right name and password."""
        if not self.settings.enabled:
            return _session(OPEN_PRINCIPAL, "")
        # JSON only: a cross-site HTML form cannot send it (no login CSRF, where another
        # site would log the victim's browser into an account of its choosing).
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _json({"error": "Content-Type: expected application/json"}, 415)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _json({"error": 'body: expected JSON {"username", "password"}'}, 400)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return _json({"error": "username and password must be strings"}, 400)
        address = _client(request)
        wait = self.throttle.wait_s(username, address)
        if wait > 0:
            # Refused unchecked: a locked account answers the same to a right password.
            self._metrics.login_throttled.inc()
            log.warning("login for %r from %s refused: throttled %.0f s", username, address, wait)
            return JSONResponse(
                {
                    "error": f"too many failed logins for this user or from this address; "
                    f"try again in {retry_after(wait)} s"
                },
                status_code=429,
                headers={"Retry-After": retry_after(wait)},
            )
        row = await self._store.call(lambda s: s.user(username))
        stored = row.password_hash if row is not None else self._dummy_hash
        ok = await asyncio.to_thread(verify_password, password, stored)
        if row is None or not ok:
            self._metrics.bad_input.labels(kind="login").inc()
            self.throttle.failed(username, address)
            log.warning("failed login for %r from %s", username, address)
            return _json({"error": "unknown user or wrong password"}, 401)
        self.throttle.succeeded(username)
        now = self._clock()
        ttl = self.settings.session_ttl
        session_id, csrf = await self._store.call(lambda s: s.create_session(username, now, ttl))
        principal = _principal(row)
        log.info("login: %s (%s) from %s", username, principal.role.value, _client(request))
        response = _session(principal, csrf)
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(ttl.total_seconds()),
            httponly=True,
            samesite="strict",
            # From configuration only: a request's Host header is the client's to choose,
            # and behind a proxy it says nothing about the browser's scheme.
            secure=self.settings.secure_cookies,
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """``POST /auth/logout``: end the session (needs its CSRF token like any change)."""
        try:
            await self.admit(request)
        except AccessDeniedError as exc:
            return _json({"error": str(exc)}, exc.status)
        session_id = request.cookies.get(SESSION_COOKIE, "")
        if session_id:
            await self._store.call(lambda s: s.end_session(session_id))
        response = _json(to_json(LoggedOut(ok=True)))
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def me(self, request: Request) -> Response:
        """``GET /auth/me``: who the session is, and its CSRF token (after a reload)."""
        try:
            principal = await self.admit(request)
        except AccessDeniedError as exc:
            return _json({"error": str(exc)}, exc.status)
        csrf = ""
        session_id = request.cookies.get(SESSION_COOKIE, "")
        if self.settings.enabled and session_id:
            now = self._clock()
            found = await self._store.call(lambda s: s.session(session_id, now))
            csrf = found[1] if found is not None else ""
        return _session(principal, csrf)


@response("Me")
@dataclass(frozen=True, slots=True)
class MeView:
    """Who a session is: what the dashboard shows and offers it."""

    username: str = out("empty when auth is off")
    role: Role = out()
    contractor: str = out("the contractor the account acts for; empty for other roles")
    display_name: str = out("the display name, else the username")
    can_act: bool = out("may act on alarms")
    can_admin: bool = out("may manage accounts")

    @classmethod
    def of(cls, principal: Principal) -> MeView:
        """``principal`` as the dashboard sees it."""
        return cls(
            principal.username,
            principal.role,
            principal.contractor,
            principal.display_name or principal.username,
            principal.can_act_on_alarms(),
            principal.can_admin(),
        )


@response("Session")
@dataclass(frozen=True, slots=True)
class SessionView:
    """POST /auth/login and GET /auth/me: the session's user and its CSRF token."""

    user: MeView = out()
    csrf: str = out("send it as X-CSRF-Token on every change; empty without a session")


@response("LoggedOut")
@dataclass(frozen=True, slots=True)
class LoggedOut:
    """POST /auth/logout: the session is over."""

    ok: bool = out()


def _session(principal: Principal, csrf: str) -> JSONResponse:
    return _json(to_json(SessionView(MeView.of(principal), csrf)))


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def _json(body: object, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)

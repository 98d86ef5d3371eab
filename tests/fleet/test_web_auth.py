"""Access to the JSON API and the live stream of a running fleet: logins, sessions, CSRF,
API tokens, role permissions, and a contractor scoped to its own units everywhere."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.cookies
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.auth.passwords import hash_password
from fleet.auth.roles import Role
from fleet.config import FleetConfig, StoreConfig
from fleet.store.base import RegisterEntry
from fleet.store.sqlite import SqliteStore
from fleet.web.auth import SESSION_COOKIE
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, batch, hello, record
from tests.fleet.harness import Fleet, running_fleet
from tests.fleet.test_api import validate
from tests.support import eventually, live_stream

OURS, THEIRS = "维保单位A", "维保单位B"
PASSWORD = "correct horse battery"


@dataclass
class Client:
    """A browser-like client: keeps the session cookie and the CSRF token."""

    http: str
    cookie: str = ""
    csrf: str = ""
    token: str = ""
    host: str = ""
    set_cookie_headers: list[str] = field(default_factory=list)

    def _send(self, method: str, path: str, body: Any = None, csrf: bool = True) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if isinstance(body, bytes):
            headers = {"Content-Type": "text/csv"}
        if self.cookie:
            headers["Cookie"] = f"{SESSION_COOKIE}={self.cookie}"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if csrf and self.csrf and method != "GET":
            headers["X-CSRF-Token"] = self.csrf
        if self.host:
            headers["Host"] = self.host
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body else None
        if body == {}:
            data = b"{}"
        request = urllib.request.Request(
            f"http://{self.http}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                self.set_cookie_headers = reply.headers.get_all("Set-Cookie") or []
                text = reply.read().decode()
                return reply.status, json.loads(text) if "json" in reply.headers.get(
                    "Content-Type", ""
                ) else text
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    async def get(self, path: str) -> tuple[int, Any]:
        return await asyncio.to_thread(self._send, "GET", path)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await asyncio.to_thread(self._send, "DELETE", path)

    async def post(self, path: str, body: Any = None, *, csrf: bool = True) -> tuple[int, Any]:
        return await asyncio.to_thread(
            self._send, "POST", path, body if body is not None else {}, csrf
        )

    async def login(self, username: str, password: str = PASSWORD) -> int:
        status, body = await self.post(
            "/auth/login", {"username": username, "password": password}, csrf=False
        )
        if status == 200:
            jar = http.cookies.SimpleCookie()
            for header in self.set_cookie_headers:
                jar.load(header)
            self.cookie = jar[SESSION_COOKIE].value
            self.csrf = body["csrf"]
            validate(body, {"$ref": "#/components/schemas/Session"}, openapi_spec(), "login")
        return status


def _prepare(db: Path) -> str:
    """U1 is ours, U2 theirs; one user per role; returns an API token of the regulator."""
    store = SqliteStore.open(str(db))
    try:
        store.upsert_register(
            [
                RegisterEntry("U1", building="甲楼", street="大坪街道", contractor=OURS),
                RegisterEntry("U2", building="乙楼", street="大坪街道", contractor=THEIRS),
            ]
        )
        hashed = hash_password(PASSWORD)
        now = dt.datetime.now(dt.UTC)
        store.add_user("reg", Role.REGULATOR, hashed, now=now)
        store.add_user("disp", Role.DISPATCHER, hashed, display_name="调度 王", now=now)
        store.add_user("ours", Role.CONTRACTOR, hashed, contractor=OURS, now=now)
        store.add_user("theirs", Role.CONTRACTOR, hashed, contractor=THEIRS, now=now)
        store.add_user("adm", Role.ADMIN, hashed, now=now)
        return store.create_token("reg", "script", now)
    finally:
        store.close()


async def _entrapments(fleet: Fleet) -> None:
    call = await fleet.connect(hello("a1", "U1", "U2"))
    assert (await call.read()).WhichOneof("frame") == "welcome"
    await call.write(
        batch(
            record(1, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="e1"),
            record(2, "U2", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="e2"),
        )
    )
    frame = await call.read()
    assert frame.WhichOneof("frame") == "ack" and frame.ack.up_to_seq == 2
    await call.done_writing()


def _serve(tmp_path: Path) -> tuple[FleetConfig, str]:
    db = tmp_path / "fleet.db"
    token = _prepare(db)
    return FleetConfig(store=StoreConfig(path=str(db))), token


def test_logins_sessions_csrf_and_tokens(tmp_path: Path) -> None:
    config, token = _serve(tmp_path)

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            anonymous = Client(fleet.http)
            status, body = await anonymous.get("/api/units")
            assert status == 401 and "not logged in" in body["error"]
            assert (
                fleet.metrics.value("liftwatch_fleet_http_access_denied_total", {"status": "401"})
                == 1
            )

            assert await anonymous.login("reg", "wrong password") == 401
            assert await anonymous.login("nobody", PASSWORD) == 401
            # What a cross-site form could send (text/plain) is no login.
            form = b'{"username": "reg", "password": "correct horse battery"}'
            status, body = await anonymous.post("/auth/login", form, csrf=False)
            assert status == 415 and "application/json" in body["error"]
            assert fleet.metrics.value("liftwatch_fleet_bad_input_total", {"kind": "login"}) == 2

            user = Client(fleet.http)
            assert await user.login("disp") == 200
            (cookie,) = [h for h in user.set_cookie_headers if h.startswith(SESSION_COOKIE)]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert "Secure" not in cookie  # plain HTTP ([http] secure_cookies "auto")
            status, me = await user.get("/auth/me")
            assert status == 200 and me["user"]["role"] == "dispatcher" and me["csrf"]
            validate(me, {"$ref": "#/components/schemas/Session"}, openapi_spec(), "auth/me")
            assert (await user.get("/api/units"))[0] == 200

            # The Host header is the client's to choose: it decides nothing about the
            # cookie (configuration does, see tests/security/test_headers.py).
            remote = Client(fleet.http, host="fleet.example.org")
            assert await remote.login("reg") == 200
            assert not any("Secure" in h for h in remote.set_cookie_headers)

            # A state change with the cookie alone (a forged cross-site request) is refused.
            await _entrapments(fleet)
            alarms = await eventually(
                lambda: user.get("/api/alarms?open=true"), lambda r: len(r[1]["alarms"]) == 2
            )
            alarm_id = alarms[1]["alarms"][0]["alarm_id"]
            status, body = await user.post(f"/api/alarms/{alarm_id}/ack", csrf=False)
            assert status == 403 and "X-CSRF-Token" in body["error"]
            status, body = await user.post(f"/api/alarms/{alarm_id}/ack")
            assert status == 200 and body["acknowledged_by"] == "调度 王"

            # An API token needs no CSRF token; a regulator reads but never acts.
            script = Client(fleet.http, token=token)
            assert (await script.get("/api/coverage"))[0] == 200
            status, body = await script.post(f"/api/alarms/{alarm_id}/on-site")
            assert status == 403 and "regulator" in body["error"]
            assert (await Client(fleet.http, token="lwt_forged").get("/api/units"))[0] == 401

            # Logging out ends the session on the server, not just in the browser.
            status, body = await user.post("/auth/logout")
            assert status == 200
            validate(body, {"$ref": "#/components/schemas/LoggedOut"}, openapi_spec(), "logout")
            assert (await user.get("/api/units"))[0] == 401

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_contractor_sees_and_acts_on_its_own_units_only(tmp_path: Path) -> None:
    config, _ = _serve(tmp_path)

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            await _entrapments(fleet)
            ours = Client(fleet.http)
            assert await ours.login("ours") == 200

            units = (await ours.get("/api/units"))[1]["units"]
            assert [u["unit_id"] for u in units] == ["U1"]
            assert (await ours.get("/api/units/U1"))[0] == 200
            assert (await ours.get("/api/units/U2"))[0] == 404
            assert (await ours.get("/api/units/U2/history"))[0] == 404
            assert (await ours.get("/api/units/U2/live"))[0] == 404
            assert (await ours.get("/api/events?unit=U2"))[0] == 404
            assert (await ours.get(f"/api/units?contractor={urllib.parse.quote(THEIRS)}"))[0] == 403
            events = (await ours.get("/api/events"))[1]["events"]
            assert {e["unit_id"] for e in events} == {"U1"}
            assert (await ours.get("/api/coverage"))[1]["registered"] == 1

            alarms = (await ours.get("/api/alarms"))[1]["alarms"]
            assert [a["unit_id"] for a in alarms] == ["U1"]
            theirs = (await Client(fleet.http, token="").get("/api/alarms"))[0]
            assert theirs == 401
            other = Client(fleet.http)
            assert await other.login("theirs") == 200
            (their_alarm,) = (await other.get("/api/alarms"))[1]["alarms"]
            assert their_alarm["unit_id"] == "U2"
            # Neither by id nor by action: the other contractor's alarm does not exist.
            assert (await ours.get(f"/api/alarms/{their_alarm['alarm_id']}"))[0] == 404
            status, _ = await ours.post(f"/api/alarms/{their_alarm['alarm_id']}/ack")
            assert status == 404
            status, body = await ours.post(f"/api/alarms/{alarms[0]['alarm_id']}/ack")
            assert status == 200 and body["state"] == "acknowledged"

            # A claims audit covers the contractor's own units; another's is "unknown"
            # (asked in English: the reasons are in the reader's language, the site's
            # Chinese by default, see tests/fleet/test_claims_language.py).
            claims = (
                "unit_id,time,fault_type\n"
                f"U1,{T0.isoformat()},ENTRAPMENT\n"
                f"U2,{T0.isoformat()},ENTRAPMENT\n"
                "U1,yesterday,ENTRAPMENT\n"
            )
            status, audit = await ours.post("/api/reports/claims?lang=en", claims.encode())
            assert status == 200, audit
            assert [(c["line"], c["verdict"]) for c in audit["claims"]] == [(2, "supported")]
            assert [(p["line"], "unknown" in p["reason"]) for p in audit["problems"]] == [
                (3, True),
                (4, False),
            ]
            status, body = await ours.post("/api/reports/claims", b"no,header\n")
            assert status == 400 and "missing column" in body["error"]

            rows = (await ours.get("/api/reports/scorecard"))[1]["rows"]
            assert {r["contractor"] for r in rows} <= {OURS}
            assert (await ours.get("/api/reports/fault-rate?by=street"))[0] == 403

    asyncio.run(asyncio.wait_for(scenario(), 60))


async def _read_events(http_address: str, cookie: str, path: str, until: str) -> list[str]:
    """Open the SSE stream at ``path`` as the session ``cookie`` and collect the ``data:``
    payloads until one contains ``until`` (the stream is then closed)."""
    async with live_stream(http_address, path, f"Cookie: {SESSION_COOKIE}={cookie}") as stream:
        return await stream.data(until=until)


def test_the_live_stream_is_scoped_like_the_api(tmp_path: Path) -> None:
    config, _ = _serve(tmp_path)

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            ours = Client(fleet.http)
            assert await ours.login("ours") == 200
            reg = Client(fleet.http)
            assert await reg.login("reg") == 200
            # The regulator's stream sees both; the contractor's must see U1's only, and
            # U2's event (sent first) must never reach it.
            contractor_stream = asyncio.create_task(
                _read_events(fleet.http, ours.cookie, "/api/live?unit=U1&unit=U2", '"U1"')
            )
            regulator_stream = asyncio.create_task(
                _read_events(fleet.http, reg.cookie, "/api/live", '"U1"')
            )
            await eventually(
                lambda: ours.get("/metrics"),
                lambda r: "liftwatch_fleet_live_subscribers 2.0" in r[1],
            )
            call = await fleet.connect(hello("a1", "U1", "U2"))
            assert (await call.read()).WhichOneof("frame") == "welcome"
            car = record(2, "U1")
            await call.write(
                batch(
                    record(1, "U2", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="e2"),
                    car,
                    record(3, "U1", event=records_pb2.EVENT_TYPE_ENTRAPMENT, event_id="e1"),
                )
            )
            contractor_seen = await asyncio.wait_for(contractor_stream, 10)
            regulator_seen = await asyncio.wait_for(regulator_stream, 10)
            await call.done_writing()
            assert not any('"U2"' in line for line in contractor_seen)
            assert any('"floor":1' in line and '"door"' in line for line in contractor_seen)
            assert any('"U2"' in line for line in regulator_seen)
            # The overview's stream (no unit asked for) carries no car states.
            assert not any('"door"' in line for line in regulator_seen)
            # The unit page starts from the newest stored car state and link health.
            status, live = await reg.get("/api/units/U1/live")
            assert status == 200 and live["car"]["floor"] == 1 and live["link"] is None
            spec = openapi_spec()
            validate(live, {"$ref": "#/components/schemas/UnitLive"}, spec, "unit live")
            # The stream's car and event messages against their definitions too.
            shown = [json.loads(line) for line in contractor_seen + regulator_seen]
            cars = [m for m in shown if "door" in m]
            for message in cars:
                validate(message, {"$ref": "#/components/schemas/LiveCar"}, spec, "live car")
            for message in (m for m in shown if "phase" in m):
                validate(message, {"$ref": "#/components/schemas/LiveEvent"}, spec, "live event")
            assert cars

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_only_an_administrator_manages_users(tmp_path: Path) -> None:
    config, token = _serve(tmp_path)

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            for username in ("reg", "disp", "ours"):
                other = Client(fleet.http)
                assert await other.login(username) == 200
                assert (await other.get("/api/users"))[0] == 403
                status, _ = await other.post("/api/users", {"username": "x", "role": "admin"})
                assert status == 403
                assert (await other.delete("/api/users/adm"))[0] == 403
            assert (await Client(fleet.http, token=token).get("/api/users"))[0] == 403

            admin = Client(fleet.http)
            assert await admin.login("adm") == 200
            status, listed = await admin.get("/api/users")
            assert status == 200 and {u["username"] for u in listed["users"]} >= {"reg", "adm"}
            assert all("password_hash" not in u for u in listed["users"])
            validate(listed, {"$ref": "#/components/schemas/Users"}, openapi_spec(), "users")
            new = {"username": "zhang", "role": "contractor", "password": "short"}
            status, body = await admin.post("/api/users", {**new, "contractor": OURS})
            assert status == 400 and "password" in body["error"]
            status, body = await admin.post("/api/users", {**new, "password": PASSWORD})
            assert status == 400 and "contractor" in body["error"]
            status, body = await admin.post(
                "/api/users", {**new, "password": PASSWORD, "contractor": OURS}
            )
            assert status == 201 and body["contractor"] == OURS
            validate(body, {"$ref": "#/components/schemas/User"}, openapi_spec(), "added")
            status, _ = await admin.post(
                "/api/users", {**new, "password": PASSWORD, "contractor": OURS}
            )
            assert status == 409
            zhang = Client(fleet.http)
            assert await zhang.login("zhang") == 200
            assert [u["unit_id"] for u in (await zhang.get("/api/units"))[1]["units"]] == ["U1"]
            assert (await admin.delete("/api/users/adm"))[0] == 400
            status, removed = await admin.delete("/api/users/zhang")
            assert status == 200 and removed == {"removed": "zhang"}
            validate(removed, {"$ref": "#/components/schemas/UserRemoved"}, openapi_spec())
            assert (await zhang.get("/api/units"))[0] == 401  # the session went with the user
            assert (await admin.delete("/api/users/zhang"))[0] == 404

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_auth_off_lets_everyone_act_and_names_the_actor_from_the_body(tmp_path: Path) -> None:
    config, _ = _serve(tmp_path)

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=False) as fleet:
            await _entrapments(fleet)
            client = Client(fleet.http)
            alarms = (await client.get("/api/alarms"))[1]["alarms"]
            status, body = await client.post(f"/api/alarms/{alarms[0]['alarm_id']}/ack")
            assert status == 400 and '"by"' in body["error"]
            status, body = await client.post(
                f"/api/alarms/{alarms[0]['alarm_id']}/ack", {"by": "李工"}
            )
            assert status == 200 and body["acknowledged_by"] == "李工"

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_the_page_and_its_assets_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    config, _ = _serve(tmp_path)

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:

            def fetch(path: str) -> tuple[int, str, Any]:
                with urllib.request.urlopen(f"http://{fleet.http}{path}", timeout=10) as r:
                    return r.status, r.read().decode(), r.headers

            status, text, headers = await asyncio.to_thread(fetch, "/")
            assert status == 200 and "/static/app.js" in text
            assert "script-src 'self'" in headers["Content-Security-Policy"]
            for asset in ("app.js", "i18n.js", "app.css", "icon.svg"):
                assert (await asyncio.to_thread(fetch, f"/static/{asset}"))[0] == 200
            status, site = await Client(fleet.http).get("/api/site")
            assert status == 200 and site == {"time_zone": "Asia/Shanghai", "language": "zh"}

    asyncio.run(asyncio.wait_for(scenario(), 60))

"""Contractor scope on every route (issue 15, item 4), listed from the OpenAPI spec.

For each operation of ``/api/openapi.json`` (and the page), a contractor's API token asks
for the other contractor's unit, alarm, rows and stream: the answer is 404 or 403, or
200 without a trace of that unit or its contractor. The same request by an administrator
shows the other unit where the route carries unit data, so an empty answer cannot pass
for a scoped one. A route in the spec without a case here fails
`test_every_route_has_a_scope_case`.

District (`tests.security.conftest.District`): U1 is C1's, U2 is C2's; the token is c1's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.routing import Route

from fleet.auth.passwords import hash_password
from fleet.auth.roles import Role
from fleet.config import FleetConfig, StoreConfig
from fleet.reports.claims import PROBLEM_TEMPLATES
from fleet.store.maintenance import NewRecord, UnitDerivation, VisitRow
from fleet.store.sql import to_us
from fleet.store.sqlite import SqliteStore
from fleet.web.openapi import openapi_spec
from protos.liftwatch.v1 import records_pb2
from tests.fleet.factories import T0, batch, evidence_record, hello, record
from tests.fleet.harness import Fleet, running_fleet
from tests.fleet.test_api import routes_only_app
from tests.fleet.test_tls import first_frame
from tests.security.conftest import District, with_timeout
from tests.security.test_reassignment import ROUTES
from tests.support import live_stream

ENTRAPMENT = records_pb2.EVENT_TYPE_ENTRAPMENT
# What must not reach C1: the other unit's id, or its contractor's name.
FOREIGN = re.compile(r"\b(U2|C2)\b")
OWN, OTHER = "U1", "U2"


@dataclass(frozen=True)
class Probe:
    """One request of a case. ``leaks``: the administrator's answer names U2 or C2 (the
    route carries the other contractor's data), which the contractor's must not."""

    method: str
    path: str
    leaks: bool
    body: bytes | None = None
    content_type: str = "application/json"


def _gets(path: str, *queries: str, leaks: bool = True) -> tuple[Probe, ...]:
    """A GET probe of ``path`` with each of ``queries`` appended ("" for the bare path)."""
    return tuple(Probe("GET", path + query, leaks=leaks) for query in queries)


# {alarm_U1} / {alarm_U2} are filled in with the ids of the units' entrapment alarms.
CASES: dict[tuple[str, str], tuple[Probe, ...]] = {
    ("get", "/api/units"): _gets("/api/units", "", "?contractor=C2", "?format=csv", "?q=U2"),
    ("get", "/api/units/{unit_id}"): (Probe("GET", "/api/units/U2", leaks=True),),
    ("get", "/api/coverage"): (
        Probe("GET", "/api/coverage?by=contractor", leaks=True),
        Probe("GET", "/api/coverage?by=building", leaks=False),
    ),
    ("get", "/api/coverage/history"): _gets("/api/coverage/history", "?unit=U2", ""),
    ("get", "/api/firmware"): (
        Probe("GET", "/api/firmware?history=U2", leaks=True),
        Probe("GET", "/api/firmware", leaks=False),
    ),
    ("get", "/api/events"): _gets(
        "/api/events", "", "?unit=U2", "?format=csv", "?unit=U2&format=csv"
    ),
    ("get", "/api/openapi.json"): (Probe("GET", "/api/openapi.json", leaks=False),),
    ("get", "/api/alarms"): _gets("/api/alarms", "", "?unit=U2", "?open=true&limit=1"),
    # A count names no unit: its scope is checked by number (one entrapment each).
    ("get", "/api/alarms/count"): (Probe("GET", "/api/alarms/count", leaks=False),),
    ("get", "/api/alarms/{alarm_id}"): (Probe("GET", "/api/alarms/{alarm_U2}", leaks=True),),
    ("post", "/api/alarms/{alarm_id}/{action}"): (
        Probe("POST", "/api/alarms/{alarm_U2}/ack", leaks=True, body=b'{"by": "x"}'),
    ),
    ("get", "/api/reports/{report}"): (
        Probe("GET", "/api/reports/fault-rate", leaks=True),
        Probe("GET", "/api/reports/fault-rate?by=contractor", leaks=True),
        # The register names no streets: one row of both contractors, refused to C1.
        Probe("GET", "/api/reports/fault-rate?by=street", leaks=False),
        Probe("GET", "/api/reports/fault-rate?format=csv", leaks=True),
        Probe("GET", "/api/reports/service-life", leaks=True),
        Probe("GET", "/api/reports/scorecard", leaks=True),
    ),
    ("post", "/api/reports/claims"): (
        Probe(
            "POST",
            "/api/reports/claims",
            leaks=True,
            body=(
                "unit_id,time,fault_type\n"
                f"U1,{T0.isoformat()},ENTRAPMENT\nU2,{T0.isoformat()},ENTRAPMENT\n"
            ).encode(),
            content_type="text/csv",
        ),
    ),
    ("get", "/api/units/{unit_id}/history"): (Probe("GET", "/api/units/U2/history", leaks=True),),
    ("get", "/api/history/checkpoint"): (Probe("GET", "/api/history/checkpoint", leaks=False),),
    # The stream: see `_live_stream`; this request only opens and reads it.
    ("get", "/api/live"): (Probe("GET", "/api/live?unit=U1&unit=U2", leaks=True),),
    ("get", "/api/units/{unit_id}/live"): (Probe("GET", "/api/units/U2/live", leaks=True),),
    ("get", "/api/users"): (Probe("GET", "/api/users", leaks=False),),
    ("post", "/api/users"): (
        Probe(
            "POST",
            "/api/users",
            leaks=False,
            body=json.dumps(
                {"username": "c2x", "role": "contractor", "contractor": "C2", "password": "p" * 12}
            ).encode(),
        ),
    ),
    ("delete", "/api/users/{username}"): (Probe("DELETE", "/api/users/nobody", leaks=False),),
    ("get", "/api/site"): (Probe("GET", "/api/site", leaks=False),),
    # Northbound forwarding (issue 21): administrators only, a contractor gets 403.
    ("get", "/api/northbound"): (Probe("GET", "/api/northbound", leaks=False),),
    # Agent updates (issue 20): administrators only, a contractor gets 403.
    ("get", "/api/rollouts"): (Probe("GET", "/api/rollouts", leaks=False),),
    ("get", "/api/configs"): (Probe("GET", "/api/configs", leaks=False),),
    # The plan by need and the publication (issue 17): the plan is scoped like the units;
    # unpublished lists are for regulators and administrators only (a contractor: 403).
    ("get", "/api/maintenance/plan"): (
        Probe("GET", "/api/maintenance/plan", leaks=True),
        Probe("GET", "/api/maintenance/plan?contractor=C2", leaks=False),
        Probe("GET", "/api/maintenance/plan?format=csv", leaks=True),
        Probe("GET", "/api/maintenance/plan?format=ics", leaks=True),
    ),
    ("get", "/api/publication"): (Probe("GET", "/api/publication", leaks=False),),
    ("post", "/api/publication/draft"): (Probe("POST", "/api/publication/draft", leaks=False),),
    ("get", "/api/publication/{publication_id}"): (
        Probe("GET", "/api/publication/1", leaks=False),
    ),
    ("post", "/api/publication/{publication_id}/{action}"): (
        Probe("POST", "/api/publication/1/approve", leaks=False),
        Probe("POST", "/api/publication/1/publish", leaks=False),
    ),
    # The flight recorder (issue 16): each unit's entrapment has its evidence, and U2 an
    # on-demand request (see `_seed`). Asking U2's agent: 404 to C1; the administrator's
    # answer is a 409 (no agent connected), so it shows no unit data either.
    ("get", "/api/events/{event_id}/evidence"): (
        Probe("GET", "/api/events/ev-other/evidence", leaks=True),
        Probe("GET", "/api/events/ev-other/evidence?format=csv", leaks=False),
    ),
    ("post", "/api/units/{unit_id}/evidence-requests"): (
        Probe("POST", "/api/units/U2/evidence-requests", leaks=False, body=b'{"seconds": 5}'),
    ),
    ("get", "/api/evidence-requests/{request_id}"): (
        Probe("GET", "/api/evidence-requests/req-U2", leaks=True),
    ),
    # Maintenance truth (issue 17): each unit has a visit and its contractor's record (see
    # `_seed`). C1 files a U2 row: refused as unknown, like a unit nobody knows; an
    # administrator must name the contractor filing (400).
    ("get", "/api/maintenance/visits"): _gets(
        "/api/maintenance/visits", "", "?unit=U2", "?contractor=C2"
    ),
    ("get", "/api/units/{unit_id}/visits"): (Probe("GET", "/api/units/U2/visits", leaks=True),),
    ("get", "/api/maintenance/records"): _gets(
        "/api/maintenance/records", "", "?unit=U2", "?contractor=C2"
    ),
    ("post", "/api/maintenance/records"): (
        Probe(
            "POST",
            "/api/maintenance/records",
            leaks=False,
            body=(
                b"unit_id,date,start,end,type,workers\n"
                b"U1,2026-03-01,09:00Z,10:00Z,annual,x\nU2,2026-03-01,09:00Z,10:00Z,annual,x\n"
            ),
            content_type="text/csv",
        ),
    ),
    ("get", "/api/maintenance/shares"): (Probe("GET", "/api/maintenance/shares", leaks=True),),
}
# Routes outside the spec that show data: the page (a shell that reads the API).
PAGES = (
    Probe("GET", "/", leaks=False),
    Probe("GET", "/auth/me", leaks=False),
    # The published lists: public by design, and nothing is published here.
    Probe("GET", "/public/", leaks=False),
    Probe("GET", "/public/lists.json", leaks=False),
    Probe("GET", "/public/lists.csv", leaks=False),
)


def _operations() -> list[tuple[str, str]]:
    spec = openapi_spec()
    return [(method, path) for path, item in spec["paths"].items() for method in item]


def test_every_route_has_a_scope_case() -> None:
    assert set(_operations()) == set(CASES), "a route of the spec without a scope case here"
    # Every route of the app is in the spec or a page probed here (a route the spec
    # forgot would otherwise escape the cases).
    app = routes_only_app()
    served = {r.path.replace(":str", "") for r in app.routes if isinstance(r, Route)}
    known = set(openapi_spec()["paths"]) | {p.path for p in PAGES}
    # Sign-in and -out change no unit data; /metrics has a token of its own (test_headers).
    assert served - known == {"/auth/login", "/auth/logout", "/metrics"}


def _send(http: str, token: str, probe: Probe, path: str) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if probe.body is not None:
        headers["Content-Type"] = probe.content_type
    request = urllib.request.Request(
        f"http://{http}{path}", data=probe.body, method=probe.method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read().decode("utf-8-sig")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def _live_stream(http: str, token: str, path: str, fleet: Fleet, seq: int) -> list[str]:
    """The status and the ``data:`` payloads a stream at ``path`` carries while U2's and
    then U1's car, event and alarm arrive (U2's first: once U1's event is in, U2's would
    have been)."""
    async with live_stream(http, path, f"Authorization: Bearer {token}") as stream:
        seen = [f"status {stream.status}"]
        if stream.status != 200:
            return seen
        call = await fleet.connect(
            hello("edge-1", OWN, OTHER),
            batch(
                record(seq, OTHER),
                record(seq + 1, OTHER, event=ENTRAPMENT, event_id="live-other"),
                record(seq + 2, OWN),
                record(seq + 3, OWN, event=ENTRAPMENT, event_id="live-own"),
            ),
        )
        try:
            return await stream.data(seen, until="live-own")
        finally:
            await call.done_writing()


async def _seed(fleet: Fleet, db: Path) -> dict[str, str]:
    """An entrapment (event, alarm, history) and a firmware change on each unit; the
    ids of their alarms by unit."""
    call = await fleet.connect(
        hello("edge-1", OWN, OTHER, firmware="3.1.2"),
        batch(
            record(1, OWN, event=ENTRAPMENT, event_id="ev-own"),
            record(2, OTHER, event=ENTRAPMENT, event_id="ev-other"),
            evidence_record(3, OWN, event_id="ev-own"),
            evidence_record(4, OTHER, event_id="ev-other"),
        ),
    )
    assert (await first_frame(call)).HasField("welcome")
    assert (await first_frame(call)).ack.up_to_seq == 4
    await call.done_writing()
    upgrade = await fleet.connect(hello("edge-1", OWN, OTHER, firmware="3.2.0"))
    assert (await first_frame(upgrade)).HasField("welcome")
    await upgrade.done_writing()
    store = SqliteStore.open(str(db))
    try:
        # A watched visit and its contractor's record on each unit.
        for unit, contractor in ((OWN, "C1"), (OTHER, "C2")):
            start = to_us(T0)
            visit = VisitRow(
                None, unit, start, start + 3_600_000_000, 3600.0, "inspection", 4, 3, 4, start
            )
            store.save_derivation("edge-1", 0, [UnitDerivation(unit, "edge-1", (visit,), "")])
            made = NewRecord(
                unit, contractor, "annual", start, start + 3_600_000_000, "w", "csv", "u", start
            )
            store.add_maintenance_records([made], T0)
        # A dispatcher's request for each unit's last seconds (its agent gone by now).
        for unit in (OWN, OTHER):
            later = T0 + dt.timedelta(hours=1)
            store.add_evidence_request(f"req-{unit}", unit, 5, "desk", T0, later)
        return {f"alarm_{a.unit_id}": str(a.alarm_id) for a in store.alarms()}
    finally:
        store.close()


def _admin_token(district: District) -> str:
    store = SqliteStore.open(str(district.db))
    try:
        now = dt.datetime.now(dt.UTC)
        store.add_user("adm", Role.ADMIN, hash_password("correct horse battery"), now=now)
        return store.create_token("adm", "probe", now)
    finally:
        store.close()


# How a route says a unit is unknown, echoing the id the caller itself sent.
# The claims audit's "unit unknown" problem in each language it speaks (the reader's, the
# site's Chinese by default), naming U2 as the caller wrote it: an echo, not a leak.
UNKNOWN_ECHO = re.compile(
    "|".join(
        re.escape(text).replace(re.escape("{unit!r}"), r"\\?'U2\\?'")
        for text in PROBLEM_TEMPLATES["unit_unknown"].values()
    )
)


def _leaked(text: str) -> list[str]:
    """U2 or C2 where the answer shows them (not where it echoes U2 as unknown)."""
    return sorted(set(FOREIGN.findall(UNKNOWN_ECHO.sub("", text))))


@pytest.mark.parametrize("operation", [*CASES, ("get", "/")], ids=lambda o: f"{o[0]} {o[1]}")
def test_a_contractor_reads_only_its_own_units(
    operation: tuple[str, str], district: District
) -> None:
    admin = _admin_token(district)
    probes = CASES.get(operation, PAGES)
    config = FleetConfig(store=StoreConfig(path=str(district.db)))

    async def main_() -> list[tuple[Probe, tuple[int, str], tuple[int, str]]]:
        async with running_fleet(config, http=True, auth=True) as fleet:
            ids = await _seed(fleet, district.db)
            answers = []
            for number, probe in enumerate(probes):
                path = probe.path.format(**ids)
                if path.startswith("/api/live"):
                    seq = 100 + 10 * number
                    mine = await _live_stream(
                        fleet.http, district.contractor_token, path, fleet, seq
                    )
                    everyone = await _live_stream(fleet.http, admin, path, fleet, seq + 4)
                    answers.append((probe, (200, "\n".join(mine)), (200, "\n".join(everyone))))
                    continue
                # The contractor first: an administrator's alarm step would change state.
                mine_ = await asyncio.to_thread(
                    _send, fleet.http, district.contractor_token, probe, path
                )
                everyone_ = await asyncio.to_thread(_send, fleet.http, admin, probe, path)
                answers.append((probe, mine_, everyone_))
            return answers

    answers = asyncio.run(with_timeout(main_(), 60))
    for probe, (status, body), (admin_status, admin_body) in answers:
        where = f"{probe.method} {probe.path}"
        if probe.path == "/api/alarms/count":
            counted = (json.loads(body)["open"], json.loads(admin_body)["open"])
            assert counted == (1, 2), (where, body, admin_body)
        if probe.leaks:
            # The route does carry the other contractor's data: the administrator sees it.
            assert admin_status == 200 and _leaked(admin_body), (where, admin_status, admin_body)
        if status == 200:
            assert not _leaked(body), (where, body)
        else:
            # 404 (unknown to it), 403 (not its listing), 400 (a contractor must name one
            # of its units, e.g. for coverage transitions).
            assert status in (400, 403, 404), (where, status, body)
            # An error names nothing of the other contractor but what the caller asked.
            assert "C2" not in body, (where, body)


def test_the_contractor_still_sees_its_own_unit_everywhere(district: District) -> None:
    """The scoped reads do not hide the caller's own unit: each unit route answers 200
    about U1 (so the 404s above are about scope, not a broken route)."""
    config = FleetConfig(store=StoreConfig(path=str(district.db)))
    # The routes that show one unit (test_reassignment's), and one alarm.
    own_routes = (
        *ROUTES,
        "/api/alarms/{alarm_U1}",
        "/api/events/ev-own/evidence",
        "/api/evidence-requests/req-U1",
    )

    async def main_() -> dict[str, tuple[int, str]]:
        async with running_fleet(config, http=True, auth=True) as fleet:
            ids = await _seed(fleet, district.db)
            found = {}
            for route in own_routes:
                path = route.format(**ids)
                probe = Probe("GET", path, leaks=False)
                found[route] = await asyncio.to_thread(
                    _send, fleet.http, district.contractor_token, probe, path
                )
            return found

    found = asyncio.run(with_timeout(main_(), 60))
    for route, (status, body) in found.items():
        assert status == 200 and "U1" in body, (route, status, body)


def test_a_regulator_may_not_ask_a_car_for_evidence(district: District) -> None:
    """Asking an agent for its last seconds is for the roles that act on the unit."""
    config = FleetConfig(store=StoreConfig(path=str(district.db)))
    probe = Probe("POST", "/api/units/U1/evidence-requests", leaks=False, body=b'{"seconds": 5}')

    async def main_() -> tuple[int, str]:
        async with running_fleet(config, http=True, auth=True) as fleet:
            return await asyncio.to_thread(
                _send, fleet.http, district.regulator_token, probe, probe.path
            )

    status, body = asyncio.run(with_timeout(main_(), 60))
    assert status == 403 and "regulator may not ask" in body, (status, body)

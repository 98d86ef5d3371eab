"""The district's published lists over HTTP (issue 17, item 5), on a running fleet: the
draft -> approve -> publish steps and who may take them, the public routes with no login,
no draft leaking out, no personal data in anything public, and the plan scoped by
contractor."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from fleet.auth.passwords import hash_password
from fleet.auth.roles import Role
from fleet.config import FleetConfig, StoreConfig
from fleet.reports.maintenance_config import MaintenanceConfig, VerdictRulesConfig
from fleet.store.base import RegisterEntry
from fleet.store.maintenance import NewRecord, VerdictChange
from fleet.store.publication import RegisterDetails
from fleet.store.sql import to_us
from fleet.store.sqlite import SqliteStore
from fleet.web.openapi import openapi_spec
from tests.fleet.harness import running_fleet
from tests.fleet.test_api import validate
from tests.fleet.test_web_auth import PASSWORD, Client

OURS, THEIRS = "维保单位A", "维保单位B"
CONTACT = "张三 13800000000"
WORKER = "王五师傅"
DRAFTER, APPROVER = "li_regulator", "zhao_regulator"


def _prepare(db: Path) -> None:
    store = SqliteStore.open(str(db))
    try:
        store.upsert_register(
            [
                RegisterEntry(
                    "U1",
                    building="甲楼",
                    street="大坪街道",
                    use_unit="物业甲",
                    contractor=OURS,
                    install_date=dt.date(2005, 3, 1),
                ),
                RegisterEntry(
                    "U2",
                    building="乙楼",
                    street="大坪街道",
                    use_unit="",
                    contractor=THEIRS,
                    install_date=dt.date(2020, 3, 1),
                ),
            ]
        )
        store.upsert_register_details(
            [
                RegisterDetails(
                    "U1", use_unit_contact=CONTACT, maintenance_fund="yes", safety_assessments=()
                ),
                RegisterDetails(
                    "U2", use_unit_contact=CONTACT, maintenance_fund="no", safety_assessments=()
                ),
            ],
            frozenset({"use_unit_contact", "maintenance_fund", "safety_assessments"}),
        )
        now = dt.datetime.now(dt.UTC)
        start = now - dt.timedelta(days=3)
        (record_id,) = store.add_maintenance_records(
            [
                NewRecord(
                    "U2",
                    THEIRS,
                    "half_monthly",
                    to_us(start),
                    to_us(start + dt.timedelta(hours=1)),
                    WORKER,
                    "csv",
                    "theirs",
                    to_us(now),
                ),
            ],
            now,
        )
        assert record_id is not None
        store.set_verdicts([VerdictChange(record_id, "contradicted", "", "{}", None)], now)
        hashed = hash_password(PASSWORD)
        for name, role, contractor in (
            (DRAFTER, Role.REGULATOR, ""),
            (APPROVER, Role.REGULATOR, ""),
            ("ours", Role.CONTRACTOR, OURS),
            ("adm", Role.ADMIN, ""),
        ):
            store.add_user(name, role, hashed, contractor=contractor, now=now)
    finally:
        store.close()


SPEC = openapi_spec()


def _answer(method: str, path: str, status: str = "200") -> dict[str, Any]:
    """The schema the spec declares for a route's JSON answer."""
    content = SPEC["paths"][path][method]["responses"][status]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


def _raw(
    http: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://{http}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def test_lists_are_drafted_approved_by_another_and_published_with_no_personal_data(
    tmp_path: Path,
) -> None:
    db = tmp_path / "fleet.db"
    _prepare(db)
    # serve's maintenance job would judge the seeded record again (it has no watched
    # visit): off, so that the list shows the verdict the test set.
    config = FleetConfig(
        store=StoreConfig(path=str(db)),
        maintenance=MaintenanceConfig(verdicts=VerdictRulesConfig(derive_interval_s=0)),
    )

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:

            async def get(
                path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
                return await asyncio.to_thread(_raw, fleet.http, path, headers)

            ours = Client(fleet.http)
            assert await ours.login("ours") == 200
            assert (await ours.post("/api/publication/draft"))[0] == 403
            assert (await ours.get("/api/publication"))[0] == 403
            admin = Client(fleet.http)
            assert await admin.login("adm") == 200
            assert (await admin.post("/api/publication/draft"))[0] == 403  # regulators only

            drafter = Client(fleet.http)
            assert await drafter.login(DRAFTER) == 200
            status, draft = await drafter.post("/api/publication/draft")
            assert status == 201 and draft["state"] == "draft"
            validate(draft, _answer("post", "/api/publication/draft", "201"), SPEC, "draft")
            three_no = draft["lists"]["three_no"]["rows"]
            assert [(r["unit_id"], r["use_unit"], r["maintenance_fund"]) for r in three_no] == [
                ("U2", "no", "no")
            ]
            aged = draft["lists"]["aged_without_assessment"]["rows"]
            assert [r["unit_id"] for r in aged] == ["U1"]
            contradicted = draft["lists"]["contradicted_contractors"]["rows"]
            assert [r["contractor"] for r in contradicted] == [THEIRS]
            pid = draft["id"]
            # Not public before it is published (the first public read of this process:
            # nothing cached hides a leak), and nothing of the draft on the page either.
            status, _, body = await get("/public/lists.json")
            assert status == 200 and json.loads(body) == {"published": None, "lists": {}}
            assert (await drafter.post(f"/api/publication/{pid}/publish"))[0] == 409
            assert (await drafter.post(f"/api/publication/{pid}/approve"))[0] == 409
            approver = Client(fleet.http)
            assert await approver.login(APPROVER) == 200
            assert (await approver.post(f"/api/publication/{pid}/approve"))[0] == 200
            status, done = await approver.post(f"/api/publication/{pid}/publish")
            assert status == 200 and done["state"] == "published"
            status, history = await drafter.get("/api/publication")
            validate(history, _answer("get", "/api/publication"), SPEC, "publications")
            assert [(s["step"], s["username"]) for s in history["steps"]] == [
                ("drafted", DRAFTER),
                ("approved", APPROVER),
                ("published", APPROVER),
            ]

            status, headers, body = await get("/public/lists.json")
            public = json.loads(body)
            assert status == 200 and public["published"] is not None
            assert public["lists"]["three_no"]["rows"][0]["unit_id"] == "U2"
            lists_schema = {"$ref": "#/components/schemas/PublishedLists"}
            validate(public["lists"], lists_schema, SPEC, "/public/lists.json lists")
            assert "public" in headers["cache-control"]
            assert (await get("/public/lists.json", {"If-None-Match": headers["etag"]}))[0] == 304
            status, page_headers, page = await get("/public/")
            assert status == 200 and "script-src" not in page_headers["content-security-policy"]
            text = page.decode()
            assert text.index("“三无”电梯") < text.index("Three-no lifts")
            status, _, csv_body = await get("/public/lists.csv")
            assert status == 200 and "three_no" in csv_body.decode("utf-8-sig")
            for public_body in (body.decode(), text, csv_body.decode("utf-8-sig")):
                for personal in ("张三", "13800000000", WORKER, DRAFTER, APPROVER, "theirs"):
                    assert personal not in public_body

            # The plan: a contractor sees its own units only.
            status, plan = await ours.get("/api/maintenance/plan?lang=en")
            assert status == 200 and [u["unit_id"] for u in plan["units"]] == ["U1"]
            validate(plan, _answer("get", "/api/maintenance/plan"), SPEC, "plan")
            assert plan["units"][0]["why"].startswith("due today")
            quoted = urllib.parse.quote(THEIRS)
            assert (await ours.get(f"/api/maintenance/plan?contractor={quoted}"))[0] == 403
            status, everything = await drafter.get("/api/maintenance/plan")
            assert sorted(u["unit_id"] for u in everything["units"]) == ["U1", "U2"]

    asyncio.run(scenario())

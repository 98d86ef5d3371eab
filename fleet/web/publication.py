"""The district's published lists and the maintenance plan over HTTP (issue 17, items 4-5).

Public, no login (the one unauthenticated surface besides /auth/login and the OpenAPI):

- ``GET /public/``: the published lists as a page, Chinese first then English, rendered
  on the server (no script; every value HTML-escaped).
- ``GET /public/lists.json``: ``{"published": ..., "lists": ...}``; ``published`` is null
  and ``lists`` empty before the first publication.
- ``GET /public/lists.csv``: the same lists as CSV (`fleet.reports.publication.lists_csv`).

They serve only the last *published* publication (`Store.current_publication`): a draft
or an approved one is never read here. They are cheap to ask for: each process keeps the
rendered answers for `PUBLIC_CACHE_S` (one store read per period however many ask),
sends ``Cache-Control: public, max-age`` and an ``ETag`` (a repeat gets 304), and the
bodies hold only what the draft kept, which has no personal data.

Signed in (through ``guarded``, the caller's scope and CSRF as every /api/ route):

- ``GET /api/publication``: the publications and their history: regulators and
  administrators (a draft is not public: dispatchers and contractors get 403).
- ``GET /api/publication/{id}``: one publication with its lists (same roles).
- ``POST /api/publication/draft``, ``/api/publication/{id}/approve``,
  ``/api/publication/{id}/publish``: regulators only (`Principal.can_publish`); with
  ``[publication] approval_by_another`` the approver is not the drafter.
- ``GET /api/maintenance/plan[?contractor=&overdue=&format=json|csv|ics&lang=]``: the plan
  by need of the units the caller sees (a contractor: its own).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import html
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fleet.auth.roles import Role
from fleet.clock import Clock
from fleet.config import ReportsConfig
from fleet.csv_cells import csv_text
from fleet.read.selection import BadRequestError
from fleet.read.shape import to_json
from fleet.read.views import ErrorReply
from fleet.reports.claims import language_of
from fleet.reports.plan import (
    PLAN_CSV_COLUMNS,
    PlanUnitView,
    PlanView,
    Reader,
    plan_ics,
    plan_of,
    plan_rows,
)
from fleet.reports.plan_config import PlanConfig, PublicationConfig
from fleet.reports.publication import (
    LISTS,
    PublicationStepView,
    PublicationsView,
    PublicationView,
    PublicListsView,
    draw_lists,
    lists_csv,
)
from fleet.store.base import Store
from fleet.store.publication import Publication, PublicationError
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of, scope_of

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")

# How long a process serves its rendered public answers before asking the store again.
PUBLIC_CACHE_S = 30.0
# What browsers and proxies may keep (the lists change at a publication, days apart).
PUBLIC_MAX_AGE_S = 60
# The public page: no script at all, its own stylesheet only.
PUBLIC_CSP = (
    "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)

# Each list's title and its columns' headings, Chinese first (the public page).
TITLES = {
    "high_fault": ("高故障率电梯", "High-fault lifts"),
    "three_no": ("“三无”电梯", "Three-no lifts"),
    "aged_without_assessment": (
        "无安全评估记录的老旧电梯",
        "Aged lifts without a safety assessment",
    ),
    "overdue": ("维保逾期电梯", "Lifts overdue for maintenance"),
    "contradicted_contractors": (
        "维保记录与监测矛盾的维保单位",
        "Contractors with contradicted maintenance records",
    ),
}  # fmt: skip
HEADINGS = {
    "rank": ("排名", "Rank"),
    "unit_id": ("注册代码", "Registration code"),
    "building": ("楼宇", "Building"),
    "address": ("地址", "Address"),
    "street": ("街道", "Street"),
    "contractor": ("维保单位", "Contractor"),
    "faults": ("故障次数", "Faults"),
    "trips": ("运行次数", "Trips"),
    "watched_days": ("监测天数", "Days watched"),
    "faults_per_1000_trips": ("每千次运行故障", "Faults per 1,000 trips"),
    "faults_per_unit_month": ("每台每月故障", "Faults per unit-month"),
    "use_unit": ("使用单位", "Use unit"),
    "maintenance_contractor": ("维保单位", "Maintenance contractor"),
    "maintenance_fund": ("维修资金", "Maintenance fund"),
    "missing": ("缺项", "Missing"),
    "install_date": ("安装日期", "Installed"),
    "age_years": ("梯龄（年）", "Age (years)"),
    "due": ("应维保日期", "Due"),
    "days_overdue": ("逾期天数", "Days overdue"),
    "why_zh": ("原因", "Why (zh)"),
    "why_en": ("Reason", "Why (en)"),
    "records": ("维保记录", "Records"),
    "contradicted": ("矛盾记录", "Contradicted"),
    "contradicted_pct": ("矛盾占比 %", "Contradicted %"),
}
_MARKS = {"yes": "有 yes", "no": "无 no", "unknown": "未知 unknown"}


@dataclass(frozen=True, slots=True)
class PublicAnswer:
    """The rendered public answers of one publication (or of none yet)."""

    etag: str
    json_body: bytes
    csv_body: bytes
    html_body: bytes


def public_json(found: Publication | None) -> dict[str, Any]:
    """``/public/lists.json``: `PublicListsView` of ``found`` as JSON."""
    return dict(to_json(PublicListsView.of(found)))


def public_page(found: Publication | None) -> str:
    """``/public/``: the lists as an HTML page, Chinese first; every value escaped."""
    e = html.escape
    parts = [
        '<!doctype html><html lang="zh"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>电梯安全公示 Lift safety lists</title>",
        '<link rel="stylesheet" href="/static/public.css"></head><body><main>',
        '<h1>电梯安全公示 <span lang="en">Lift safety lists</span></h1>',
    ]
    body = public_json(found)
    if body["published"] is None:
        parts.append('<p>尚未公示。 <span lang="en">Nothing has been published yet.</span></p>')
    else:
        lists = body["lists"]
        period = lists.get("period", {})
        parts.append(
            f'<p>公示时间 <span lang="en">Published</span>: {e(str(body["published"]))}; '
            f'统计期 <span lang="en">period</span>: {e(str(period.get("since", "")))} – '
            f"{e(str(period.get('until', '')))}</p>"
            '<p><a href="/public/lists.json">JSON</a> · <a href="/public/lists.csv">CSV</a></p>'
        )
        for name in LISTS:
            zh, en = TITLES[name]
            rows = lists.get(name, {}).get("rows", [])
            parts.append(f'<section><h2>{e(zh)} <span lang="en">{e(en)}</span> ({len(rows)})</h2>')
            if not rows:
                parts.append('<p>无 <span lang="en">None</span></p></section>')
                continue
            columns = list(rows[0])
            names = [HEADINGS.get(c, (c, c)) for c in columns]
            head = "".join(
                f'<th>{e(zh)}<br><span lang="en">{e(en)}</span></th>' for zh, en in names
            )
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
            for row in rows:
                cells = "".join(f"<td>{e(_shown(row.get(c)))}</td>" for c in columns)
                parts.append(f"<tr>{cells}</tr>")
            parts.append("</tbody></table></section>")
    parts.append("</main></body></html>")
    return "".join(parts)


def _shown(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, str) and value in _MARKS:
        return _MARKS[value]
    return str(value)


def render_public(found: Publication | None) -> PublicAnswer:
    """Every public answer of ``found``, rendered once."""
    body = public_json(found)
    json_body = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    csv_body = (lists_csv(body["lists"]) if body["published"] else "\ufeff").encode()
    digest = hashlib.sha256(json_body).hexdigest()[:32]
    return PublicAnswer(f'"{digest}"', json_body, csv_body, public_page(found).encode())


class PublicCache:
    """The rendered public answers of this process, read again after `PUBLIC_CACHE_S`."""

    def __init__(
        self, store: StoreWorker | None, clock: Clock, ttl_s: float = PUBLIC_CACHE_S
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = dt.timedelta(seconds=ttl_s)
        self._answer: PublicAnswer | None = None
        self._read: dt.datetime | None = None
        # One read at a time: anonymous visitors arriving together when the answers are
        # stale wait for one store read instead of each making their own
        # (tests/security/test_public_flood.py).
        self._reading = asyncio.Lock()

    async def answer(self) -> PublicAnswer:
        """The current answers (from the store at most once per ``ttl_s``, however many
        ask at once)."""
        kept = self._fresh()
        if kept is not None:
            return kept
        async with self._reading:
            kept = self._fresh()  # read by whoever held the lock before
            if kept is not None:
                return kept
            now = self._clock()
            found = (
                None
                if self._store is None
                else await self._store.call(lambda s: s.current_publication())
            )
            self._answer, self._read = render_public(found), now
            return self._answer

    def _fresh(self) -> PublicAnswer | None:
        if self._answer is None or self._read is None or self._clock() - self._read >= self._ttl:
            return None
        return self._answer

    def forget(self) -> None:
        """Drop the kept answers (this process just published)."""
        self._answer = None


def _sql(store: Store) -> SqlStore:
    # The worker hands the Store protocol; the lists read the maintenance tables too.
    if not isinstance(store, SqlStore):
        raise TypeError(f"the publication needs a SQL store, not {type(store).__name__}")
    return store


def hopping(worker: StoreWorker) -> Reader:
    """A `fleet.reports.plan.Reader` that runs each read on the store's thread and waits
    for it (to be called from a thread of its own, never the event loop's)."""

    def read(fn: Callable[[SqlStore], T]) -> T:
        return worker.call_blocking(lambda s: fn(_sql(s)))

    return read


def publication_routes(
    store: StoreWorker | None,
    guarded: Callable[[Handler], Handler],
    clock: Clock,
    *,
    plan: PlanConfig,
    publication: PublicationConfig,
    reports: ReportsConfig,
    language: str = "zh",
) -> list[Route]:
    """The public routes and the regulators' and the plan's API (module docstring)."""
    cache = PublicCache(store, clock)

    def cached(kind: str, media_type: str) -> Handler:
        async def serve(request: Request) -> Response:
            answer = await cache.answer()
            headers = {"Cache-Control": f"public, max-age={PUBLIC_MAX_AGE_S}", "ETag": answer.etag}
            if kind == "html":
                headers["Content-Security-Policy"] = PUBLIC_CSP
            if request.headers.get("if-none-match", "") == answer.etag:
                return Response(status_code=304, headers=headers)
            body = {"json": answer.json_body, "csv": answer.csv_body, "html": answer.html_body}[
                kind
            ]
            if kind == "csv":
                headers["Content-Disposition"] = 'attachment; filename="lists.csv"'
            return Response(body, media_type=media_type, headers=headers)

        return serve

    def json_response(body: object, status: int = 200) -> Response:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return Response(text, status_code=status, media_type="application/json")

    def need_store() -> StoreWorker:
        if store is None:
            raise AccessDeniedError(404, "no store behind this API")
        return store

    def may_read_drafts(request: Request) -> None:
        principal = principal_of(request)
        if principal.role not in (Role.REGULATOR, Role.ADMIN):
            raise AccessDeniedError(403, "only regulators and administrators see unpublished lists")

    def may_publish(request: Request) -> str:
        principal = principal_of(request)
        if not principal.can_publish():
            raise AccessDeniedError(
                403, "only a regulator drafts, approves and publishes the lists"
            )
        return principal.username

    async def status(request: Request) -> Response:
        may_read_drafts(request)
        found, steps = await need_store().call(
            lambda s: (s.publications(50), s.publication_steps())
        )
        kept = {p.id for p in found}
        view = PublicationsView(
            publication.approval_by_another,
            tuple(PublicationView.of(p, lists=False) for p in found),
            tuple(PublicationStepView.of(s) for s in steps if s.publication_id in kept),
        )
        return json_response(to_json(view))

    def publication_id(request: Request) -> int:
        text = str(request.path_params["publication_id"])
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise BadRequestError(f"publication id: expected a number, got {text!r}")
        return int(text)

    async def one(request: Request) -> Response:
        may_read_drafts(request)
        wanted = publication_id(request)
        found = await need_store().call(lambda s: s.publication(wanted))
        if found is None:
            return json_response(to_json(ErrorReply(f"publication {wanted} unknown")), 404)
        return json_response(to_json(PublicationView.of(found, lists=True)))

    async def draft(request: Request) -> Response:
        username = may_publish(request)
        now = clock()

        worker = need_store()
        # The plan reads unit by unit off the store thread (`hopping`); the rest of the
        # lists are a few set reads, on it.
        planned = await asyncio.to_thread(plan_of, hopping(worker), plan, now)

        def make(s: Store) -> Publication:
            sql = _sql(s)
            lists = draw_lists(sql, now, publication, reports, plan, planned)
            new_id = sql.draft_publication(lists, now, username, now)
            made = sql.publication(new_id)
            assert made is not None
            return made

        made = await worker.call(make)
        return json_response(to_json(PublicationView.of(made, lists=True)), 201)

    async def step(request: Request) -> Response:
        username = may_publish(request)
        wanted = publication_id(request)
        action = str(request.path_params["action"])
        if action not in ("approve", "publish"):
            return json_response(
                to_json(ErrorReply(f"no step {action!r}: approve or publish")), 404
            )
        now = clock()

        def act(s: Store) -> Publication:
            if action == "approve":
                return s.approve_publication(
                    wanted, username, now, by_another=publication.approval_by_another
                )
            return s.publish_publication(wanted, username, now)

        try:
            done = await need_store().call(act)
        except PublicationError as exc:
            return json_response(to_json(ErrorReply(str(exc))), 409)
        if action == "publish":
            cache.forget()
        return json_response(to_json(PublicationView.of(done, lists=False)))

    async def plan_route(request: Request) -> Response:
        scope = scope_of(request)
        params = request.query_params
        contractor = scope.listing(params.get("contractor", ""))
        lang = language_of(
            params.get("lang", ""), request.headers.get("accept-language", ""), language
        )
        fmt = params.get("format", "json")
        if fmt not in ("json", "csv", "ics"):
            raise BadRequestError(f"format: one of json, csv, ics, not {fmt!r}")
        overdue_only = params.get("overdue", "") in ("1", "true", "yes")
        now = clock()
        entries = await asyncio.to_thread(plan_of, hopping(need_store()), plan, now, contractor)
        if overdue_only:
            entries = [e for e in entries if e.overdue]
        if fmt == "csv":
            return Response(
                "\ufeff" + csv_text(PLAN_CSV_COLUMNS, plan_rows(entries, lang)),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="maintenance-plan.csv"'},
            )
        if fmt == "ics":
            return Response(
                plan_ics(entries, lang, now),
                media_type="text/calendar; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="maintenance-plan.ics"'},
            )
        soon = tuple(e.unit_id for e in entries if e.days_left < plan.due_soon_days)
        units = tuple(PlanUnitView.of(e, lang) for e in entries)
        return json_response(to_json(PlanView(lang, plan.due_soon_days, units, soon)))

    return [
        Route("/public/", cached("html", "text/html; charset=utf-8")),
        Route("/public/lists.json", cached("json", "application/json")),
        Route("/public/lists.csv", cached("csv", "text/csv; charset=utf-8")),
        Route("/api/publication", guarded(status)),
        Route("/api/publication/draft", guarded(draft), methods=["POST"]),
        Route("/api/publication/{publication_id:str}", guarded(one)),
        Route(
            "/api/publication/{publication_id:str}/{action:str}",
            guarded(step),
            methods=["POST"],
        ),
        Route("/api/maintenance/plan", guarded(plan_route)),
    ]

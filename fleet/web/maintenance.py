"""Maintenance truth on the JSON API (issue 17): visits, records with their verdicts, and
the district's view of each contractor's verdict shares. Every read takes the caller's
scope: a contractor sees its own units' visits and its own records only.

- ``GET /api/maintenance/visits`` (``unit``, ``contractor``, ``since``, ``limit``) and
  ``GET /api/units/{unit_id}/visits``: `VisitsView`.
- ``GET /api/maintenance/records`` (``unit``, ``contractor``, ``verdict``, ``since``,
  ``limit``, ``lang``): `RecordsView`.
- ``POST /api/maintenance/records``: a contractor's records, as CSV (``text/csv``, the
  columns of ``maintenance records import``) or JSON ``{"records": [{"unit_id", "date",
  "start", "end", "type", "workers"}, ...]}``; an administrator names the contractor
  (``?contractor=``). Rows refused by line (item number for JSON) and reason, the rest
  stored and judged at once: `ImportView`.
- ``GET /api/maintenance/shares`` (``since``): `VerdictSharesView`.

The upload's derivation and judging run on the store thread, like every write; a year of
one contractor's records is judged in well under a second per hundred records.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.auth.roles import Role
from fleet.clock import Clock
from fleet.read.maintenance import (
    ImportView,
    VerdictSharesView,
    records_for,
    records_view,
    verdict_shares,
    visits_view,
)
from fleet.read.scope import require_unit
from fleet.read.selection import BadRequestError
from fleet.read.shape import to_json
from fleet.read.views import ErrorReply
from fleet.reports.claims import language_of
from fleet.reports.maintenance import (
    ImportResult,
    RecordIn,
    RecordProblem,
    RecordsError,
    parse_records,
    read_record,
    take_records,
)
from fleet.reports.maintenance_config import MaintenanceConfig
from fleet.store.base import Store
from fleet.store.maintenance import RECORD_VERDICTS
from fleet.store.sql import SqlStore
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of, scope_of
from fleet.web.params import integer_param

Handler = Callable[[Request], Awaitable[Response]]
MAX_RECORDS_BYTES = 2 * 1024 * 1024
# Records stored and judged per store call of an upload (about 70 ms of the store thread).
UPLOAD_CHUNK = 500
StoreCall = Callable[[Store], ImportResult]


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def _sql(store: Store) -> SqlStore:
    # The worker hands the Store protocol; the maintenance tables are the SQL store's.
    if not isinstance(store, SqlStore):
        raise TypeError(f"maintenance needs a SQL store, not {type(store).__name__}")
    return store


def _since(request: Request) -> dt.datetime | None:
    text = request.query_params.get("since", "")
    if not text:
        return None
    try:
        return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
    except ValueError:
        raise BadRequestError(f"since: expected a date YYYY-MM-DD, got {text!r}") from None


def _json_records(raw: bytes, zone: dt.tzinfo) -> tuple[list[RecordIn], list[RecordProblem]]:
    """The records of a JSON body, each item's problems named by its number from 1."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadRequestError('body: expected JSON {"records": [...]} or CSV') from None
    items = body.get("records") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequestError('body: "records" must be a list')
    found: list[RecordIn] = []
    problems: list[RecordProblem] = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or not all(isinstance(v, str) for v in item.values()):
            problems.append(RecordProblem(number, "expected an object of text fields"))
            continue
        read = read_record(number, item, zone)
        if isinstance(read, RecordIn):
            found.append(read)
        else:
            problems.append(read)
    return found, problems


def maintenance_routes(
    store: StoreWorker | None,
    guarded: Callable[[Handler], Handler],
    clock: Clock,
    *,
    config: MaintenanceConfig | None = None,
    time_zone: str = "Asia/Shanghai",
    language: str = "zh",
) -> list[Route]:
    """The routes of maintenance truth over ``store`` (a 400 naming the reason when built
    without one); ``guarded`` admits the caller. Times without a UTC offset are read in
    the site's ``time_zone``; evidence is in the reader's language (``lang``, else
    Accept-Language, else ``language``)."""
    rules = config or MaintenanceConfig()
    zone = zoneinfo.ZoneInfo(time_zone)

    def need() -> StoreWorker:
        if store is None:
            raise BadRequestError("the store is not open in this process")
        return store

    def lang_of(request: Request) -> str:
        return language_of(
            request.query_params.get("lang", ""),
            request.headers.get("accept-language", ""),
            language,
        )

    def limit_of(request: Request, default: int) -> int:
        return integer_param("limit", request.query_params.get("limit", ""), default)

    async def visits(request: Request) -> Response:
        worker = need()
        scope = scope_of(request)
        unit_id = str(request.path_params.get("unit_id", request.query_params.get("unit", "")))
        if unit_id:
            await require_unit(worker, scope, unit_id)
        contractor = request.query_params.get("contractor", "")
        since, limit = _since(request), limit_of(request, 200)
        view = await worker.call(
            lambda s: visits_view(
                _sql(s), scope, unit_id=unit_id, contractor=contractor, since=since, limit=limit
            )
        )
        return _JSON(to_json(view))

    async def records(request: Request) -> Response:
        worker = need()
        scope = scope_of(request)
        unit_id = request.query_params.get("unit", "")
        verdict = request.query_params.get("verdict", "")
        if verdict and verdict not in RECORD_VERDICTS:
            raise BadRequestError(
                f"verdict: {verdict!r} is not one of {', '.join(RECORD_VERDICTS)}"
            )
        contractor = request.query_params.get("contractor", "")
        since, limit, lang = _since(request), limit_of(request, 500), lang_of(request)
        view = await worker.call(
            lambda s: records_view(
                _sql(s),
                scope,
                lang,
                unit_id=unit_id,
                contractor=contractor,
                verdict=verdict,
                since=since,
                limit=limit,
            )
        )
        return _JSON(to_json(view))

    async def upload(request: Request) -> Response:
        worker = need()
        principal = principal_of(request)
        if principal.role is Role.CONTRACTOR:
            contractor = principal.contractor
        elif principal.role is Role.ADMIN:
            contractor = request.query_params.get("contractor", "")
            if not contractor:
                raise BadRequestError("contractor: name the contractor filing the records")
        else:
            raise AccessDeniedError(
                403, f"a {principal.role.value} may not file maintenance records"
            )
        body = await request.body()
        if len(body) > MAX_RECORDS_BYTES:
            return _JSON(
                to_json(ErrorReply(f"body: at most {MAX_RECORDS_BYTES} bytes")), status_code=413
            )
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()

        def parse() -> tuple[list[RecordIn], list[RecordProblem]]:
            if kind == "application/json":
                return _json_records(body, zone)
            text = body.decode("utf-8-sig")
            return parse_records(io.StringIO(text, newline=""), "upload", zone)

        try:
            # Off the event loop: 2 MB of rows take about 0.7 s to read, which the agents'
            # streams on this loop must not wait for.
            found, problems = await asyncio.to_thread(parse)
        except (UnicodeDecodeError, csv.Error, RecordsError) as exc:
            raise BadRequestError(f"body: {exc}") from None
        by = principal.display_name or principal.username or "api"
        lang = lang_of(request)
        now = clock()

        def take(part: Sequence[RecordIn], refused: Sequence[RecordProblem]) -> StoreCall:
            def run(s: Store) -> ImportResult:
                return take_records(
                    _sql(s),
                    part,
                    refused,
                    contractor=contractor,
                    uploaded_by=by,
                    source="api",
                    now=now,
                    config=rules,
                )

            return run

        # A store call per UPLOAD_CHUNK records, so that ingest's writes (an entrapment's
        # among them) run between them: 48,000 records (2 MB) held the store thread for
        # about 7 s in one call (tests/security/test_upload_flood.py).
        results = [
            await worker.call(take(found[at : at + UPLOAD_CHUNK], problems if not at else []))
            for at in range(0, max(len(found), 1), UPLOAD_CHUNK)
        ]
        ids = tuple(i for r in results for i in r.stored)
        refused = tuple(sorted((p for r in results for p in r.problems), key=lambda p: p.line))
        stored = await worker.call(lambda s: _sql(s).maintenance_records(ids=ids)) if ids else []
        view = ImportView(
            len(ids), sum(r.duplicates for r in results), refused, records_for(stored, lang)
        )
        return _JSON(to_json(view))

    async def shares(request: Request) -> Response:
        worker = need()
        scope = scope_of(request)
        since = _since(request)
        rows = await worker.call(lambda s: verdict_shares(_sql(s), scope, since))
        shown = None if since is None else since.date().isoformat()
        return _JSON(to_json(VerdictSharesView(shown, tuple(rows))))

    return [
        Route("/api/maintenance/visits", guarded(visits)),
        Route("/api/units/{unit_id:str}/visits", guarded(visits)),
        Route("/api/maintenance/records", guarded(records)),
        Route("/api/maintenance/records", guarded(upload), methods=["POST"]),
        Route("/api/maintenance/shares", guarded(shares)),
    ]

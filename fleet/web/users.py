"""Accounts over the API, for administrators only: the dashboard's users page.

The same operations as ``liftwatch-fleet users`` (fleet/cli/users.py), with the same rules
(`fleet.auth.roles.role_problem`, `fleet.store.users.username_problem`, the password
length of `fleet.auth.passwords`). Every other role gets a 403, whatever it asks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fleet.auth.passwords import hash_password
from fleet.auth.roles import Role, role_problem
from fleet.clock import Clock
from fleet.read.selection import BadRequestError
from fleet.read.shape import out, response, to_json
from fleet.read.views import user_json, users_json
from fleet.store.base import UserError
from fleet.store.users import username_problem
from fleet.store.worker import StoreWorker
from fleet.web.auth import AccessDeniedError, principal_of

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger(__name__)


@response("UserRemoved")
@dataclass(frozen=True)
class UserRemoved:
    """DELETE /api/users/{username}: the account removed, with its sessions and tokens."""

    removed: str = out("the username")


def user_routes(
    store: StoreWorker, clock: Clock, guarded: Callable[[Handler], Handler]
) -> list[Route]:
    """GET/POST /api/users and DELETE /api/users/{username}, admin only."""

    def admin(request: Request) -> str:
        principal = principal_of(request)
        if not principal.can_admin():
            raise AccessDeniedError(403, f"a {principal.role.value} may not manage users")
        return principal.username

    async def listing(request: Request) -> Response:
        admin(request)
        rows = await store.call(lambda s: s.users())
        return JSONResponse(users_json(rows))

    async def add(request: Request) -> Response:
        actor = admin(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise BadRequestError("body: expected JSON {username, role, password, ...}")
        fields = {k: body.get(k, "") for k in ("username", "role", "password", "contractor")}
        fields["display_name"] = body.get("display_name", "")
        if not all(isinstance(v, str) for v in fields.values()):
            raise BadRequestError("body: every field must be a string")
        problem = username_problem(fields["username"]) or role_problem(
            fields["role"], fields["contractor"]
        )
        if problem:
            raise BadRequestError(problem)
        try:
            hashed = await asyncio.to_thread(hash_password, fields["password"])
        except ValueError as exc:
            raise BadRequestError(f"password: {exc}") from None
        now = clock()
        try:
            await store.call(
                lambda s: s.add_user(
                    fields["username"],
                    Role(fields["role"]),
                    hashed,
                    fields["contractor"],
                    fields["display_name"],
                    now=now,
                )
            )
        except UserError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        row = await store.call(lambda s: s.user(fields["username"]))
        if row is None:  # removed again in between by another administrator
            return JSONResponse({"error": "the user was removed meanwhile"}, status_code=409)
        log.info("user %s (%s) added by %s", row.username, row.role.value, actor)
        return JSONResponse(user_json(row), status_code=201)

    async def remove(request: Request) -> Response:
        actor = admin(request)
        username = str(request.path_params["username"])
        if username == actor:
            raise BadRequestError("an administrator cannot remove their own account here")
        if not await store.call(lambda s: s.remove_user(username)):
            return JSONResponse({"error": f"user {username!r} does not exist"}, status_code=404)
        log.info("user %s removed by %s", username, actor)
        return JSONResponse(to_json(UserRemoved(username)))

    return [
        Route("/api/users", guarded(listing), methods=["GET"]),
        Route("/api/users", guarded(add), methods=["POST"]),
        Route("/api/users/{username:str}", guarded(remove), methods=["DELETE"]),
    ]

"""The store's users, login sessions and API tokens (issue 9, access control).

Secrets are never stored: a session id or an API token is kept only as its SHA-256 (both
are 256 random bits, so a plain hash is as good as a slow one and costs nothing per
request), a password only as the scrypt hash `fleet.auth.passwords` made. A session's CSRF
token is stored as it is: the page must be given it back, and alone it grants nothing.
Sessions expire at a fixed time (``ttl`` after login); expired rows are purged whenever a
session is created, and by `UserStore.purge_sessions`.

`UserStore` is a mixin of `fleet.store.sql.SqlStore`: the same SQL on both backends, run
through its driver hooks. Sessions and tokens reference their user with ON DELETE CASCADE,
so that no session can outlive its user even when two fleets race on one PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from fleet.auth.roles import Role, role_problem
from fleet.store.base import TokenRow, UserError, UserRow

__all__ = [
    "TOKEN_PREFIX",
    "USER_TABLES",
    "TokenRow",
    "UserError",
    "UserRow",
    "UserStore",
    "label_problem",
    "username_problem",
]

# Migration "users": the same DDL on both backends. Times are microseconds since the epoch.
USER_TABLES = """
CREATE TABLE users (
    username       TEXT PRIMARY KEY,
    role           TEXT NOT NULL,
    contractor     TEXT NOT NULL DEFAULT '',
    display_name   TEXT NOT NULL DEFAULT '',
    password_hash  TEXT NOT NULL,
    created_us     BIGINT NOT NULL
);
CREATE TABLE sessions (
    session_hash  TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    csrf_token    TEXT NOT NULL,
    created_us    BIGINT NOT NULL,
    expires_us    BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (username);
CREATE INDEX sessions_expires ON sessions (expires_us);
CREATE TABLE api_tokens (
    token_hash  TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
    label       TEXT NOT NULL,
    created_us  BIGINT NOT NULL,
    UNIQUE (username, label)
);
"""

TOKEN_PREFIX = "lwt_"  # tells a leaked API token apart in logs and secret scanners
_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_LABEL_MAX = 64
_USER_COLUMNS = "u.username, u.role, u.contractor, u.display_name, u.password_hash, u.created_us"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def username_problem(username: str) -> str | None:
    """Why ``username`` is not a valid username, or None when it is."""
    if _USERNAME.fullmatch(username) is None:
        return f"username {username!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"
    return None


def label_problem(label: str) -> str | None:
    """Why ``label`` is not a valid API token label, or None when it is."""
    if not label.strip() or len(label) > _LABEL_MAX:
        return f"a token label must be 1-{_LABEL_MAX} characters, not blank"
    if not label.isprintable():
        return f"token label {label!r} has control characters"
    return None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _us(moment: dt.datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _user_row(row: Sequence[Any]) -> UserRow:
    return UserRow(
        username=str(row[0]),
        role=Role(row[1]),
        contractor=str(row[2]),
        display_name=str(row[3]),
        password_hash=str(row[4]),
        created=_EPOCH + dt.timedelta(microseconds=int(row[5])),
    )


class UserStore:
    """Users, sessions and API tokens over the driver hooks of `SqlStore`."""

    # -- driver hooks (SqlStore supplies them) --------------------------------------------

    def _execute(self, text: str, params: Sequence[object] = ()) -> Any:
        raise NotImplementedError

    def _transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    # -- users ----------------------------------------------------------------------------

    def add_user(
        self,
        username: str,
        role: Role,
        password_hash: str,
        contractor: str = "",
        display_name: str = "",
        *,
        now: dt.datetime,
    ) -> None:
        """Create user ``username``.

        Raises `UserError` when the name is malformed (1-64 of ``[A-Za-z0-9._-]``) or
        taken, the role unknown, a contractor user lacks its contractor (or another role
        has one), ``password_hash`` is empty or ``display_name`` is not printable text.
        """
        problem = username_problem(username) or role_problem(role, contractor)
        if problem is None and not password_hash:
            problem = "a user needs a password hash"
        if problem is None and (len(display_name) > 128 or not display_name.isprintable()):
            problem = "a display name must be at most 128 printable characters"
        if problem is not None:
            raise UserError(problem)
        with self._transaction(durable=True):
            added = self._execute(
                "INSERT INTO users (username, role, contractor, display_name, password_hash, "
                "created_us) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING username",
                (username, Role(role).value, contractor, display_name, password_hash, _us(now)),
            ).fetchall()
        if not added:
            raise UserError(f"user {username!r} already exists")

    def users(self) -> list[UserRow]:
        """Every user, by username."""
        rows = self._execute(f"SELECT {_USER_COLUMNS} FROM users u ORDER BY u.username")
        return [_user_row(r) for r in rows.fetchall()]

    def user(self, username: str) -> UserRow | None:
        """The user ``username``, or None."""
        row = self._execute(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.username = ?", (username,)
        ).fetchone()
        return None if row is None else _user_row(row)

    def remove_user(self, username: str) -> bool:
        """Delete user ``username`` with its sessions and API tokens; False when unknown."""
        with self._transaction(durable=True):
            # Explicit deletes as well as the cascade: SQLite enforces foreign keys only
            # where a connection turned them on.
            self._execute("DELETE FROM sessions WHERE username = ?", (username,))
            self._execute("DELETE FROM api_tokens WHERE username = ?", (username,))
            gone = self._execute(
                "DELETE FROM users WHERE username = ? RETURNING username", (username,)
            ).fetchall()
        return bool(gone)

    def set_password(self, username: str, password_hash: str) -> bool:
        """Store a new password hash for ``username`` and end all of its sessions (a
        password is changed when it may be known to someone else); False when unknown.
        API tokens stay valid: revoke them one by one."""
        if not password_hash:
            raise UserError("a user needs a password hash")
        with self._transaction(durable=True):
            changed = self._execute(
                "UPDATE users SET password_hash = ? WHERE username = ? RETURNING username",
                (password_hash, username),
            ).fetchall()
            self._execute("DELETE FROM sessions WHERE username = ?", (username,))
        return bool(changed)

    # -- sessions -------------------------------------------------------------------------

    def create_session(self, username: str, now: dt.datetime, ttl: dt.timedelta) -> tuple[str, str]:
        """Open a session for ``username`` that expires ``ttl`` after ``now``.

        Returns (session id, CSRF token), both 256-bit random URL-safe strings; only the
        session id's hash is stored. Purges expired sessions on the way. Raises
        `UserError` for an unknown user or a ``ttl`` that is not positive.
        """
        if ttl <= dt.timedelta(0):
            raise UserError(f"a session needs a positive lifetime, not {ttl}")
        session_id = secrets.token_urlsafe(32)
        csrf_token = secrets.token_urlsafe(32)
        with self._transaction(durable=True):
            self._execute("DELETE FROM sessions WHERE expires_us <= ?", (_us(now),))
            # INSERT ... SELECT: no session for a user removed a moment ago.
            added = self._execute(
                "INSERT INTO sessions (session_hash, username, csrf_token, created_us, "
                "expires_us) SELECT ?, username, ?, ?, ? FROM users WHERE username = ? "
                "RETURNING username",
                (_digest(session_id), csrf_token, _us(now), _us(now + ttl), username),
            ).fetchall()
        if not added:
            raise UserError(f"user {username!r} does not exist")
        return session_id, csrf_token

    def session(self, session_id: str, now: dt.datetime) -> tuple[UserRow, str] | None:
        """The user of session ``session_id`` and the session's CSRF token; None when the
        session is unknown, ended or expired at ``now``."""
        row = self._execute(
            f"SELECT {_USER_COLUMNS}, s.csrf_token FROM sessions s "
            "JOIN users u ON u.username = s.username "
            "WHERE s.session_hash = ? AND s.expires_us > ?",
            (_digest(session_id), _us(now)),
        ).fetchone()
        return None if row is None else (_user_row(row), str(row[6]))

    def end_session(self, session_id: str) -> None:
        """Forget session ``session_id`` (log out); an unknown id is not an error."""
        with self._transaction():
            self._execute("DELETE FROM sessions WHERE session_hash = ?", (_digest(session_id),))

    def purge_sessions(self, now: dt.datetime) -> int:
        """Delete the sessions expired by ``now``; returns how many were deleted."""
        with self._transaction():
            gone = self._execute(
                "DELETE FROM sessions WHERE expires_us <= ? RETURNING session_hash", (_us(now),)
            ).fetchall()
        return len(gone)

    # -- API tokens -----------------------------------------------------------------------

    def create_token(self, username: str, label: str, now: dt.datetime) -> str:
        """A new API token for ``username`` named ``label``: ``lwt_`` and 256 random bits.

        Returned only now; the store keeps its hash. Raises `UserError` for an unknown
        user, a malformed label or one the user already has.
        """
        problem = label_problem(label)
        if problem is not None:
            raise UserError(problem)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._transaction(durable=True):
            if self.user(username) is None:
                raise UserError(f"user {username!r} does not exist")
            added = self._execute(
                "INSERT INTO api_tokens (token_hash, username, label, created_us) "
                "SELECT ?, username, ?, ? FROM users WHERE username = ? "
                "ON CONFLICT DO NOTHING RETURNING label",
                (_digest(token), label, _us(now), username),
            ).fetchall()
        if not added:
            raise UserError(f"user {username!r} already has a token labelled {label!r}")
        return token

    def token_user(self, token: str) -> UserRow | None:
        """The user API token ``token`` belongs to; None for an unknown or revoked one."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        row = self._execute(
            f"SELECT {_USER_COLUMNS} FROM api_tokens t JOIN users u ON u.username = t.username "
            "WHERE t.token_hash = ?",
            (_digest(token),),
        ).fetchone()
        return None if row is None else _user_row(row)

    def tokens(self, username: str) -> list[TokenRow]:
        """``username``'s API tokens (label and creation time, no secret), by label."""
        rows = self._execute(
            "SELECT label, created_us FROM api_tokens WHERE username = ? ORDER BY label",
            (username,),
        ).fetchall()
        return [TokenRow(str(r[0]), _EPOCH + dt.timedelta(microseconds=int(r[1]))) for r in rows]

    def revoke_token(self, username: str, label: str) -> bool:
        """Delete ``username``'s token ``label``; False when it has none of that label."""
        with self._transaction(durable=True):
            gone = self._execute(
                "DELETE FROM api_tokens WHERE username = ? AND label = ? RETURNING label",
                (username, label),
            ).fetchall()
        return bool(gone)

"""What the CLI (``northbound status`` / ``dead-letters --json``) and the API
(``GET /api/northbound``) show of northbound forwarding: one definition each
(`fleet.read.shape`), so both print the same keys."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from fleet.read.shape import out, response
from fleet.store.northbound import DeadLetter, PlatformStatus


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@response("NorthboundPlatform")
@dataclass(frozen=True)
class PlatformView:
    """One platform's forwarding status."""

    platform: str = out("the NAME of [northbound.platform.NAME]")
    backlog: int = out("history entries not yet sent, skipped or dead-lettered", minimum=0)
    oldest_unsent: str | None = out("fleet time of the oldest of them", fmt="date-time")
    oldest_unsent_age_s: float | None = out("its age in seconds")
    units_behind: int = out("units with a backlog", minimum=0)
    sent: int = out("messages the platform took", minimum=0)
    rejected: int = out("messages the platform refused", minimum=0)
    dead_letters: int = out("refused messages not replayed", minimum=0)
    replaying: int = out("dead letters waiting to be sent again", minimum=0)
    sender: str | None = out("the fleet instance holding the lease (null: none)")
    lease_until: str | None = out(fmt="date-time")
    last_sent: str | None = out(fmt="date-time")
    last_error: str | None = out("the last failed attempt or refusal")
    last_error_at: str | None = out(fmt="date-time")

    @classmethod
    def of(cls, status: PlatformStatus, now: dt.datetime) -> PlatformView:
        """The view of ``status`` as of ``now``."""
        oldest = status.oldest_unsent
        return cls(
            platform=status.platform,
            backlog=status.backlog,
            oldest_unsent=_iso(oldest),
            oldest_unsent_age_s=None
            if oldest is None
            else round((now - oldest).total_seconds(), 3),
            units_behind=status.units_behind,
            sent=status.sent,
            rejected=status.rejected,
            dead_letters=status.dead_letters,
            replaying=status.replaying,
            sender=status.owner or None,
            lease_until=_iso(status.lease_until),
            last_sent=_iso(status.last_sent),
            last_error=status.last_error or None,
            last_error_at=_iso(status.last_error_at),
        )


@response("NorthboundDeadLetter")
@dataclass(frozen=True)
class DeadLetterView:
    """A message a platform refused."""

    id: int = out()
    platform: str = out()
    unit_id: str = out()
    seq: int = out("the unit's history entry")
    key: str = out("its idempotency key")
    message: str = out("the mapping's message name")
    status: int | None = out("the platform's HTTP status (null: none)")
    reason: str = out("the platform's reason")
    dead_at: str = out(fmt="date-time")
    state: str = out("dead, replay, delivered or skipped")
    replays: int = out(minimum=0)
    delivered_at: str | None = out(fmt="date-time")
    body: str = out("the refused body, as sent")

    @classmethod
    def of(cls, letter: DeadLetter) -> DeadLetterView:
        """The view of ``letter``."""
        return cls(
            id=letter.id,
            platform=letter.platform,
            unit_id=letter.unit_id,
            seq=letter.seq,
            key=letter.message_key,
            message=letter.kind,
            status=letter.status,
            reason=letter.reason,
            dead_at=_iso(letter.dead) or "",
            state=letter.state,
            replays=letter.replays,
            delivered_at=_iso(letter.delivered),
            body=letter.body,
        )


@response("Northbound")
@dataclass(frozen=True)
class NorthboundView:
    """Every platform's status and the newest dead letters."""

    platforms: tuple[PlatformView, ...] = out()
    dead_letters: tuple[DeadLetterView, ...] = out("newest first")

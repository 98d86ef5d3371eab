"""Who was sent to an alarm and when they are expected (the ``dispatch`` step, issue 19):
the one check of a dispatch's fields, shared by the API (POST /api/alarms/{id}/dispatch)
and the CLI (`liftwatch-fleet alarms dispatch`), so that both accept and refuse alike."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from fleet.store.base import MAX_CREW_CHARS

# The furthest ETA a crew dispatched step may give, in minutes from now (a day).
MAX_ETA_MINUTES = 1440
# A clock time of the site's day: "04:20" or "4:20" (24-hour).
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class CrewError(ValueError):
    """A dispatch's fields are unusable; the message names the field and why."""


def eta_at(text: str, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The absolute ETA (UTC) of ``text``: a clock time "HH:MM" of today in the site's
    ``zone``, or a date and time "YYYY-MM-DDTHH:MM" (site time unless it has an offset).
    `CrewError` naming ``eta_at`` when it is neither, earlier than ``now`` (a crew cannot
    arrive in the past: a time after midnight needs its date), or more than
    `MAX_ETA_MINUTES` ahead."""
    text = text.strip()
    clock = _CLOCK.match(text)
    local_now = now.astimezone(zone)
    if clock:
        at = local_now.replace(hour=int(clock[1]), minute=int(clock[2]), second=0, microsecond=0)
    else:
        try:
            at = dt.datetime.fromisoformat(text)
        except ValueError:
            raise CrewError(
                f"eta_at: expected a clock time HH:MM or YYYY-MM-DDTHH:MM, got {text!r}"
            ) from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=zone)
    # Within the minute of now counts as now: a dispatcher typing the current minute.
    if at < local_now.replace(second=0, microsecond=0):
        raise CrewError(
            f"eta_at: {at.astimezone(zone):%Y-%m-%d %H:%M} is earlier than now "
            f"({local_now:%Y-%m-%d %H:%M} {zone.key}); give a later time "
            "(a time after midnight with its date)"
        )
    if at - now > dt.timedelta(minutes=MAX_ETA_MINUTES):
        raise CrewError(f"eta_at: more than {MAX_ETA_MINUTES} minutes from now")
    return max(at.astimezone(dt.UTC), now)


def crew_and_eta(
    crew: object,
    eta_minutes: object,
    eta_text: object,
    now: dt.datetime,
    zone: zoneinfo.ZoneInfo,
) -> tuple[str, dt.datetime]:
    """Who was sent (``crew``: 1 to `MAX_CREW_CHARS` characters, stripped) and the
    absolute ETA: exactly one of ``eta_minutes`` (0 to `MAX_ETA_MINUTES` from ``now``)
    and ``eta_text`` (see `eta_at`). `CrewError` naming the field otherwise."""
    if not isinstance(crew, str) or not crew.strip():
        raise CrewError("crew: say who was sent (a name or team)")
    if len(crew.strip()) > MAX_CREW_CHARS:
        raise CrewError(f"crew: longer than {MAX_CREW_CHARS} characters")
    if (eta_minutes is None) == (eta_text is None or eta_text == ""):
        raise CrewError("give the ETA as exactly one of eta_minutes (from now) or eta_at (HH:MM)")
    if eta_minutes is not None:
        if isinstance(eta_minutes, bool) or not isinstance(eta_minutes, int | float):
            raise CrewError("eta_minutes: must be a number of minutes")
        if not 0 <= eta_minutes <= MAX_ETA_MINUTES:
            raise CrewError(f"eta_minutes: must be 0 to {MAX_ETA_MINUTES}")
        return crew.strip(), now + dt.timedelta(minutes=float(eta_minutes))
    if not isinstance(eta_text, str):
        raise CrewError("eta_at: must be text, HH:MM or YYYY-MM-DDTHH:MM")
    return crew.strip(), eta_at(eta_text, now, zone)

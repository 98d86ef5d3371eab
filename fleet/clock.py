"""The fleet's notion of wall-clock time, injected wherever logic needs ``now``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The wall clock as an aware UTC datetime: the production `Clock`."""
    return dt.datetime.now(dt.UTC)

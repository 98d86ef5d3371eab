"""Failed logins slow down further attempts, per username and per client address.

Pure bookkeeping with the time passed in (`fleet.clock.Clock`): a key (a username, or an
address) may fail ``free_failures`` times; after that each attempt must wait, first
``lockout_s``, doubling with every further failure up to ``lockout_max_s``. A username's
count is forgotten at its next good login; any key's once ``lockout_max_s`` has passed
without a failure since its last wait ended. An attempt made while a key must wait is
refused without checking the password (429 with Retry-After), so a locked account answers
the same whether the guess was right or not, and the right password works again once the
wait is over.

An address gets ``address_factor`` times the failures of a username: several people
behind one NAT or proxy mistype too, and one attacker guessing many usernames from one
address is still slowed down. Behind a reverse proxy every client has the proxy's
address; the per-username count still holds there.

The table is bounded (`MAX_KEYS`): beyond it the keys longest without a failure are
forgotten first, so that made-up usernames cannot grow the fleet's memory.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import dataclass

from fleet.clock import Clock

# Keys kept at most (each a few hundred bytes); the oldest go first.
MAX_KEYS = 50_000


@dataclass(frozen=True, slots=True)
class ThrottleSettings:
    """See the module docstring; the ``[http] login_*`` keys of `fleet.config`."""

    free_failures: int = 5
    lockout_s: float = 30.0
    lockout_max_s: float = 900.0
    address_factor: int = 4


@dataclass(slots=True)
class _Failures:
    count: int
    last: dt.datetime
    until: dt.datetime


class LoginThrottle:
    """The failed-login counts of one process (see the module docstring)."""

    def __init__(self, settings: ThrottleSettings, clock: Clock) -> None:
        self.settings = settings
        self._clock = clock
        # Insertion order = order of the last failure: the front is the stalest.
        self._keys: dict[str, _Failures] = {}

    def wait_s(self, username: str, address: str) -> float:
        """Seconds before ``username`` may try again from ``address`` (0: now)."""
        now = self._clock()
        waits = [self._wait(key, now) for key in _keys(username, address)]
        return max(waits, default=0.0)

    def failed(self, username: str, address: str) -> float:
        """Count a failed login; returns the seconds the next attempt must wait."""
        now = self._clock()
        for key in _keys(username, address):
            entry = self._current(key, now)
            count = 1 if entry is None else entry.count + 1
            allowed = self.settings.free_failures * (
                self.settings.address_factor if key.startswith("a:") else 1
            )
            until = now
            if count >= allowed:
                doublings = min(count - allowed, 32)
                wait = min(self.settings.lockout_s * 2**doublings, self.settings.lockout_max_s)
                until = now + dt.timedelta(seconds=wait)
            self._keys.pop(key, None)
            self._keys[key] = _Failures(count, now, until)
        self._prune(now)
        return self.wait_s(username, address)

    def succeeded(self, username: str) -> None:
        """A good login: forget ``username``'s failures (not its address's: a valid
        account must not reset the count of someone guessing other accounts)."""
        self._keys.pop(_user(username), None)

    def failures(self, username: str) -> int:
        """Failed logins counted against ``username`` now."""
        entry = self._current(_user(username), self._clock())
        return 0 if entry is None else entry.count

    def _wait(self, key: str, now: dt.datetime) -> float:
        entry = self._current(key, now)
        if entry is None or entry.until <= now:
            return 0.0
        return (entry.until - now).total_seconds()

    def _current(self, key: str, now: dt.datetime) -> _Failures | None:
        entry = self._keys.get(key)
        if entry is None:
            return None
        if (now - entry.until).total_seconds() >= self.settings.lockout_max_s:
            del self._keys[key]
            return None
        return entry

    def _prune(self, now: dt.datetime) -> None:
        while len(self._keys) > MAX_KEYS:
            del self._keys[next(iter(self._keys))]
        # Stale keys at the front (the oldest failures) go too.
        for key in list(itertools.islice(self._keys, 16)):
            if self._current(key, now) is not None:
                break


def retry_after(wait_s: float) -> str:
    """A Retry-After header value for ``wait_s`` seconds (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait_s)))


def _user(username: str) -> str:
    return f"u:{username.casefold()}"


def _keys(username: str, address: str) -> tuple[str, ...]:
    return (_user(username), f"a:{address}")

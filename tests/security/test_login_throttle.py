"""Failed logins slow down the next attempts, per username and per address (issue 14,
"Login throttling"; the probe ``login_throttled``), against a real fleet whose clock the
test advances (no sleeping)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request

from fleet.auth.throttle import MAX_KEYS, LoginThrottle, ThrottleSettings
from fleet.config import FleetConfig, StoreConfig
from tests.fleet.harness import Fleet, running_fleet
from tests.security.conftest import District, with_timeout

RIGHT = "correct horse battery"  # the district's users' password
THROTTLED = "liftwatch_fleet_login_throttled_total"


async def login(fleet: Fleet, username: str, password: str) -> tuple[int, str]:
    """One login attempt: its status, and its Retry-After header ("" when none)."""

    def post() -> tuple[int, str]:
        request = urllib.request.Request(
            f"http://{fleet.http}/auth/login",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, reply.headers.get("Retry-After", "")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Retry-After", "")

    return await asyncio.to_thread(post)


def advance(fleet: Fleet, seconds: float) -> None:
    """Move the fleet's clock on."""
    fleet.clock.now += dt.timedelta(seconds=seconds)


def test_failed_logins_lock_a_user_out_for_a_doubling_while(district: District) -> None:
    config = FleetConfig(store=StoreConfig(path=str(district.db)))

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            for _ in range(5):
                assert (await login(fleet, "reg", "guess"))[0] == 401
            # Locked: even the right password is refused, unchecked, for 30 s.
            assert await login(fleet, "reg", RIGHT) == (429, "30")
            assert fleet.metrics.value(THROTTLED) == 1
            advance(fleet, 29)
            assert (await login(fleet, "reg", RIGHT))[0] == 429
            advance(fleet, 2)
            # Past the window, one more failure doubles the wait.
            assert (await login(fleet, "reg", "guess"))[0] == 401
            advance(fleet, 31)
            assert await login(fleet, "reg", RIGHT) == (429, "29")
            advance(fleet, 30)
            assert (await login(fleet, "reg", RIGHT))[0] == 200
            # A good login forgets the user's failures: one slip is not a lockout.
            assert (await login(fleet, "reg", "guess"))[0] == 401
            assert (await login(fleet, "reg", RIGHT))[0] == 200
            # Other users were never slowed down by reg's failures (the address has
            # 4 x 5 free failures, 7 used).
            assert (await login(fleet, "c1", RIGHT))[0] == 200

    asyncio.run(with_timeout(scenario(), 60))


def test_one_address_guessing_many_users_is_slowed_down(district: District) -> None:
    config = FleetConfig(store=StoreConfig(path=str(district.db)))

    async def scenario() -> None:
        async with running_fleet(config, http=True, auth=True) as fleet:
            for n in range(20):
                assert (await login(fleet, f"nobody{n}", "guess"))[0] == 401
            assert (await login(fleet, "c1", RIGHT))[0] == 429
            advance(fleet, 31)
            assert (await login(fleet, "c1", RIGHT))[0] == 200

    asyncio.run(with_timeout(scenario(), 60))


def test_the_throttle_answers_retry_after_and_stays_bounded() -> None:
    now = [dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]
    throttle = LoginThrottle(
        ThrottleSettings(free_failures=2, lockout_s=10, lockout_max_s=40), lambda: now[0]
    )
    assert throttle.failed("a", "1.2.3.4") == 0
    assert throttle.failed("a", "1.2.3.4") == 10
    now[0] += dt.timedelta(seconds=10)
    assert throttle.wait_s("a", "1.2.3.4") == 0
    assert throttle.failed("a", "1.2.3.4") == 20
    now[0] += dt.timedelta(seconds=20)
    assert throttle.failed("a", "1.2.3.4") == 40
    now[0] += dt.timedelta(seconds=40)
    assert throttle.failed("a", "1.2.3.4") == 40  # capped at lockout_max_s
    # A long quiet spell forgets the count.
    now[0] += dt.timedelta(seconds=81)
    assert throttle.failures("a") == 0 and throttle.wait_s("a", "1.2.3.4") == 0
    # Made-up usernames cannot grow the table without bound.
    for n in range(MAX_KEYS + 100):
        throttle.failed(f"made-up-{n}", "5.6.7.8")
    assert len(throttle._keys) <= MAX_KEYS

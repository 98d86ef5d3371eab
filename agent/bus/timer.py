"""A sleep for the RTU inter-frame silence that ends on time, not up to a millisecond late.

asyncio's timers wake the loop through the selector's timeout, and epoll takes whole
milliseconds, rounded up (CPython converts with ROUND_CEILING). A 1.75 ms silence (the
Modbus gap above 19200 baud) therefore lasts 2 ms and more, about 0.3-0.5 ms longer than
asked: at 115200 baud, where a 10-register read is 6.4 ms on the wire, that alone costs
the line several per cent of its capacity.

`FineTimer` sleeps on a Linux timerfd instead: a kernel timer with nanosecond resolution,
armed at an absolute CLOCK_MONOTONIC deadline (the clock of `time.monotonic` and so of
asyncio's loop) and watched by the loop like any socket. The loop waits in epoll as
before, nothing spins, and it wakes within tens of microseconds after the deadline. The
timer never ends a sleep early: the kernel does not fire before the deadline, and a
wake-up is only accepted once `time.monotonic()` has reached it.

Waits of `COARSE_S` and more (the scheduler's sleep between poll cycles) go to asyncio's
timers: a millisecond late is noise against them, and they cost no system calls. Where
there is no timerfd (not Linux, or the call fails), every wait falls back to
`asyncio.sleep`, which is late but never early. Python 3.13 has `os.timerfd_create`; on
3.11 and 3.12 the two libc calls are made through ctypes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_TFD_TIMER_ABSTIME = 1
COARSE_S = 0.01


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Timerfd:
    """One timerfd, armed at absolute CLOCK_MONOTONIC deadlines (os module or libc)."""

    def __init__(self) -> None:
        self._os_settime: Any = getattr(os, "timerfd_settime_ns", None)
        create: Any = getattr(os, "timerfd_create", None)
        if create is not None and self._os_settime is not None:
            self._libc = None
            self.fd = int(create(time.CLOCK_MONOTONIC, flags=_TFD_NONBLOCK | _TFD_CLOEXEC))
            return
        self._os_settime = None
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = int(self._libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC))
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_create: {os.strerror(errno)}")
        self.fd = fd
        # One itimerspec, rewritten for every arming (no allocation per wait).
        self._value = _Itimerspec()
        self._expiry = self._value.it_value
        self._value_ref = ctypes.byref(self._value)

    def arm(self, deadline: float) -> None:
        """Make the fd readable at monotonic time ``deadline`` (and not before)."""
        ns = max(int(deadline * 1e9) + 1, 1)  # rounded up: never before the deadline
        if self._os_settime is not None:
            self._os_settime(self.fd, flags=_TFD_TIMER_ABSTIME, initial=ns)
            return
        assert self._libc is not None
        self._expiry.tv_sec, self._expiry.tv_nsec = divmod(ns, 1_000_000_000)
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, self._value_ref, None):
            errno = ctypes.get_errno()
            raise OSError(errno, f"timerfd_settime: {os.strerror(errno)}")

    def drain(self) -> None:
        """Read the expiry count so the fd stops being readable."""
        with contextlib.suppress(BlockingIOError):  # already drained: a stale wake-up
            os.read(self.fd, 8)

    def close(self) -> None:
        """Release the fd."""
        os.close(self.fd)


class FineTimer:
    """Sleeps shorter than `COARSE_S` with sub-millisecond precision on the running loop,
    one sleeper at a time.

    Created lazily on first use inside the loop; `close` releases the fd (the bus
    scheduler does so when it stops). Concurrent sleeps on one timer are not supported:
    each bus scheduler owns its own.
    """

    def __init__(self) -> None:
        self._timerfd: _Timerfd | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._unavailable = sys.platform != "linux"

    @property
    def precise(self) -> bool:
        """False once the timer has fallen back to asyncio's millisecond timers."""
        return not self._unavailable

    async def sleep(self, seconds: float) -> None:
        """Sleep at least ``seconds`` of `time.monotonic`, waking as soon after as the
        loop allows."""
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        if seconds >= COARSE_S or self._unavailable or not self._ready():
            await asyncio.sleep(seconds)
            return
        assert self._timerfd is not None and self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter, self._deadline = waiter, deadline
        self._timerfd.arm(deadline)
        try:
            await waiter
        finally:
            self._waiter = None

    def _ready(self) -> bool:
        loop = asyncio.get_running_loop()
        if self._timerfd is not None and self._loop is loop:
            return True
        self.close()
        try:
            self._timerfd = _Timerfd()
            loop.add_reader(self._timerfd.fd, self._on_expiry)
        except (OSError, AttributeError, NotImplementedError, RuntimeError) as exc:
            # No timerfd here: asyncio's timers are late by up to a millisecond, which
            # costs throughput on a fast line but never shortens a silence.
            log.info("no timerfd (%s): inter-frame gaps use asyncio timers", exc)
            self.close()
            self._unavailable = True
            return False
        self._loop = loop
        return True

    def _on_expiry(self) -> None:
        assert self._timerfd is not None
        self._timerfd.drain()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # the sleep was cancelled after the timer was armed
        if time.monotonic() < self._deadline:
            # Never early: re-arm for what is left (cannot happen with an absolute
            # CLOCK_MONOTONIC timer, but the wake-up is cheap to check).
            self._timerfd.arm(self._deadline)
            return
        waiter.set_result(None)

    def close(self) -> None:
        """Stop watching the fd and release it; a later sleep opens a new one."""
        if self._timerfd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._timerfd.fd)
            self._timerfd.close()
        self._timerfd = None
        self._loop = None

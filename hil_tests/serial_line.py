"""A virtual serial line: a socat pty pair with stable paths, for RTU over a "real" tty.

    async with PtyPair(tmp_path) as line:
        emulator opens line.emulator_path   (DIR/emulator)
        agent opens    line.agent_path      (DIR/agent)

socat runs as `socat -d -d pty,raw,echo=0,link=DIR/emulator pty,raw,echo=0,link=DIR/agent`.
Readiness is read from its own log on stderr, not guessed with sleeps: both
"PTY is /dev/pts/N" lines, then "starting data transfer loop", which socat prints after
both addresses (and their links) are open. Its stderr keeps being drained so socat can
never block on a full pipe; the last lines go into any error message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import shutil
from pathlib import Path
from types import TracebackType

_PTY_LINE = re.compile(rb"PTY is (\S+)")
_TRANSFER_LINE = b"starting data transfer loop"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class PtyPair:
    """Two connected pseudo-terminals made by socat; see the module docstring."""

    def __init__(
        self,
        directory: Path | str,
        *,
        socat: str = "socat",
        emulator_name: str = "emulator",
        agent_name: str = "agent",
    ) -> None:
        """Prepare links `directory/emulator_name` and `directory/agent_name` (not yet made)."""
        self.directory = Path(directory)
        self.emulator_path = self.directory / emulator_name
        self.agent_path = self.directory / agent_name
        self.pts: tuple[str, ...] = ()
        self._socat = socat
        self._proc: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None
        self._log: collections.deque[bytes] = collections.deque(maxlen=20)

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start socat and return when both links exist.

        Raises FileNotFoundError when socat is not installed, RuntimeError when it exits or
        does not get ready within `timeout_s` (with its last log lines).
        """
        executable = shutil.which(self._socat)
        if executable is None:
            raise FileNotFoundError(f"{self._socat} is not installed (needed for a pty pair)")
        self.directory.mkdir(parents=True, exist_ok=True)
        for link in (self.emulator_path, self.agent_path):
            link.unlink(missing_ok=True)  # a stale link from a killed run would mislead
        self._proc = await asyncio.create_subprocess_exec(
            executable,
            "-d",
            "-d",
            f"pty,raw,echo=0,link={self.emulator_path}",
            f"pty,raw,echo=0,link={self.agent_path}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(self._await_ready(), timeout_s)
        except (TimeoutError, RuntimeError) as exc:
            await self.stop()
            detail = b"\n".join(self._log).decode(errors="replace")
            raise RuntimeError(f"socat did not make a pty pair: {exc}\n{detail}") from None
        missing = [p for p in (self.emulator_path, self.agent_path) if not p.exists()]
        if missing:
            await self.stop()
            raise RuntimeError(f"socat reported ready but {missing[0]} does not exist")
        assert self._proc.stderr is not None
        self._drain = asyncio.create_task(self._drain_stderr(self._proc.stderr))

    async def _await_ready(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        pts: list[str] = []
        while True:
            line = await self._proc.stderr.readline()
            if not line:
                raise RuntimeError(f"socat exited with status {await self._proc.wait()}")
            self._log.append(line.rstrip())
            if match := _PTY_LINE.search(line):
                pts.append(match[1].decode())
            if _TRANSFER_LINE in line and len(pts) == 2:
                self.pts = tuple(pts)
                return

    async def _drain_stderr(self, stderr: asyncio.StreamReader) -> None:
        while line := await stderr.readline():
            self._log.append(line.rstrip())

    @property
    def running(self) -> bool:
        """True while socat runs."""
        return self._proc is not None and self._proc.returncode is None

    async def stop(self) -> None:
        """Terminate socat (kill it if it lingers) and remove the links."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._drain is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._drain, STOP_TIMEOUT_S)
            self._drain = None
        for link in (self.emulator_path, self.agent_path):
            link.unlink(missing_ok=True)

    async def __aenter__(self) -> PtyPair:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

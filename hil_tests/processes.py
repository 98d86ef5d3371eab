"""Start LiftWatch's parts as real processes and learn their ports from their ready line.

Every service that listens prints one JSON line ``{"ready": true, ...}`` on stdout once
its sockets are bound (ports may be 0 = chosen by the kernel, so nothing races for a free
port). Logs go to a file per process, kept for the post-mortem of a failed run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class ServiceError(RuntimeError):
    """A process that exited or never became ready; the message carries its log tail."""


@dataclass
class Service:
    """A started process of ours, with what its ready line said."""

    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    ready: dict[str, Any] = field(default_factory=dict)
    _log: IO[bytes] | None = None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; return its exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._log is not None:
            self._log.close()
        return self.process.returncode if self.process.returncode is not None else -1


async def start(
    name: str, module: str, args: list[str], log_dir: Path, *, wait_ready: bool = True
) -> Service:
    """Run ``python -m module args``; when ``wait_ready``, return once it printed ready.

    Raises `ServiceError` with the log tail when it exits first or takes too long.
    """
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    service = Service(name, process, log_path, _log=log)
    if not wait_ready:
        return service
    try:
        service.ready = await asyncio.wait_for(_ready_line(service), READY_TIMEOUT_S)
    except (TimeoutError, ServiceError) as exc:
        await service.stop()
        raise ServiceError(f"{name} did not become ready: {exc}\n{service.log_tail()}") from exc
    return service


async def _ready_line(service: Service) -> dict[str, Any]:
    assert service.process.stdout is not None
    while True:
        line = await service.process.stdout.readline()
        if not line:
            await service.process.wait()
            raise ServiceError(f"exited with status {service.process.returncode}")
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and message.get("ready") is True:
                return message


async def run_cli(module: str, args: list[str]) -> Any:
    """Run ``python -m module args`` to completion and parse its stdout as JSON."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise ServiceError(
            f"{module} {' '.join(args)} exited {process.returncode}: {err.decode(errors='replace')}"
        )
    return json.loads(out)

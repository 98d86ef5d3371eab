"""The agent's side of signed releases (issue 20; docs/updates.md).

On a `ReleaseOffer` the agent checks the manifest's signature against the keys pinned in
``[update] release_keys`` (`agent.release.verify`): an unsigned or wrongly signed offer is
refused and reported, nothing fetched. Otherwise it fetches each wheel of the manifest
over FetchRelease (the same mutual-TLS channel as its stream), checks its size and sha256
as it writes it, and stages the bundle for the updater: ``<spool>/incoming/<id>.partial``
renamed to ``<spool>/incoming/<id>`` once complete, ``READY`` written last. The updater
(`agent.updater`, its own unit, as root) verifies it again and installs it.

It reports on the stream (`UpdateReport`): at each connection a ``ready`` report (which
tells the fleet this agent takes offers: an older agent never sends one, so it is never
offered anything it would not understand) carrying the detector exceptions it counted,
then what it did with each offer, and the updater's outcomes from ``<spool>/status/``.
The outbox is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from agent.config import AgentConfig
from agent.metrics import AgentMetrics
from agent.release import MANIFEST, SIGNATURE, Manifest, ReleaseError, verify
from protos.liftwatch.v1 import gateway_pb2

log = logging.getLogger(__name__)

# A release id that names no release: the "ready" report at each connection.
READY_ID = "-"

Fetch = Callable[[str, str], AsyncIterator[bytes]]
Send = Callable[[gateway_pb2.AgentFrame], None]


def spool_of(config: AgentConfig) -> Path:
    """Where the agent stages bundles and the updater leaves its outcomes."""
    spool = config.update.spool_dir
    return Path(spool) if spool else config.data_dir / "updates"


def report_frame(release_id: str, state: str, detail: str = "") -> gateway_pb2.AgentFrame:
    """An AgentFrame carrying one UpdateReport."""
    return gateway_pb2.AgentFrame(
        update_report=gateway_pb2.UpdateReport(release_id=release_id, state=state, detail=detail)
    )


class Updates:
    """Offers in, bundles staged, reports out. ``fetch(release_id, file)`` streams a file
    of an offered release from the fleet; ``send`` queues a frame on the stream;
    ``detector_errors`` counts the detector exceptions so far; ``version`` is the running
    agent's."""

    def __init__(
        self,
        config: AgentConfig,
        version: str,
        fetch: Fetch,
        send: Send,
        detector_errors: Callable[[], int],
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.keys = config.update.release_keys
        self.spool = spool_of(config)
        self.version = version
        self._fetch = fetch
        self._send_frame = send
        self._metrics = metrics
        self._detector_errors = detector_errors
        self._task: asyncio.Task[None] | None = None
        self._reported: dict[str, str] = {}  # release id -> the updater state last sent

    def _send(self, frame: gateway_pb2.AgentFrame) -> None:
        if self._metrics is not None:
            self._metrics.update_reports.labels(state=frame.update_report.state).inc()
        self._send_frame(frame)

    def health_detail(self) -> str:
        """The report detail the fleet's gate reads: version and detector exceptions."""
        return json.dumps({"version": self.version, "detector_errors": self._detector_errors()})

    def on_connected(self) -> None:
        """A new stream: say this agent takes offers, and resend the updater's outcomes
        (the fleet keeps the latest per release, so a resend changes nothing)."""
        self._send(report_frame(READY_ID, "health", self.health_detail()))
        self._reported.clear()
        self.poll_status()

    def poll_status(self) -> None:
        """Send each outcome of the updater not sent yet (``<spool>/status/*.json``)."""
        for path in sorted((self.spool / "status").glob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                release_id, state = str(doc["release_id"]), str(doc["state"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("updater status %s unreadable: %s", path.name, exc)
                continue
            if self._reported.get(release_id) == state:
                continue
            self._reported[release_id] = state
            detail = str(doc.get("detail", ""))
            if state == "healthy":
                detail = self.health_detail()
            self._send(report_frame(release_id, state, detail))

    def on_offer(self, offer: gateway_pb2.ReleaseOffer) -> None:
        """Take an offer: verify now; fetch and stage in the background (a newer offer
        replaces one still being fetched)."""
        try:
            manifest = verify(offer.manifest, offer.signature, self.keys)
        except ReleaseError as exc:
            log.warning("release %s refused: %s", offer.release_id, exc)
            self._send(report_frame(offer.release_id, "refused", str(exc)))
            return
        if manifest.release_id != offer.release_id or manifest.version != offer.version:
            detail = "the offer's id or version differs from its signed manifest"
            self._send(report_frame(offer.release_id, "refused", detail))
            return
        if manifest.version == self.version:
            self._send(report_frame(offer.release_id, "healthy", self.health_detail()))
            return
        if (self.spool / "incoming" / manifest.release_id / "READY").exists():
            return  # staged already (an offer sent again on a new stream)
        given_up = self._final_state(manifest.release_id)
        if given_up:
            # The updater switched back from it (or could not install it): the offer that
            # comes again on the next stream is answered, not installed again in a loop.
            self._send(report_frame(manifest.release_id, given_up, "already tried on this box"))
            return
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(
            self._stage(offer, manifest), name=f"release {manifest.release_id}"
        )

    def _final_state(self, release_id: str) -> str:
        """The updater's last word on ``release_id`` if it gave up on it ("rolled_back"
        or "failed"), else ""."""
        try:
            doc = json.loads((self.spool / "status" / f"{release_id}.json").read_text())
        except (OSError, ValueError):
            return ""
        state = doc.get("state") if isinstance(doc, dict) else None
        return state if state in ("rolled_back", "failed") else ""

    async def _stage(self, offer: gateway_pb2.ReleaseOffer, manifest: Manifest) -> None:
        incoming = self.spool / "incoming"
        partial = incoming / f"{manifest.release_id}.partial"
        try:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            self._send(report_frame(manifest.release_id, "downloading"))
            for wheel in manifest.wheels:
                digest = hashlib.sha256()
                size = 0
                with (partial / wheel.file).open("wb") as f:
                    async for chunk in self._fetch(manifest.release_id, wheel.file):
                        size += len(chunk)
                        if size > wheel.size:
                            raise ReleaseError(f"{wheel.file} is longer than signed")
                        digest.update(chunk)
                        f.write(chunk)
                if size != wheel.size or digest.hexdigest() != wheel.sha256:
                    raise ReleaseError(f"{wheel.file} differs from the signed manifest")
            (partial / MANIFEST).write_bytes(offer.manifest)
            (partial / SIGNATURE).write_bytes(offer.signature)
            done = incoming / manifest.release_id
            shutil.rmtree(done, ignore_errors=True)
            partial.rename(done)
            (done / "READY").touch()
        except asyncio.CancelledError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except (ReleaseError, OSError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            log.warning("release %s not staged: %s", manifest.release_id, exc)
            self._send(report_frame(manifest.release_id, "failed", str(exc)))
            return
        except Exception as exc:  # the fetch failed (stream gone, refused): try next offer
            shutil.rmtree(partial, ignore_errors=True)
            log.warning("release %s: fetch failed: %s", manifest.release_id, exc)
            self._send(report_frame(manifest.release_id, "failed", f"fetch failed: {exc}"))
            return
        log.info("release %s staged for the updater", manifest.release_id)
        self._send(report_frame(manifest.release_id, "staged"))

    async def run(self, interval_s: float = 5.0) -> None:
        """Send the updater's outcomes as they appear, until cancelled."""
        while True:
            with contextlib.suppress(OSError):
                self.poll_status()
            await asyncio.sleep(interval_s)

"""Remote configuration (issue 20): the fleet's document, checked, applied and kept.

The fleet sends a `DesiredConfig` on the agent's authenticated stream (mutual TLS; the
uplink hands it here, nothing else does). What a fleet document may hold is limited to
the tables that say *what to watch and how*: ``[detect]`` (thresholds), ``[recorder]``,
``[[bus]]`` and ``[[unit]]`` (units, their profiles, slaves and per-unit thresholds).
Everything that says *who the box is and how it reaches the fleet* stays in the box's own
file and cannot be changed remotely: ``[agent]`` (its id, data_dir where the outbox lives,
the intervals and the outbox bounds), ``[fleet]`` (endpoints, CA, certificate, key),
``[update]`` (the pinned release keys: a fleet that could change them could sign its own
agent) and ``[mqtt]``. A document that carries any of them is rejected, naming them. So a
wrong document can stop the agent watching a car, but never lock it out of the fleet that
sends the next, correct one.

Checking: the box's own file with the document's tables in place of its own goes through
`agent.config.check_config`, the very function of ``liftwatch-agent check-config``, with
the box's directory as the base for relative paths (profiles). Any problem rejects the
whole document and nothing changes; the `ConfigReport` lists every problem.

Applying: `agent.app.Agent.apply_config` swaps monitors and bus schedulers on the event
loop (see there); the outbox is never reopened. The document is then kept in the box's
data_dir (`DOCUMENT_FILE` with `META_FILE`, each written to a temporary file, synced and
renamed), so that a restart runs it (`load_running_config`); Hello.config_version tells
the fleet which version runs.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import (
    AgentConfig,
    ConfigError,
    ConfigProblem,
    check_config,
    load_config,
    parse_toml,
    read_toml,
)
from liftconf.remote import REMOTE_TABLES, document_digest
from protos.liftwatch.v1 import gateway_pb2

log = logging.getLogger(__name__)

# Where the applied document is kept, in the box's data_dir.
DOCUMENT_FILE = "fleet-config.toml"
META_FILE = "fleet-config.json"
# A document larger than this is refused before it is parsed (a config is a few kB).
MAX_DOCUMENT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class AppliedDocument:
    """Which fleet document the agent runs: its id, version and the sha256 of its text."""

    document_id: str
    version: int
    sha256: str


def merged(local: Mapping[str, Any], document: Mapping[str, Any]) -> dict[str, Any]:
    """The box's own configuration with the document's tables in place of its own: every
    `REMOTE_TABLES` table comes from ``document`` (absent there: absent), the rest from
    ``local``."""
    kept = {k: v for k, v in local.items() if k not in REMOTE_TABLES}
    return kept | {k: v for k, v in document.items() if k in REMOTE_TABLES}


def check_document(text: str, sha256: str, local_path: Path, source: str) -> AgentConfig:
    """The configuration the agent would run with the document ``text``; `ConfigError`
    from ``source`` lists every problem: a digest that does not match, a table a fleet
    may not change, and whatever ``check-config`` finds in the merged configuration."""
    size = len(text.encode("utf-8"))
    if size > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            source,
            [ConfigProblem("(document)", f"is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}")],
        )
    if document_digest(text) != sha256:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    "(document)",
                    f"sha256 {document_digest(text)} does not match the sent {sha256!r}",
                )
            ],
        )
    raw = parse_toml(text, source)
    refused = sorted(set(raw) - REMOTE_TABLES)
    if refused:
        raise ConfigError(
            source,
            [
                ConfigProblem(
                    key,
                    "may not be changed by the fleet (a fleet document holds only [detect], "
                    "[recorder], [[bus]] and [[unit]]; this table stays in the box's own file)",
                )
                for key in refused
            ],
        )
    return check_config(merged(read_toml(local_path), raw), local_path.resolve().parent, source)


def load_running_config(local_path: Path) -> tuple[AgentConfig, AppliedDocument | None]:
    """The configuration to start with: the box's file at ``local_path`` with the fleet
    document kept in its data_dir, when there is one that still checks out against it
    (else the file alone, logged). `ConfigError` when the box's own file has problems."""
    local = load_config(local_path)
    kept = _read_kept(local.data_dir)
    if kept is None:
        return local, None
    text, applied = kept
    try:
        config = check_document(
            text, applied.sha256, local_path, f"kept fleet document {applied.document_id}"
        )
    except ConfigError as exc:
        log.error(
            "the fleet document %s version %d kept in %s no longer checks out against %s; "
            "running the file alone until the fleet sends another: %s",
            applied.document_id,
            applied.version,
            local.data_dir,
            local_path,
            exc,
        )
        return local, None
    return config, applied


def _read_kept(data_dir: Path) -> tuple[str, AppliedDocument] | None:
    meta_path, doc_path = data_dir / META_FILE, data_dir / DOCUMENT_FILE
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        applied = AppliedDocument(str(meta["document_id"]), int(meta["version"]), meta["sha256"])
        text = doc_path.read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("the kept fleet document in %s cannot be read (%s); ignoring it", data_dir, exc)
        return None
    return text, applied


def _write_synced(path: Path, text: str) -> Path:
    """Write ``text`` to a temporary file beside ``path``, synced; returns its path."""
    temporary = path.with_name(path.name + ".new")
    with temporary.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    return temporary


class RemoteConfig:
    """Receives the fleet's documents for one agent: checks, applies through ``apply``
    and keeps them; answers each with a ConfigReport."""

    def __init__(
        self,
        local_path: Path,
        data_dir: Path,
        apply: Callable[[AgentConfig], Mapping[str, str]],
        running: AppliedDocument | None = None,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self._local_path = local_path
        self._data_dir = data_dir
        self._apply = apply
        self.running = running
        # Counts each document's outcome (applied, unchanged, rejected, failed).
        self._on_outcome = on_outcome

    @property
    def version(self) -> int:
        """The version of the fleet document running (0: the box's own file alone)."""
        return self.running.version if self.running is not None else 0

    def receive(self, desired: gateway_pb2.DesiredConfig) -> gateway_pb2.ConfigReport:
        """Check ``desired``; when it checks out apply it, keep it and report applied,
        else change nothing and report the problems. Never raises."""
        report = gateway_pb2.ConfigReport(document_id=desired.document_id, version=desired.version)
        running = self.running
        if (
            running is not None
            and running.version == desired.version
            and running.sha256 == desired.sha256
        ):
            report.applied = True  # already running (a resend after a reconnect)
            self._count("unchanged")
            return report
        source = f"fleet document {desired.document_id} version {desired.version}"
        try:
            config = check_document(desired.toml, desired.sha256, self._local_path, source)
        except ConfigError as exc:
            report.problems.extend(str(p) for p in exc.problems)
            self._count("rejected")
            log.warning("%s rejected, nothing changed:\n%s", source, "\n".join(report.problems))
            return report
        applied = AppliedDocument(desired.document_id, desired.version, desired.sha256)
        doc_path, meta_path = self._data_dir / DOCUMENT_FILE, self._data_dir / META_FILE
        try:
            # Written before the swap, renamed after it: a crash in between restarts on
            # the previous document, which the fleet then sees in the Hello and resends.
            new_doc = _write_synced(doc_path, desired.toml)
            new_meta = _write_synced(
                meta_path,
                json.dumps(
                    {
                        "document_id": applied.document_id,
                        "version": applied.version,
                        "sha256": applied.sha256,
                    }
                ),
            )
        except OSError as exc:
            report.problems.append(f"(agent): cannot keep the document in {self._data_dir}: {exc}")
            self._count("failed")
            log.error("%s not applied: %s", source, report.problems[-1])
            return report
        try:
            touched = self._apply(config)
        except Exception as exc:  # a bug in applying must not end the stream
            log.exception("%s checked out but applying it failed", source)
            report.problems.append(f"(agent): applying failed: {exc!r}")
            self._count("failed")
            for path in (new_doc, new_meta):
                path.unlink(missing_ok=True)
            return report
        try:
            new_doc.replace(doc_path)
            new_meta.replace(meta_path)
        except OSError as exc:
            log.error("%s applied but not kept for a restart: %s", source, exc)
        self.running = applied
        report.applied = True
        report.units_changed.extend(f"{u}={change}" for u, change in sorted(touched.items()))
        self._count("applied")
        log.info("%s applied", source)
        return report

    def _count(self, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome)

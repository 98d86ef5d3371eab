"""Operators' actions on configuration documents, shared by the CLI and the API: set a
new version, roll back to an earlier one (a new version with its text), read the history
and desired against applied per agent. Synchronous, on the store's thread."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.configs.document import DocumentError, diff, digest, parse
from fleet.store.base import Store
from fleet.store.configs import (  # re-exported for the CLI and the API
    AgentConfigState,
    ConfigStore,
    ConfigVersion,
    agent_document,
    group_document,
)

# A document above this size is refused (an agent's configuration is a few kB; the
# agent refuses more than 1 MiB, agent.remote_config.MAX_DOCUMENT_BYTES).
MAX_DOCUMENT_BYTES = 1 << 20

__all__ = ["AgentConfigState", "ConfigVersion"]


def document_id(agent: str | None, group: str | None) -> str:
    """The document of ``agent`` or of ``group`` (exactly one given)."""
    if bool(agent) == bool(group):
        raise DocumentError("name exactly one of an agent or a group")
    return agent_document(agent) if agent else group_document(str(group))


def set_document(
    store: Store,
    document: str,
    text: str,
    now_us: int,
    *,
    author: str = "",
    note: str = "",
    group_agents: Sequence[str] = (),
) -> int:
    """Keep ``text`` as the newest version of ``document``; returns its version.
    `DocumentError` for text no agent could apply (not TOML, a table a fleet document
    may not hold, too large); the content itself is the agent's to judge."""
    size = len(text.encode("utf-8"))
    if size > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"{document}: {size} bytes; at most {MAX_DOCUMENT_BYTES}")
    parse(text, document)
    if group_agents and not document.startswith("group:"):
        raise DocumentError("agents join a group's document, not an agent's")
    return ConfigStore(store).add_version(
        document,
        text,
        digest(text),
        now_us,
        author=author,
        note=note,
        group_agents=group_agents,
    )


def rollback(store: Store, document: str, version: int, now_us: int, *, author: str = "") -> int:
    """A new version of ``document`` carrying the text of its earlier ``version``;
    returns the new version. `DocumentError` when ``version`` is not ``document``'s."""
    configs = ConfigStore(store)
    earlier = configs.version(version)
    if earlier is None or earlier.document_id != document:
        raise DocumentError(f"{document} has no version {version} (config history)")
    return configs.add_version(
        document,
        earlier.toml,
        earlier.sha256,
        now_us,
        author=author,
        note=f"rollback to version {version}",
        rollback_of=version,
    )


def history(store: Store, document: str) -> list[ConfigVersion]:
    """Every version of ``document``, oldest first."""
    return ConfigStore(store).history(document)


def states(store: Store, agents: Sequence[str] | None = None) -> list[AgentConfigState]:
    """Desired against applied for ``agents`` (None: every agent)."""
    return ConfigStore(store).states(agents)


def agent_diff(store: Store, agent: str) -> tuple[AgentConfigState, str]:
    """``agent``'s state and the text diff from what it runs to what it should run
    ("" when in sync; against an empty text when it runs its own file)."""
    configs = ConfigStore(store)
    (state,) = configs.states([agent])
    applied = configs.version(state.applied_version) if state.applied_version else None
    desired = configs.version(state.desired_version) if state.desired_version else None
    before = applied.toml if applied is not None else ""
    after = desired.toml if desired is not None else before
    return state, diff(
        before,
        after,
        f"applied version {state.applied_version}" if applied else "the agent's own file",
        f"desired version {state.desired_version}",
    )

"""Operators' actions on configuration documents, shared by the CLI and the API: set a
new version, roll back to an earlier one (a new version with its text), read the history
and desired against applied per agent. Synchronous, on the store's thread."""

from __future__ import annotations

from collections.abc import Sequence

from fleet.configs.document import DocumentError, diff, digest, parse
from fleet.store.base import Store
from fleet.store.configs import (  # re-exported for the CLI and the API
    WITHDRAWN,
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


def unset(
    store: Store,
    agent: str | None,
    group: str | None,
    agents: Sequence[str],
    now_us: int,
    *,
    author: str = "",
    note: str = "",
) -> dict[str, ConfigVersion]:
    """Undo a `set_document` short of a new text: with ``agent``, withdraw its own
    document (a new version marked `WITHDRAWN`, kept in its history like any, undone by
    `rollback`), so that its group's document applies again; with ``group``, take
    ``agents`` out of that group, so that each runs its own document again.

    Returns what each affected agent should now run (agent id -> version); each is sent
    it on its stream and, when it reports it applied, the units it touched get a
    ``config`` entry in their history, as for every change. `DocumentError` (nothing
    changed) when ``agent`` has no document of its own, an agent named is not in
    ``group``, or an agent would be left with no document: an agent cannot yet be told
    over its stream to go back to the file on its box, so it would go on running the old
    document while the fleet showed none (give it another document, or set one for it)."""
    document = document_id(agent, group)
    configs = ConfigStore(store)
    if agent:
        if agents:
            raise DocumentError("--agents goes with --group")
        own = configs.desired(agent)
        if own is None or own.document_id != document:
            raise DocumentError(f"{document} has no version in force to unset (config history)")
        fallback = _fallback(configs, agent, skip=document)
        configs.add_version(document, "", WITHDRAWN, now_us, author=author, note=note or "unset")
        return {agent: fallback}
    if not agents:
        raise DocumentError("name the agents to take out of the group (--agents A,B)")
    members = {a for a in agents if configs.group_of(a) == group}
    strangers = sorted(set(agents) - members)
    if strangers:
        raise DocumentError(f"not in {document}: {', '.join(strangers)}")
    after = {a: _fallback(configs, a, skip=document) for a in sorted(members)}
    configs.leave_group(str(group), sorted(members))
    return after


def _fallback(configs: ConfigStore, agent: str, *, skip: str) -> ConfigVersion:
    """What ``agent`` runs once document ``skip`` no longer applies to it; `DocumentError`
    when nothing would (see `unset`)."""
    for candidate in configs.documents_of(agent):
        if candidate == skip:
            continue
        newest = configs.history(candidate)
        if newest and newest[-1].sha256 != WITHDRAWN:
            return newest[-1]
    raise DocumentError(
        f"agent {agent} would be left with no document: an agent cannot yet be told to go "
        "back to its own file, so give it another document first"
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

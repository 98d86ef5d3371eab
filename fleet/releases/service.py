"""Releases and rollouts against the store (issue 20): what the CLI and the serving fleet
call. `add_release` verifies a bundle before the fleet keeps it; `start_rollout` plans
the waves over the chosen agents and offers the canary; `tick` advances every active
rollout one step on an explicit clock and records whom to offer what (the gateway sends
the offers, `fleet.ingest.gateway`); `control` pauses, resumes or aborts.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleet.releases import rollout as engine
from fleet.releases.bundle import MANIFEST, SIGNATURE
from fleet.releases.rollout import MemberState, Offer, Plan, Rollout, RolloutState
from fleet.store.releases import Release, ReleaseStore

_US = 1_000_000
# An agent seen within this long counts as connected (a few heartbeat intervals).
CONNECTED_S = 120.0


class ReleaseRefusedError(Exception):
    """A bundle or command the fleet refuses; the message says why."""


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one `tick` did: the offers recorded and the rollouts that halted."""

    offers: tuple[tuple[int, Offer], ...]
    halted: tuple[Rollout, ...]


def add_release(
    releases: ReleaseStore, bundle: Path, keep_in: Path, public_key: str, now_us: int
) -> Release:
    """Verify the bundle directory ``bundle`` with ``public_key`` (what agents pin; the
    fleet refuses what its agents would), copy it to ``keep_in/<release_id>`` and store
    it; `ReleaseRefusedError` saying why otherwise."""
    try:
        manifest = (bundle / MANIFEST).read_bytes()
        signature = (bundle / SIGNATURE).read_bytes()
    except OSError as exc:
        raise ReleaseRefusedError(f"{bundle}: not a signed bundle ({exc.strerror})") from None
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        key.verify(signature, manifest)
    except (InvalidSignature, ValueError):
        raise ReleaseRefusedError(f"{bundle}: the signature does not verify with the key") from None
    doc = json.loads(manifest)
    release_id, version = str(doc["release_id"]), str(doc["version"])
    dest = keep_in / release_id
    if dest.exists() or releases.release(release_id) is not None:
        raise ReleaseRefusedError(f"release {release_id} exists already")
    shutil.copytree(bundle, dest)
    release = Release(release_id, version, manifest, signature, str(dest), now_us)
    releases.add_release(release)
    return release


def start_rollout(
    releases: ReleaseStore,
    release_id: str,
    agents: Sequence[tuple[str, str]],
    plan: Plan,
    now: float,
) -> int:
    """Plan a rollout of ``release_id`` over ``agents`` ((agent id, running version), in
    offer order), offer its first wave, and return its id."""
    release = releases.release(release_id)
    if release is None:
        raise ReleaseRefusedError(f"no release {release_id}")
    if not agents:
        raise ReleaseRefusedError("no agents to roll out to")
    busy = {
        m.agent_id
        for r in releases.rollouts(active_only=True)
        for m in releases.members(r.rollout_id)
    }
    if overlap := sorted(busy & {a for a, _ in agents}):
        raise ReleaseRefusedError(f"in another active rollout: {', '.join(overlap[:5])}")
    draft = Rollout(0, release_id, release.version, plan)
    members = engine.plan_members(agents, plan)
    rollout_id = releases.create_rollout(draft, members, int(now * _US))
    rollout, members, offers = engine.start(
        Rollout(rollout_id, release_id, release.version, plan), members, now
    )
    _record(releases, rollout, members, offers, now)
    return rollout_id


def _record(
    releases: ReleaseStore,
    rollout: Rollout,
    members: Sequence[engine.Member],
    offers: Sequence[Offer],
    now: float,
) -> None:
    pairs: list[tuple[str, str]] = []
    for offer in offers:
        if offer.rollback_to:
            back = releases.release_of_version(offer.rollback_to)
            if back is not None:
                pairs.append((offer.agent_id, back.release_id))
        else:
            pairs.append((offer.agent_id, rollout.release_id))
    releases.offer(pairs, int(now * _US))
    releases.save(rollout, members, int(now * _US))


def tick(releases: ReleaseStore, now: float) -> TickResult:
    """Advance every running or paused rollout one step at ``now``."""
    offers: list[tuple[int, Offer]] = []
    halted: list[Rollout] = []
    for rollout in releases.rollouts(active_only=True):
        members = releases.members(rollout.rollout_id)
        # Only agents being judged need looking at (offered, on trial, or failed in the
        # wave under way, which a halt may roll back): at 2,500 agents the pending and
        # finished ones would cost the store most of a step's reads for nothing.
        judged = [
            m.agent_id
            for m in members
            if m.state in (MemberState.OFFERED, MemberState.TRIAL)
            or (m.state == MemberState.FAILED and m.wave == rollout.wave)
        ]
        views = releases.views(rollout.release_id, judged, int(now * _US), CONNECTED_S)
        after, members, new = engine.advance(rollout, members, views, now)
        if after == rollout and not new and members == releases.members(rollout.rollout_id):
            continue
        _record(releases, after, members, new, now)
        offers += [(rollout.rollout_id, o) for o in new]
        if after.state == RolloutState.HALTED:
            halted.append(after)
    return TickResult(tuple(offers), tuple(halted))


# operator command -> (states it may be given in, the state it leads to)
_CONTROLS = {
    "pause": ((RolloutState.RUNNING,), RolloutState.PAUSED),
    "resume": ((RolloutState.PAUSED,), RolloutState.RUNNING),
    "abort": (
        (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.HALTED),
        RolloutState.ABORTED,
    ),
}


def control(releases: ReleaseStore, rollout_id: int, command: str, now: float) -> Rollout:
    """Pause, resume or abort the rollout; `ReleaseRefusedError` when it is not in a
    state that allows it. Abort stops offering: agents not yet updated are offered
    nothing more (an agent already on the release keeps it)."""
    rollout = releases.rollout(rollout_id)
    if rollout is None:
        raise ReleaseRefusedError(f"no rollout {rollout_id}")
    allowed, to = _CONTROLS[command]
    if rollout.state not in allowed:
        raise ReleaseRefusedError(
            f"rollout {rollout_id} is {rollout.state.value}: cannot {command}"
        )
    reason = (
        f"aborted by an operator in wave {rollout.wave + 1}"
        if command == "abort"
        else rollout.reason
    )
    releases.set_state(rollout_id, to, reason, int(now * _US))
    if command == "abort":
        # Withdraw the offer from agents that have not taken it yet.
        pending = [
            m.agent_id
            for m in releases.members(rollout_id)
            if m.state in (MemberState.PENDING, MemberState.OFFERED)
        ]
        releases.withdraw(pending, rollout.release_id)
    found = releases.rollout(rollout_id)
    assert found is not None
    return found

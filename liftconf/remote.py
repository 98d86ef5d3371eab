"""What a fleet's configuration document may change on an agent (issue 20).

Only the tables that say what to watch and how: thresholds ([detect]), the flight
recorder ([recorder]), buses and units ([[bus]], [[unit]]: profiles, slaves, per-unit
thresholds). Who the box is and how it reaches its fleet ([agent], [fleet], [update],
[mqtt]) stays in the box's own file, so that no document can lock an agent out of the
fleet that would send the next one (agent.remote_config says more). The agent refuses a
document holding any other table; the fleet refuses to keep one (fleet.configs).
"""

import hashlib

REMOTE_TABLES = frozenset({"detect", "recorder", "bus", "unit"})


def document_digest(text: str) -> str:
    """The hex sha256 of a document's UTF-8 bytes, as DesiredConfig.sha256 carries it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

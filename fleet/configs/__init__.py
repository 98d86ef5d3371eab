"""Remote configuration of agents (issue 20): versioned documents per agent or group,
delivered on the agents' streams, desired against applied (docs/updates.md)."""

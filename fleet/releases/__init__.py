"""Signed releases and staged rollouts of the agent (issue 20; docs/updates.md)."""

"""Configuration shared in shape by the agent and the fleet: one validator (`schema`).

Neutral ground: it imports nothing of ours, and both `agent` and `fleet` may import it
(they never import each other), so the one validator is written once.
"""

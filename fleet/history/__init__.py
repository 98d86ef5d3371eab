"""Verifying the lifecycle history chains (`fleet.store.chain`) and signed checkpoints."""

"""Rescue dispatch: alarm targets (webhook, MQTT), their configuration and the dispatcher."""

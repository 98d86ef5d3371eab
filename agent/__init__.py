"""LiftWatch edge agent: reads elevator controllers over Modbus, detects faults, streams records."""

__version__ = "0.1.0"

"""Modbus transport and polling: the only part of the agent that talks to controllers."""

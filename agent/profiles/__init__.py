"""Register maps as data: one TOML file per profile, shipped as package data.

Read template.toml for the format; agent.decode.parser loads and validates these files.
"""

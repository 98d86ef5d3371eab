"""LiftWatch fleet manager: ingests agent streams, tracks coverage and firmware, serves queries."""

__version__ = "0.1.0"

"""Ingest: agent streams (gateway), who may send (access), group commit (committer), sweep."""

"""Ingest: list raw sources, label, validate and decode images, write the lake's tables and commit."""

"""Ingest: read a source (synthetic shop, csv/parquet, public formats) into canonical events.

Serves the `ingest` stage; parse failures go to quarantine with their file and row.
"""

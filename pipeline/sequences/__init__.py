"""Sequences: sessions, a stable item vocabulary, and leave-one-out / temporal splits.

Serves the `build_sequences` stage.
"""

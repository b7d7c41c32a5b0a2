"""Evaluation: full-ranking metrics for the model and every baseline, slices and the report.

Serves the `evaluate` stage; the orchestration re-scores the champion with it.
"""

"""Drift: the new snapshot against the champion's training data (`drift` stage).

The retrain DAG reads its verdict to choose warm re-fine-tuning or a full rebuild.
"""

"""Orchestration: the retrain DAG's task bodies, its gate and the per-run workspace.

Outside DVC: called by `dags/seqrec_retrain.py`; imports stay lazy so DAG parsing is light.
"""

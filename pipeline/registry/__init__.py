"""Registry: register, approve, promote and roll back versions in MLflow (lineage, model card).

Outside DVC: `python -m pipeline registry` and the retrain DAG call it.
"""

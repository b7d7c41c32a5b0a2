"""Serving: the MLflow pyfunc (models from code), request encoding and batch scoring.

Serves the `package` stage and `python -m pipeline score`.
"""

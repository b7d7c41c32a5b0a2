"""The seqrec MLflow pyfunc, defined in code ("models from code").

`pipeline.serving.package` saves this file with the model
(`python_model="pipeline/serving/pyfunc.py"`);
MLflow executes it on load and takes the model from `mlflow.models.set_model` below, so
nothing is pickled. The `pipeline` package travels with the model as `code_paths`.

Request (a table, e.g. `dataframe_split` / `dataframe_records` JSON):
    history      list[str]  item ids, oldest first (required)
    event_types  list[str]  one per history entry (optional; default `registry.default_event_type`)
    timestamps   list[int]  unix seconds, one per history entry (models with time gaps need them)
    k            int        how many items (optional; else the `k` param, else `registry.default_k`)
    explain      bool       explain this row's items (optional; else the `explain` param, false)
Response, one row per request row:
    items, scores (next-item probabilities), purchase_probability, unknown_items,
    unknown_event_types, fallback (True when popularity answered: no known item in the history),
    and, when a row asks, explanations (one per item: reason and top history events;
    pipeline.serving.explain)

A malformed request (no `history`, a history that is not a list, k out of range, event types
not matching the history) raises an MlflowException with a one-line message; the scoring
server turns it into HTTP 400.
"""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel


class SeqrecPyfunc(PythonModel):
    """Loads the finetuned folder and the popularity table from the model's artifacts."""

    def load_context(self, context) -> None:
        from pipeline.serving.recommender import Recommender

        config = context.model_config or {}
        threads = int(config.get("threads", 0))
        if threads > 0:
            # One request is a tiny model call: intra-op threads only contend (measured on
            # 2 cores: p99 7.6 ms with 1 thread vs 219 ms with 2 under load). Scale with
            # server workers instead. Overridable: load_model(uri, model_config={"threads": 0}).
            import torch

            torch.set_num_threads(threads)
        self.recommender = Recommender(
            model_dir=context.artifacts["model_dir"],
            popularity_path=context.artifacts["popularity"],
            default_k=int(config["default_k"]),
            max_k=int(config["max_k"]),
            default_event_type=str(config["default_event_type"]),
            batch_size=int(config["batch_size"]),
            variant=str(config.get("variant", "fp32")),
        )

    # NOTE: no type hints on model_input: MLflow would derive a signature from them; the
    # package step gives an explicit one instead (optional columns, list types, a `k` param).
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        from pipeline.serving.request_encoding import RequestError

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        k = (params or {}).get("k")
        explain = bool((params or {}).get("explain") or False)
        try:
            return self.recommender.recommend(model_input, k=k, explain=explain)
        except RequestError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None


# The signature is explicit (pipeline.serving.package); MLflow still nags about type hints on load.
warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
mlflow.models.set_model(SeqrecPyfunc())

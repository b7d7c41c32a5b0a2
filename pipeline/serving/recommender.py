"""Top-k recommendations for raw requests: item-id strings in, item-id strings out.

The serving pyfunc (`pipeline/serving/pyfunc.py`), the batch scorer and the benchmark all go
through `Recommender.recommend`. It turns a request table into LEFT-padded token batches
(vectorised with pyarrow/numpy, no per-user Python loop), asks the model for the last
position's scores and returns the top k per user with the purchase probability.

Ordinary bad input is absorbed and counted: unknown item ids are dropped (`unknown_items`),
unknown event types fall back to the default type (`unknown_event_types`), histories longer
than the model's `max_len` keep their most recent events, and a user with no known item gets
the popularity fallback (`fallback=True`). A malformed request raises `RequestError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.serving.request_encoding import (
    FIRST_EVENT_TYPE_ID,
    TIMESTAMPS_COLUMN,
    RequestError,
    encode_requests,
    request_explain,
    request_k,
)


@dataclass(frozen=True)
class Popularity:
    """The cold-start fallback: most frequent training items and the purchase prior."""

    item_ids: np.ndarray  # (N,) str, most popular first
    scores: np.ndarray  # (N,) float64, share of training events
    purchase_rate: float  # share of purchases among target events; NaN when unknown

    @classmethod
    def load(cls, path: str | Path) -> Popularity:
        data = json.loads(Path(path).read_text())
        return cls(
            item_ids=np.asarray(data["item_ids"], dtype=object),
            scores=np.asarray(data["scores"], dtype=np.float64),
            purchase_rate=float(data["purchase_rate"]),
        )


def _config_value(config: Any, key: str) -> Any:
    """Read `key` from the model config, whether a dataclass/pydantic object or a dict."""
    if isinstance(config, dict):
        return config[key]
    return getattr(config, key)


class Recommender:
    """A loaded model folder plus the popularity fallback, answering request tables.

    Args:
        model_dir: a model folder (docs/interfaces.md "Model folders").
        popularity_path: `popularity.json` written by `pipeline.serving.package`.
        default_k: k for rows that give none.
        max_k: largest k a row may ask for.
        default_event_type: event type of history entries that come without one.
        batch_size: users per forward pass (bounds the (B, vocab_size) logits in memory).
        variant: `fp32` or `int8` (`pipeline.serving.variants`).
    """

    def __init__(
        self,
        model_dir: str | Path,
        popularity_path: str | Path,
        default_k: int,
        max_k: int,
        default_event_type: str,
        batch_size: int,
        variant: str = "fp32",
    ) -> None:
        from pipeline.model.folder import load_model_dir
        from pipeline.serving.variants import compress

        model, config, vocab = load_model_dir(model_dir)
        self.model = compress(model.eval(), variant)
        self.variant = variant
        self.max_len = int(_config_value(config, "max_len"))
        self.event_types = list(_config_value(config, "event_types"))
        self.needs_ts = int(getattr(config, "time_gap_buckets", 0) or 0) > 0
        if default_event_type not in self.event_types:
            raise ValueError(
                f"registry.default_event_type {default_event_type!r} is not one of the model's "
                f"event types {self.event_types}"
            )
        self.default_type_id = FIRST_EVENT_TYPE_ID + self.event_types.index(default_event_type)
        self.vocab_ids = pa.array(vocab["item_id"].astype(str).to_numpy(), type=pa.string())
        self.vocab_index = vocab["index"].to_numpy().astype(np.int64)
        # index -> item id, for turning top-k token indices back into item ids
        size = int(self.vocab_index.max()) + 1
        self.index_to_item = np.full(size, "", dtype=object)
        self.index_to_item[self.vocab_index] = vocab["item_id"].astype(str).to_numpy()
        self.popularity = Popularity.load(popularity_path)
        # The fallback's score of each token (0 off the table): what an emptied history scores.
        self.popularity_by_token = np.zeros(size, dtype=np.float64)
        lookup = pd.Series(self.vocab_index, index=vocab["item_id"].astype(str).to_numpy())
        known = np.isin(self.popularity.item_ids, lookup.index)
        self.popularity_by_token[lookup[self.popularity.item_ids[known]].to_numpy()] = (
            self.popularity.scores[known])
        self.default_k = default_k
        self.max_k = min(max_k, len(self.vocab_index))
        self.batch_size = batch_size

    def probabilities(self, items: np.ndarray, types: np.ndarray, ts: np.ndarray | None):
        """Next-item probabilities (b, V) and purchase logits (b,) of LEFT-padded histories.

        The response's `scores` are these probabilities; explanations rescore with the same
        call, so an event's weight is measured on exactly the score the shopper is shown.
        """
        import torch

        with torch.inference_mode():
            item_logits, purchase_logit = self.model.score_last(
                torch.from_numpy(items), torch.from_numpy(types),
                None if ts is None else torch.from_numpy(ts),
            )  # (b, V), (b,)
            probs = torch.softmax(item_logits.float(), dim=-1)  # reserved -inf -> 0
        return probs, purchase_logit

    def recommend(
        self, request: pd.DataFrame, k: int | None = None, explain: bool = False
    ) -> pd.DataFrame:
        """Top-k items per request row; see the module docstring for the columns.

        With `explain` (or an `explain` column), rows asking for it also get `explanations`
        (`pipeline.serving.explain`); other rows get None there.
        """
        import torch

        default_k = self.default_k if k is None else int(k)
        ks = request_k(request, default_k, self.max_k)
        explain_rows = request_explain(request, explain)
        batch = encode_requests(
            request,
            self.vocab_ids,
            self.vocab_index,
            self.event_types,
            self.default_type_id,
            self.max_len,
        )
        if self.needs_ts and batch.ts is None:
            raise RequestError(
                f"this model uses time gaps: send a {TIMESTAMPS_COLUMN!r} column "
                "(unix seconds, one per history entry)"
            )
        n_rows = len(request)
        k_top = int(ks.max(initial=1))
        top_tokens = np.full((n_rows, k_top), -1, dtype=np.int64)  # -1: popularity answered
        top_scores = np.zeros((n_rows, k_top), dtype=np.float64)
        purchase = np.full(n_rows, self.popularity.purchase_rate, dtype=np.float64)
        fallback = batch.lengths == 0

        pop_k = min(k_top, len(self.popularity.item_ids))
        top_scores[fallback, :pop_k] = self.popularity.scores[:pop_k]

        model_rows = np.flatnonzero(~fallback)
        for start in range(0, len(model_rows), self.batch_size):
            rows = model_rows[start : start + self.batch_size]
            # Trim the shared left padding of this chunk: padding costs as much as events.
            width = int(batch.lengths[rows].max())
            probs, purchase_logit = self.probabilities(
                batch.items[rows, -width:], batch.types[rows, -width:],
                None if batch.ts is None else batch.ts[rows, -width:],
            )
            scores, index = torch.topk(probs, k_top, dim=-1)  # (b, k)
            top_tokens[rows] = index.numpy()
            top_scores[rows] = scores.double().numpy()
            purchase[rows] = torch.sigmoid(purchase_logit.float()).double().numpy()

        top_items = self.index_to_item[top_tokens.clip(min=0)]
        top_items[fallback, :pop_k] = self.popularity.item_ids[:pop_k]
        if np.all(ks == k_top):
            items_out, scores_out = list(top_items), list(top_scores)
        else:
            items_out = [top_items[r, : ks[r]] for r in range(n_rows)]
            scores_out = [top_scores[r, : ks[r]] for r in range(n_rows)]
        response = pd.DataFrame(
            {
                "items": items_out,
                "scores": scores_out,
                "purchase_probability": purchase,
                "unknown_items": batch.unknown_items,
                "unknown_event_types": batch.unknown_event_types,
                "fallback": fallback,
            },
            index=request.index,
        )
        if explain_rows.any():
            from pipeline.serving.explain import explain_top_k

            response["explanations"] = explain_top_k(
                self, batch, np.flatnonzero(explain_rows), top_tokens, top_scores, ks
            )
        return response

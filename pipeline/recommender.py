"""Top-k recommendations for raw requests: item-id strings in, item-id strings out.

The serving pyfunc (`pipeline/serving.py`), the batch scorer and the benchmark all go
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
import pyarrow.compute as pc

HISTORY_COLUMN = "history"
EVENT_TYPES_COLUMN = "event_types"
TIMESTAMPS_COLUMN = "timestamps"
K_COLUMN = "k"
OUTPUT_COLUMNS = (
    "items",
    "scores",
    "purchase_probability",
    "unknown_items",
    "unknown_event_types",
    "fallback",
)
FIRST_EVENT_TYPE_ID = 1  # 0 is PAD (docs/interfaces.md "Sequences")


class RequestError(ValueError):
    """A request the model cannot read: the message is one line naming the row and the rule."""


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


def _as_list_array(values: pd.Series, column: str) -> pa.ListArray:
    """`values` as list<string>; None/NaN become null lists. Raises RequestError naming the row."""
    try:
        return pa.array(values.to_numpy(dtype=object), type=pa.list_(pa.string()), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Slow path only on odd input: numeric ids are ordinary, anything that is not a list is not.
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if isinstance(value, str | bytes | dict) or not hasattr(value, "__iter__"):
            raise RequestError(
                f"request row {row}: column {column!r} must be a list of strings, "
                f"got {type(value).__name__}"
            )
    coerced = [None if v is None or isinstance(v, float) else [str(x) for x in v] for v in values]
    return pa.array(coerced, type=pa.list_(pa.string()))


def request_k(request: pd.DataFrame, default_k: int, max_k: int) -> np.ndarray:
    """Per-row k: the `k` column where given, else `default_k`; each in 1..max_k."""
    if K_COLUMN not in request.columns:
        k = np.full(len(request), default_k, dtype=np.int64)
    else:
        column = pd.to_numeric(request[K_COLUMN], errors="coerce")
        k = column.fillna(default_k).to_numpy()
        if not np.all(np.equal(np.mod(k, 1), 0)):
            row = int(np.flatnonzero(np.mod(k, 1) != 0)[0])
            raise RequestError(f"request row {row}: k must be a whole number, got {k[row]}")
        k = k.astype(np.int64)
    bad = np.flatnonzero((k <= 0) | (k > max_k))
    if bad.size:
        row = int(bad[0])
        raise RequestError(f"request row {row}: k must be in 1..{max_k}, got {int(k[row])}")
    return k


@dataclass(frozen=True)
class EncodedBatch:
    items: np.ndarray  # (B, T) int64, LEFT-padded with 0
    types: np.ndarray  # (B, T) int64, LEFT-padded with 0
    lengths: np.ndarray  # (B,) known events kept per user
    unknown_items: np.ndarray  # (B,) int64
    unknown_event_types: np.ndarray  # (B,) int64
    ts: np.ndarray | None = None  # (B, T) int64 unix seconds, when the request sent them


def _check_lengths(lengths: np.ndarray, expected: np.ndarray, column: str) -> np.ndarray:
    """Rows where `column` is given; raises when a given list's length differs from history."""
    given = ~pd.isna(lengths)
    mismatch = np.flatnonzero(given & (lengths != expected))
    if mismatch.size:
        row = int(mismatch[0])
        raise RequestError(
            f"request row {row}: {column!r} has {int(lengths[row])} entries "
            f"but {HISTORY_COLUMN!r} has {expected[row]}"
        )
    return given


def _flat_timestamps(request: pd.DataFrame, lengths_all: np.ndarray, parents: np.ndarray):
    """Flattened event times aligned with the flattened history (0 where a row sent none)."""
    try:
        ts = pa.array(
            request[TIMESTAMPS_COLUMN].to_numpy(dtype=object),
            type=pa.list_(pa.int64()),
            from_pandas=True,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        raise RequestError(
            f"request column {TIMESTAMPS_COLUMN!r} must hold lists of unix seconds"
        ) from None
    lengths = pc.list_value_length(ts).to_numpy(zero_copy_only=False)
    given = _check_lengths(lengths, lengths_all, TIMESTAMPS_COLUMN)
    flat = np.zeros(len(parents), dtype=np.int64)
    rows_with = given[parents] if len(parents) else np.zeros(0, dtype=bool)
    flat[rows_with] = pc.list_flatten(ts).to_numpy(zero_copy_only=False)
    return flat


def encode_requests(
    request: pd.DataFrame,
    vocab_ids: pa.Array,
    vocab_index: np.ndarray,
    event_types: list[str],
    default_type_id: int,
    max_len: int,
) -> EncodedBatch:
    """Map a request table to LEFT-padded token batches, keeping the last `max_len` known events.

    Args:
        request: table with `history` (list of item ids, oldest first) and optional
            `event_types` (list of strings, same length as `history`).
        vocab_ids: item ids of the vocabulary (string array).
        vocab_index: token index of each entry of `vocab_ids`.
        event_types: the model's event types; id = 1 + position.
        default_type_id: type id used when a row has no event types or an unknown one.
        max_len: the model's longest history.
    """
    if HISTORY_COLUMN not in request.columns:
        raise RequestError(
            f"request has no {HISTORY_COLUMN!r} column (columns: {list(request.columns)})"
        )
    n_rows = len(request)
    histories = _as_list_array(request[HISTORY_COLUMN], HISTORY_COLUMN)
    lengths_all = pc.fill_null(pc.list_value_length(histories), 0).to_numpy().astype(np.int64)
    flat_ids = pc.list_flatten(histories)
    parents = pc.list_parent_indices(histories).to_numpy().astype(np.int64)

    slot = pc.index_in(flat_ids, value_set=vocab_ids).to_numpy(zero_copy_only=False)
    known = ~np.isnan(slot) if slot.dtype.kind == "f" else np.ones(len(slot), dtype=bool)
    tokens = np.zeros(len(slot), dtype=np.int64)
    tokens[known] = vocab_index[slot[known].astype(np.int64)]

    type_ids = np.full(len(slot), default_type_id, dtype=np.int64)
    unknown_types = np.zeros(len(slot), dtype=bool)
    if EVENT_TYPES_COLUMN in request.columns:
        types = _as_list_array(request[EVENT_TYPES_COLUMN], EVENT_TYPES_COLUMN)
        type_lengths = pc.list_value_length(types).to_numpy(zero_copy_only=False)
        given = _check_lengths(type_lengths, lengths_all, EVENT_TYPES_COLUMN)
        # Rows without event types keep the default; the others map by position.
        with_types = given[parents] if len(parents) else np.zeros(0, dtype=bool)
        flat_types = pc.list_flatten(types)
        found = pc.index_in(flat_types, value_set=pa.array(event_types)).to_numpy(
            zero_copy_only=False
        )
        found = np.asarray(found, dtype=np.float64)
        mapped = ~np.isnan(found)
        targets = np.flatnonzero(with_types)
        type_ids[targets[mapped]] = FIRST_EVENT_TYPE_ID + found[mapped].astype(np.int64)
        unknown_types[targets[~mapped]] = True

    keep_rows = parents[known]
    known_counts = np.bincount(keep_rows, minlength=n_rows)
    row_starts = np.concatenate([[0], np.cumsum(known_counts)[:-1]])
    rank = np.arange(len(keep_rows)) - row_starts[keep_rows]
    from_end = known_counts[keep_rows] - 1 - rank  # 0 = most recent known event
    width = int(min(max_len, known_counts.max(initial=0)))
    inside = from_end < width
    cols = width - 1 - from_end[inside]
    items = np.zeros((n_rows, max(width, 1)), dtype=np.int64)
    types_out = np.zeros_like(items)
    items[keep_rows[inside], cols] = tokens[known][inside]
    types_out[keep_rows[inside], cols] = type_ids[known][inside]
    ts_out = None
    if TIMESTAMPS_COLUMN in request.columns:
        ts_out = np.zeros_like(items)
        ts_out[keep_rows[inside], cols] = _flat_timestamps(request, lengths_all, parents)[known][
            inside
        ]
    return EncodedBatch(
        ts=ts_out,
        items=items,
        types=types_out,
        lengths=np.minimum(known_counts, width),
        unknown_items=np.bincount(parents[~known], minlength=n_rows).astype(np.int64),
        unknown_event_types=np.bincount(parents[unknown_types], minlength=n_rows).astype(np.int64),
    )


class Recommender:
    """A loaded model folder plus the popularity fallback, answering request tables.

    Args:
        model_dir: a model folder (docs/interfaces.md "Model folders").
        popularity_path: `popularity.json` written by `pipeline.package`.
        default_k: k for rows that give none.
        max_k: largest k a row may ask for.
        default_event_type: event type of history entries that come without one.
        batch_size: users per forward pass (bounds the (B, vocab_size) logits in memory).
    """

    def __init__(
        self,
        model_dir: str | Path,
        popularity_path: str | Path,
        default_k: int,
        max_k: int,
        default_event_type: str,
        batch_size: int,
    ) -> None:
        from pipeline.model import load_model_dir

        self.model, config, vocab = load_model_dir(model_dir)
        self.model.eval()
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
        self.default_k = default_k
        self.max_k = min(max_k, len(self.vocab_index))
        self.batch_size = batch_size

    def recommend(self, request: pd.DataFrame, k: int | None = None) -> pd.DataFrame:
        """Top-k items per request row; see the module docstring for the columns."""
        import torch

        default_k = self.default_k if k is None else int(k)
        ks = request_k(request, default_k, self.max_k)
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
        top_items = np.empty((n_rows, k_top), dtype=object)
        top_scores = np.zeros((n_rows, k_top), dtype=np.float64)
        purchase = np.full(n_rows, self.popularity.purchase_rate, dtype=np.float64)
        fallback = batch.lengths == 0

        pop_k = min(k_top, len(self.popularity.item_ids))
        top_items[fallback, :pop_k] = self.popularity.item_ids[:pop_k]
        top_scores[fallback, :pop_k] = self.popularity.scores[:pop_k]

        model_rows = np.flatnonzero(~fallback)
        with torch.inference_mode():
            for start in range(0, len(model_rows), self.batch_size):
                rows = model_rows[start : start + self.batch_size]
                # Trim the shared left padding of this chunk: padding costs as much as events.
                width = int(batch.lengths[rows].max())
                items = torch.from_numpy(batch.items[rows, -width:])  # (b, T)
                types = torch.from_numpy(batch.types[rows, -width:])  # (b, T)
                ts = None if batch.ts is None else torch.from_numpy(batch.ts[rows, -width:])
                item_logits, purchase_logit = self.model.score_last(
                    items, types, ts
                )  # (b, V), (b,)
                probs = torch.softmax(item_logits.float(), dim=-1)  # reserved -inf -> 0
                scores, index = torch.topk(probs, k_top, dim=-1)  # (b, k)
                top_items[rows] = self.index_to_item[index.numpy()]
                top_scores[rows] = scores.double().numpy()
                purchase[rows] = torch.sigmoid(purchase_logit.float()).double().numpy()

        if np.all(ks == k_top):
            items_out, scores_out = list(top_items), list(top_scores)
        else:
            items_out = [top_items[r, : ks[r]] for r in range(n_rows)]
            scores_out = [top_scores[r, : ks[r]] for r in range(n_rows)]
        return pd.DataFrame(
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

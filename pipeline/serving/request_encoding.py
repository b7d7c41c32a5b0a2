"""Request tables -> LEFT-padded token batches for `SeqRecModel.score_last`.

Vectorised with pyarrow/numpy (no per-user Python loop): histories are flattened, item ids
looked up in the vocabulary in one `index_in`, and each user's most recent `max_len` known
events are scattered into a (B, T) matrix, right-aligned. Unknown items are dropped and
counted; unknown event types become the default type and are counted; a malformed request
raises `RequestError` with a one-line message naming the row and the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

HISTORY_COLUMN = "history"
EVENT_TYPES_COLUMN = "event_types"
TIMESTAMPS_COLUMN = "timestamps"
K_COLUMN = "k"
EXPLAIN_COLUMN = "explain"
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


def _as_list_array(values: pd.Series, column: str) -> pa.ListArray:
    """`values` as list<string>; None/NaN become null lists. Raises RequestError naming the row."""
    cells = values.to_numpy(dtype=object)
    # pyarrow would read a bare string as a list of characters: reject it first (an O(B)
    # isinstance scan, no per-event work).
    scalar = np.fromiter((isinstance(v, str | bytes | dict | int) for v in cells), bool, len(cells))
    if scalar.any():
        row = int(np.flatnonzero(scalar)[0])
        raise RequestError(
            f"request row {row}: column {column!r} must be a list of strings, "
            f"got {type(cells[row]).__name__}"
        )
    try:
        return pa.array(cells, type=pa.list_(pa.string()), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    # Slow path only on odd input: numeric ids are ordinary, anything else is not.
    for row, value in enumerate(cells):
        if value is not None and not isinstance(value, float) and not hasattr(value, "__iter__"):
            raise RequestError(
                f"request row {row}: column {column!r} must be a list of strings, "
                f"got {type(value).__name__}"
            )
    coerced = [None if v is None or isinstance(v, float) else [str(x) for x in v] for v in cells]
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


def request_explain(request: pd.DataFrame, default: bool) -> np.ndarray:
    """Per-row flag: the `explain` column where given (true/false), else `default`."""
    if EXPLAIN_COLUMN not in request.columns:
        return np.full(len(request), bool(default))
    flags = np.full(len(request), bool(default))
    for row, value in enumerate(request[EXPLAIN_COLUMN].to_numpy(dtype=object)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if not isinstance(value, bool | np.bool_):
            raise RequestError(
                f"request row {row}: {EXPLAIN_COLUMN!r} must be true or false, got {value!r}"
            )
        flags[row] = bool(value)
    return flags


@dataclass(frozen=True)
class EncodedBatch:
    items: np.ndarray  # (B, T) int64, LEFT-padded with 0
    types: np.ndarray  # (B, T) int64, LEFT-padded with 0
    lengths: np.ndarray  # (B,) known events kept per user
    unknown_items: np.ndarray  # (B,) int64
    unknown_event_types: np.ndarray  # (B,) int64
    ts: np.ndarray | None = None  # (B, T) int64 unix seconds, when the request sent them
    # (B, T) int64: each kept event's index in the row's `history` as sent (unknown items
    # count), -1 on padding; explanations name events by it.
    positions: np.ndarray | None = None


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
    row_offsets = np.concatenate([[0], np.cumsum(lengths_all)[:-1]]).astype(np.int64)

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
    positions = np.full_like(items, -1)
    sent_at = np.arange(len(parents), dtype=np.int64) - row_offsets[parents]
    positions[keep_rows[inside], cols] = sent_at[known][inside]
    ts_out = None
    if TIMESTAMPS_COLUMN in request.columns:
        ts_out = np.zeros_like(items)
        ts_out[keep_rows[inside], cols] = _flat_timestamps(request, lengths_all, parents)[known][
            inside
        ]
    return EncodedBatch(
        ts=ts_out,
        positions=positions,
        items=items,
        types=types_out,
        lengths=np.minimum(known_counts, width),
        unknown_items=np.bincount(parents[~known], minlength=n_rows).astype(np.int64),
        unknown_event_types=np.bincount(parents[unknown_types], minlength=n_rows).astype(np.int64),
    )

"""Tiny canonical event tables for the sequence tests."""

from __future__ import annotations

import pyarrow as pa

from pipeline.params import SequencesParams

EVENT_TYPES = ["view", "cart", "purchase"]
DAY_S = 86_400
VIEW, CART, PURCHASE = 1, 2, 3  # event-type ids: 1 + position in EVENT_TYPES


def events_table(rows: list[tuple], order: list[int] | None = None) -> pa.Table:
    """Canonical events from `(user, item, type, ts_s[, session_id])` rows.

    `source_row` is the row's position in `rows` (the file order); `order` permutes the
    table's physical row order so tests can check that only `source_row` decides ties.
    """
    order = list(range(len(rows))) if order is None else order
    picked = [(position, rows[position]) for position in order]
    return pa.table(
        {
            "user_id": pa.array([r[0] for _, r in picked], pa.string()),
            "item_id": pa.array([r[1] for _, r in picked], pa.string()),
            "event_type": pa.array([r[2] for _, r in picked], pa.string()),
            "timestamp": pa.array([r[3] * 10**9 for _, r in picked], pa.timestamp("ns", tz="UTC")),
            "session_id": pa.array([r[4] if len(r) > 4 else None for _, r in picked], pa.string()),
            "source_file": pa.array(["events.csv"] * len(picked), pa.string()),
            "source_row": pa.array([position for position, _ in picked], pa.int64()),
        }
    )


def loose_params(**overrides) -> SequencesParams:
    """No filtering, no dedup: every event of the tiny table survives."""
    base = {"min_user_events": 1, "min_item_events": 1, "dedup_consecutive_views": False}
    return SequencesParams(**(base | overrides))


def items_of(table: pa.Table, vocab: pa.Table, column: str) -> list:
    """A list column (or a scalar column) translated back to item ids."""
    item_of = dict(zip(vocab["index"].to_pylist(), vocab["item_id"].to_pylist(), strict=True))
    values = table[column].to_pylist()
    if values and isinstance(values[0], list):
        return [[item_of[token] for token in row] for row in values]
    return [item_of[token] for token in values]


def row_of(table: pa.Table, user: str) -> dict:
    """The single row of `user` in a split table."""
    rows = [row for row in table.to_pylist() if row["user_id"] == user]
    assert len(rows) == 1, f"expected one row for {user}, got {len(rows)}"
    return rows[0]


def user_items(table: pa.Table, vocab: pa.Table, user: str, column: str):
    """Item ids of `user`'s single row in `column` (a list column or a target column)."""
    item_of = dict(zip(vocab["index"].to_pylist(), vocab["item_id"].to_pylist(), strict=True))
    value = row_of(table, user)[column]
    return [item_of[token] for token in value] if isinstance(value, list) else item_of[value]

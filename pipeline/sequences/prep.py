"""Validated events -> encoded, stably time-ordered, filtered event arrays.

Every step is a whole-array numpy/pyarrow operation: no Python loop runs per user or per
event, so 10M events take seconds. The order is the one every later step relies on:
user, then timestamp, then file order (`source_file` in order of first appearance, then
`source_row`), so events with equal timestamps (Amazon reviews are day-granular) keep the
order of the file they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError

REQUIRED_COLUMNS = ("user_id", "item_id", "event_type", "timestamp")
OPTIONAL_COLUMNS = ("session_id", "source_file", "source_row")
VIEW_EVENT_TYPE = "view"  # the browsing event that consecutive-view dedup applies to
NS_PER_MINUTE = 60 * 10**9


@dataclass(frozen=True)
class Events:
    """Encoded events, sorted by user id, then time, then file order.

    Attributes:
        user: (n,) int64 code into `user_ids`; equal codes are contiguous.
        item: (n,) int64 code into `item_ids`.
        event_type: (n,) int8, 1 + position in `data.event_types`.
        ts_ns: (n,) int64 nanoseconds since the epoch (UTC).
        session: (n,) int32 session index within the user, from 0.
        user_ids: distinct user ids (string), indexed by `user`.
        item_ids: distinct item ids (string), indexed by `item`.
    """

    user: np.ndarray
    item: np.ndarray
    event_type: np.ndarray
    ts_ns: np.ndarray
    session: np.ndarray
    user_ids: pa.Array
    item_ids: pa.Array

    def __len__(self) -> int:
        return len(self.user)

    def take(self, keep: np.ndarray) -> Events:
        """The events where the boolean mask `keep` is true (order kept)."""
        return replace(
            self,
            user=self.user[keep],
            item=self.item[keep],
            event_type=self.event_type[keep],
            ts_ns=self.ts_ns[keep],
            session=self.session[keep],
        )


def read_events(path: Path) -> pa.Table:
    """Read the columns this stage needs from a canonical `events.parquet`.

    Raises:
        InputError: the file is missing or lacks a required column.
    """
    if not path.is_file():
        raise InputError(f"{path}: events file not found (expected the validated events.parquet)")
    names = pq.read_schema(path).names
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputError(f"{path}: missing required column(s) {missing}")
    wanted = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in names]
    return pq.read_table(path, columns=wanted)


def _codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Integer codes (first-appearance order; null -> -1) and the distinct values."""
    encoded = column.combine_chunks().dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    if encoded.indices.null_count:
        codes = np.where(encoded.indices.is_null().to_numpy(zero_copy_only=False), -1, codes)
    return codes.astype(np.int64, copy=False), encoded.dictionary


def _sorted_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Codes in sorted order of the values, so outputs do not depend on the row order."""
    codes, values = _codes(column)
    order = pc.sort_indices(values).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], values.take(pa.array(order))


def _row_label(table: pa.Table, index: int) -> str:
    """`<source_file> row <source_row>` of table row `index` when known, else `row <index>`."""
    if "source_file" in table.column_names and "source_row" in table.column_names:
        return f"{table['source_file'][index].as_py()} row {table['source_row'][index].as_py()}"
    return f"row {index}"


def _file_order_sort(
    user: np.ndarray, ts_ns: np.ndarray, file_rank: np.ndarray, source_row: np.ndarray
) -> np.ndarray:
    """Permutation sorting by user, time, file, row; stable, so full ties keep table order."""
    file_step = np.diff(file_rank)
    row_step = np.diff(source_row)
    if np.all((file_step > 0) | ((file_step == 0) & (row_step >= 0))):
        # The usual case: the table is already in file order, and np.lexsort is stable,
        # so two keys give the same order as four at half the cost.
        return np.lexsort((ts_ns, user))
    return np.lexsort((source_row, file_rank, ts_ns, user))  # last key sorts first


def encode_events(
    table: pa.Table, event_types: list[str], source: str = "events"
) -> tuple[Events, np.ndarray]:
    """Encode and stably sort events; returns `(events, session_codes)`.

    `session_codes` is the (n,) int64 code of `session_id` (-1 where null or absent), in the
    sorted order. Raises InputError naming the row for nulls or unknown event types.
    """
    for column in REQUIRED_COLUMNS:
        if table.column(column).null_count:
            index = pc.index(table.column(column).is_null(), True).as_py()
            raise InputError(
                f"{source}: {_row_label(table, index)}: {column} is null (rule: required column)"
            )
    user, user_ids = _sorted_codes(table.column("user_id"))
    item, item_ids = _codes(table.column("item_id"))
    type_codes, type_names = _codes(table.column("event_type"))
    type_id_of = {name: i + 1 for i, name in enumerate(event_types)}
    unknown = [name for name in type_names.to_pylist() if name not in type_id_of]
    if unknown:
        code = type_names.to_pylist().index(unknown[0])
        index = int(np.argmax(type_codes == code))
        raise InputError(
            f"{source}: {_row_label(table, index)}: event_type {unknown[0]!r} is not in "
            f"data.event_types {event_types} (rule: known event type)"
        )
    lookup = np.array([type_id_of[name] for name in type_names.to_pylist()], dtype=np.int8)
    event_type = lookup[type_codes] if len(type_codes) else np.zeros(0, np.int8)
    ts_ns = table.column("timestamp").cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    ts_ns = ts_ns.to_numpy()

    if "source_row" in table.column_names and "source_file" in table.column_names:
        file_rank, _ = _codes(table.column("source_file"))
        source_row = table.column("source_row").to_numpy().astype(np.int64, copy=False)
        order = _file_order_sort(user, ts_ns, file_rank, source_row)
    else:  # no provenance: the table's own row order is the file order
        order = np.lexsort((ts_ns, user))
    if "session_id" in table.column_names:
        session_codes, _ = _codes(table.column("session_id"))
    else:
        session_codes = np.full(len(user), -1, dtype=np.int64)
    events = Events(
        user=user[order],
        item=item[order],
        event_type=event_type[order],
        ts_ns=ts_ns[order],
        session=np.zeros(len(order), dtype=np.int32),
        user_ids=user_ids,
        item_ids=item_ids,
    )
    return events, session_codes[order]


def user_starts(user: np.ndarray) -> np.ndarray:
    """(n,) bool: true where a new user's run begins (input sorted by user)."""
    starts = np.ones(len(user), dtype=bool)
    starts[1:] = user[1:] != user[:-1]
    return starts


def assign_sessions(events: Events, session_codes: np.ndarray, gap_minutes: float) -> Events:
    """Session index per event within its user.

    A session starts at a user's first event, where `session_id` changes, and, for events
    without a `session_id`, after an inactivity gap longer than `gap_minutes`.
    """
    n = len(events)
    if n == 0:
        return events
    boundary = user_starts(events.user)
    boundary[1:] |= session_codes[1:] != session_codes[:-1]
    gap_ns = np.diff(events.ts_ns) > gap_minutes * NS_PER_MINUTE
    boundary[1:] |= (session_codes[1:] < 0) & gap_ns
    global_session = np.cumsum(boundary) - 1
    first_of_user = np.maximum.accumulate(np.where(user_starts(events.user), np.arange(n), 0))
    session = (global_session - global_session[first_of_user]).astype(np.int32)
    return replace(events, session=session)


def dedup_consecutive_views(events: Events, event_types: list[str]) -> tuple[Events, int]:
    """Drop view events whose item equals the user's previous event's item.

    Returns the kept events and the number dropped.
    """
    if VIEW_EVENT_TYPE not in event_types or len(events) == 0:
        return events, 0
    view_id = event_types.index(VIEW_EVENT_TYPE) + 1
    repeat = np.zeros(len(events), dtype=bool)
    repeat[1:] = events.item[1:] == events.item[:-1]
    drop = repeat & ~user_starts(events.user) & (events.event_type == view_id)
    return events.take(~drop), int(drop.sum())


def k_core(events: Events, min_user_events: int, min_item_events: int) -> tuple[Events, int]:
    """Keep events whose user and item both have enough events, until nothing changes.

    Dropping a user can push an item under its minimum and vice versa, so the filter is
    repeated; each round strictly shrinks the data, so it ends. Returns (events, rounds).
    """
    rounds = 0
    while True:
        rounds += 1
        user_counts = np.bincount(events.user, minlength=len(events.user_ids))
        item_counts = np.bincount(events.item, minlength=len(events.item_ids))
        keep = (user_counts[events.user] >= min_user_events) & (
            item_counts[events.item] >= min_item_events
        )
        if keep.all():
            return events, rounds
        events = events.take(keep)


def compact(events: Events) -> Events:
    """Renumber users and items so codes are 0..k-1 over the events that remain.

    Users keep their (sorted) order; items keep their code order.
    """
    new_user = user_starts(events.user)
    user_codes = np.cumsum(new_user) - 1
    kept_users = events.user[new_user]
    present = np.bincount(events.item, minlength=len(events.item_ids)) > 0
    item_remap = np.cumsum(present) - 1
    return replace(
        events,
        user=user_codes.astype(np.int64),
        item=item_remap[events.item].astype(np.int64),
        user_ids=events.user_ids.take(pa.array(kept_users)),
        item_ids=events.item_ids.take(pa.array(np.flatnonzero(present))),
    )

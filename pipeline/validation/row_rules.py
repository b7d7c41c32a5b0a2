"""Row-level validation rules, vectorised over the whole events table (pyarrow + numpy).

Each row gets one rule code: 0 when it passes, else the index (1-based) of the FIRST rule
it breaks in `ROW_RULES` order, so a row is counted once even when several rules apply.
Duplicates are looked for only among rows that pass every other rule, keeping the first
occurrence in table order (ingest's file order) and quarantining the later ones.

Nothing here loops over rows in Python: 10M events cost a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.params import ValidateParams

# Order matters: a row breaking several rules is reported under the first one.
ROW_RULES: tuple[str, ...] = (
    "null_user_id",
    "null_item_id",
    "user_id_too_long",
    "item_id_too_long",
    "unknown_event_type",
    "null_timestamp",
    "timestamp_before_min",
    "timestamp_in_future",
    "duplicate_event",
)
VALID = 0
DUPLICATE_KEY = ("user_id", "item_id", "event_type", "timestamp")
NS_PER_HOUR = 3_600 * 10**9


def rule_code(rule: str) -> int:
    """Code stored per row for `rule` (1-based position in `ROW_RULES`)."""
    return ROW_RULES.index(rule) + 1


@dataclass(frozen=True)
class RowCheck:
    """Outcome of the row pass.

    Attributes:
        codes: (n_rows,) int8, 0 = valid, else `rule_code(rule)` of the first broken rule.
        details: one human-readable reason per quarantined row, aligned with
            `np.flatnonzero(codes)`.
    """

    codes: np.ndarray
    details: pd.Series

    @property
    def valid_mask(self) -> np.ndarray:
        return self.codes == VALID

    def counts(self) -> dict[str, int]:
        """Quarantined rows per rule (rules that caught nothing are listed with 0)."""
        per_code = np.bincount(self.codes, minlength=len(ROW_RULES) + 1)
        return {rule: int(per_code[rule_code(rule)]) for rule in ROW_RULES}


def as_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded strings (a pandas category) decoded; other columns as they are."""
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _blank(column: pa.ChunkedArray) -> np.ndarray:
    """Null or whitespace-only: an id nobody can join on."""
    stripped = pc.utf8_trim_whitespace(column)
    return pc.fill_null(pc.equal(pc.utf8_length(stripped), 0), True).to_numpy(
        zero_copy_only=False
    )


def _assign(codes: np.ndarray, failing: np.ndarray, rule: str) -> None:
    """Give `rule` to rows failing it that have no earlier rule yet."""
    codes[failing & (codes == VALID)] = rule_code(rule)


def _timestamps_ns(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ns since epoch with nulls as 0, null mask) for a timestamp column."""
    as_ns = column.cast(pa.timestamp("ns", tz=column.type.tz))
    is_null = as_ns.is_null().to_numpy(zero_copy_only=False)
    values = pc.fill_null(as_ns.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    return values, is_null


def _key_codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integers that are equal exactly when the values are (nulls never reach here)."""
    if pa.types.is_timestamp(column.type):
        return pc.fill_null(column.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    encoded = pc.dictionary_encode(as_string(column)).combine_chunks()
    return pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)


def _duplicates(events: pa.Table, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Later copies of an identical (user, item, type, timestamp) among `candidates`.

    Returns:
        (positions of the duplicate rows, position of the first copy of each), both
        indices into the full table.
    """
    rows = np.flatnonzero(candidates)
    # Integer codes of the whole columns, then a numpy gather: no copy of the strings.
    keys = pd.DataFrame({
        name: _key_codes(events[name])[rows] for name in DUPLICATE_KEY
    })
    # ngroup(sort=False) numbers groups by first appearance, so the k-th first copy in
    # table order belongs to group k: no second pass to find the original of a copy.
    group = keys.groupby(list(DUPLICATE_KEY), sort=False).ngroup().to_numpy()
    is_copy = pd.Series(group).duplicated(keep="first").to_numpy()
    first_rows = rows[~is_copy]
    return rows[is_copy], first_rows[group[is_copy]]


def _format_ts(ns: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(ns, utc=True)).dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_rows(
    events: pa.Table, params: ValidateParams, event_types: list[str], now: datetime
) -> RowCheck:
    """Apply every row rule to `events` (canonical schema, already checked).

    Args:
        events: the interim events table.
        params: the `validate` params section.
        event_types: allowed event types (`data.event_types`).
        now: reference time for the future-timestamp rule (UTC).

    Returns:
        the per-row rule codes and a reason for every quarantined row.
    """
    n_rows = events.num_rows
    codes = np.zeros(n_rows, dtype=np.int8)
    user_ids = as_string(events["user_id"])
    item_ids = as_string(events["item_id"])
    event_type = as_string(events["event_type"])
    _assign(codes, _blank(user_ids), "null_user_id")
    _assign(codes, _blank(item_ids), "null_item_id")
    user_len = pc.fill_null(pc.utf8_length(user_ids), 0).to_numpy(zero_copy_only=False)
    item_len = pc.fill_null(pc.utf8_length(item_ids), 0).to_numpy(zero_copy_only=False)
    _assign(codes, user_len > params.max_id_length, "user_id_too_long")
    _assign(codes, item_len > params.max_id_length, "item_id_too_long")
    known = pc.fill_null(pc.is_in(event_type, value_set=pa.array(event_types)), False)
    _assign(codes, ~known.to_numpy(zero_copy_only=False), "unknown_event_type")
    ts_ns, ts_null = _timestamps_ns(events["timestamp"])
    min_ns = pd.Timestamp(params.min_timestamp, tz="UTC").value
    max_ns = pd.Timestamp(now).value + int(params.future_tolerance_hours * NS_PER_HOUR)
    _assign(codes, ts_null, "null_timestamp")
    _assign(codes, ts_ns < min_ns, "timestamp_before_min")
    _assign(codes, ts_ns > max_ns, "timestamp_in_future")
    copies, originals = _duplicates(events, codes == VALID)
    codes[copies] = rule_code("duplicate_event")

    details = _details(
        codes, events, user_len, item_len, event_type, ts_ns, copies, originals,
        params, event_types, max_ns,
    )
    return RowCheck(codes=codes, details=details)


def _details(
    codes: np.ndarray,
    events: pa.Table,
    user_len: np.ndarray,
    item_len: np.ndarray,
    event_type: pa.ChunkedArray,
    ts_ns: np.ndarray,
    copies: np.ndarray,
    originals: np.ndarray,
    params: ValidateParams,
    event_types: list[str],
    max_ns: int,
) -> pd.Series:
    """One reason per quarantined row, built per rule on the (small) failing subset."""
    bad = np.flatnonzero(codes)
    details = pd.Series("", index=bad, dtype=object)
    for rule in ROW_RULES:
        rows = bad[codes[bad] == rule_code(rule)]
        if not len(rows):
            continue
        if rule in ("null_user_id", "null_item_id"):
            text = f"{rule.removeprefix('null_')} is null or blank"
        elif rule in ("user_id_too_long", "item_id_too_long"):
            column = rule.removesuffix("_too_long")
            lengths = (user_len if column == "user_id" else item_len)[rows]
            text = (
                f"{column} has " + pd.Series(lengths, index=rows).astype(str)
                + f" chars > validate.max_id_length {params.max_id_length}"
            )
        elif rule == "unknown_event_type":
            values = pd.Series(event_type.take(pa.array(rows)).to_pylist(), index=rows)
            text = (
                "event_type " + values.map(repr)
                + f" not in data.event_types {list(event_types)}"
            )
        elif rule == "null_timestamp":
            text = "timestamp is null"
        elif rule == "timestamp_before_min":
            stamps = _format_ts(ts_ns[rows]).set_axis(rows)
            text = "timestamp " + stamps + f" < validate.min_timestamp {params.min_timestamp}"
        elif rule == "timestamp_in_future":
            stamps = _format_ts(ts_ns[rows]).set_axis(rows)
            limit = _format_ts(np.array([max_ns])).iloc[0]
            text = (
                "timestamp " + stamps + f" > now + validate.future_tolerance_hours "
                f"({params.future_tolerance_hours}h) = {limit}"
            )
        else:  # duplicate_event: name the first copy, which stays valid
            order = np.argsort(copies)
            first = originals[order]
            files = pd.Series(events["source_file"].take(pa.array(first)).to_pylist(), index=rows)
            source_rows = pd.Series(
                events["source_row"].take(pa.array(first)).to_numpy(), index=rows
            )
            text = "same user_id, item_id, event_type, timestamp as " + files.astype(str) + (
                ":" + source_rows.astype(str) + " (kept)"
            )
        details.loc[rows] = text
    return details

"""Turn one file's parsed columns into canonical events; quarantine what cannot be parsed.

Row-level rules owned by ingest (a row that cannot become a canonical row), in the order
they are checked (the first one that fails names the row's rule):
`control_chars`, `field_too_long`, `spreadsheet_formula`, `timestamp_unparseable`.
The readers add `not_utf8`, `bad_quoting`, `wrong_field_count`, `bad_json`,
`empty_sequence`, `misaligned_timestamps`. Semantic rules (null ids, unknown event types,
time window, id length, duplicates) belong to validate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.ingest.field_rules import NUMBER_RE, field_checks, preview

UNIT_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
INT64_MAX = np.iinfo(np.int64).max
# pandas' datetime64[ns] range, where the canonical timestamps must fit.
MIN_TIMESTAMP = pd.Timestamp("1677-09-22", tz="UTC")
MAX_TIMESTAMP = pd.Timestamp("2262-04-11", tz="UTC")
REQUIRED = ("user_id", "item_id", "timestamp")
ID_COLUMNS = ("user_id", "item_id", "session_id")
PROVENANCE = ("source_file", "source_row")
NUMERIC_SNIFF_ROWS = 100
QUARANTINE_COLUMNS = ("source_file", "source_row", "raw", "rule", "detail")


@dataclass(frozen=True)
class Recipe:
    """How one source's columns become canonical ones.

    Attributes:
        columns: file column -> canonical column.
        timestamp_unit: s|ms|us|ns for epoch numbers; None for date/time text.
        timestamp_format: strptime format of text timestamps; None = ISO 8601.
        event_type_map: raw event name -> canonical event type (others are kept as they are).
        default_event_type: event type when the file has no event column.
        keep: the only file columns read (None: all, extras passed through).
        timestamp_detail: quarantine detail for bad timestamps (None: derived from the unit).
    """

    columns: dict[str, str] = field(default_factory=dict)
    timestamp_unit: str | None = None
    timestamp_format: str | None = None
    event_type_map: dict[str, str] = field(default_factory=dict)
    default_event_type: str = "purchase"
    keep: tuple[str, ...] | None = None
    timestamp_detail: str | None = None


@dataclass
class FileRows:
    """One input file's canonical events, its quarantine and its row count."""

    source_file: str
    events: pd.DataFrame
    quarantine: pd.DataFrame
    rows_in: int


def quarantine_frame(source_file: str, records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(records, columns=list(QUARANTINE_COLUMNS[1:]))
    frame.insert(0, "source_file", source_file)
    return frame.astype({"source_row": "int64"})


def _epoch_ns(column: pa.ChunkedArray, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers (or their text) to int64 ns; bad where not a number or out of range."""
    factor = UNIT_NS[unit]
    try:
        ints = pc.cast(column, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        ints = None
    if ints is not None:
        values = pc.fill_null(ints, 0).to_numpy(zero_copy_only=False)
        bad = pc.is_null(ints).to_numpy(zero_copy_only=False) | (
            np.abs(values) > INT64_MAX // factor
        )
        return np.where(bad, 0, values) * factor, bad
    # Fractional epochs (1396860669.277) or text with some non-numbers.
    values = pd.to_numeric(pd.Series(column.to_pandas()), errors="coerce").to_numpy(np.float64)
    # Round at whole microseconds: exact in float64 for today's epochs (ns would not be).
    to_us = max(factor // UNIT_NS["us"], 1)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(values) | (np.abs(values) * factor >= INT64_MAX)
        micros = np.round(np.where(bad, 0.0, values) * to_us).astype(np.int64)
    return micros * (factor // to_us), bad


def parse_timestamps(
    column: pa.ChunkedArray, recipe: Recipe, where: str
) -> tuple[np.ndarray, np.ndarray, str]:
    """Canonical timestamps as int64 ns since the epoch (UTC).

    Returns:
        ns: (rows,) int64; bad: (rows,) bool; reason: the detail for bad rows.
    """
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        if pa.types.is_date(kind):
            column = pc.cast(column, pa.timestamp("s"))
        unit = column.type.unit
        ns, bad = _epoch_ns(pc.cast(column, pa.int64()), unit)
        return ns, bad, "null timestamp"
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    unit = recipe.timestamp_unit
    if numeric and unit is None:
        raise InputError(
            f"{where}: timestamp column holds numbers; set data.timestamp_unit "
            "(s|ms|us|ns) (rule timestamp_unit_missing)"
        )
    if unit is not None:
        ns, bad = _epoch_ns(column, unit)
        return ns, bad, f"not a unix time in {unit}"
    if recipe.timestamp_format is None:
        sample = pc.drop_null(column).slice(0, NUMERIC_SNIFF_ROWS)
        if len(sample) and pc.all(pc.match_substring_regex(sample, NUMBER_RE)).as_py():
            raise InputError(
                f"{where}: timestamps look like epoch numbers ({sample[0]}); set "
                "data.timestamp_unit (s|ms|us|ns) (rule timestamp_unit_missing)"
            )
    fmt = recipe.timestamp_format or "ISO8601"
    parsed = pd.to_datetime(pd.Series(column.to_pandas()), format=fmt, errors="coerce", utc=True)
    bad = (parsed.isna() | (parsed < MIN_TIMESTAMP) | (parsed > MAX_TIMESTAMP)).to_numpy()
    parsed = parsed.where(~bad, MIN_TIMESTAMP).dt.as_unit("ns")
    return parsed.dt.tz_localize(None).to_numpy().view(np.int64), bad, f"not a {fmt} date/time"


def id_strings(column: pa.ChunkedArray, where: str) -> pa.ChunkedArray:
    """Ids as text: integer ids without a '.0', empty text as null."""
    kind = column.type
    if pa.types.is_floating(kind):
        with contextlib.suppress(pa.ArrowInvalid):  # fractional ids stay decimal text
            column = pc.cast(column, pa.int64())
    try:
        column = pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InputError(
            f"{where}: ids of type {kind} cannot be read as text (rule bad_id_type)"
        ) from None
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)


def typed_extra(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A text column passed through: as int64 or float64 when every value is a number."""
    if not pa.types.is_string(column.type):
        return column
    column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    for kind in (pa.int64(), pa.float64()):
        try:
            return pc.cast(column, kind)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return column


def map_event_types(column: pa.ChunkedArray, mapping: dict[str, str]) -> np.ndarray:
    """Raw event names through `mapping` (unknown names kept for validate to judge)."""
    codes, uniques = pd.factorize(pd.Series(pc.cast(column, pa.string()).to_pandas()))
    mapped = [mapping.get(value, value) or None for value in uniques]  # empty text: null
    mapped = np.array([*mapped, None], dtype=object)
    return mapped[codes]  # code -1 (null) picks the trailing None


def rename_columns(table: pa.Table, recipe: Recipe, where: str) -> pa.Table:
    """Apply the column mapping; `InputError` on a missing required column or a clash."""
    if recipe.keep is not None:
        table = table.select([name for name in table.column_names if name in recipe.keep])
    names = list(table.column_names)
    missing_sources = [src for src in recipe.columns if src not in names]
    if missing_sources:
        raise InputError(
            f"{where}: line 1: data.columns maps {missing_sources} but the file has "
            f"{names} (rule missing_column)"
        )
    renamed = []
    for name in names:
        if name in recipe.columns:
            renamed.append(recipe.columns[name])
        elif name in recipe.columns.values():
            raise InputError(
                f"{where}: line 1: column {name!r} clashes with a column data.columns maps to it "
                "(rule duplicate_column)"
            )
        elif name in PROVENANCE:
            renamed.append(f"input_{name}")  # keep it, but this ingest's provenance wins
        else:
            renamed.append(name)
    table = table.rename_columns(renamed)
    for required in REQUIRED:
        if required not in table.column_names:
            raise InputError(
                f"{where}: line 1: missing required column {required!r} (rule missing_column); "
                f"found {names}; map yours with data.columns"
            )
    return table


def to_canonical(
    table: pa.Table,
    source_row: np.ndarray,
    *,
    path: Path,
    source_file: str,
    recipe: Recipe,
    max_field_chars: int,
    raw_of: Callable[[np.ndarray], list[str]],
    rows_in: int,
    quarantine: list[dict] | None = None,
    check_control: bool = True,
) -> FileRows:
    """Canonical events of one parsed file; rows failing a rule join `quarantine`.

    Args:
        table: the file's parsed rows (column names as in the file).
        source_row: (rows,) int64 position of each row in the file.
        raw_of: original text of the given source rows, for quarantine records.
        rows_in: data rows in the file, including those the reader already quarantined.
        quarantine: records the reader already rejected.
        check_control: False when the file's bytes are known to hold no control characters.
    """
    where = str(path)
    table = rename_columns(table, recipe, where)
    rules, details = field_checks(table, max_field_chars, check_control)
    ns, ts_bad, reason = parse_timestamps(table["timestamp"], recipe, where)
    ts_bad_new = ts_bad & (rules == None)  # noqa: E711 (element-wise)
    if ts_bad_new.any():
        values = table["timestamp"].take(pa.array(np.flatnonzero(ts_bad_new))).to_pylist()
        rules[ts_bad_new] = "timestamp_unparseable"
        reason = recipe.timestamp_detail or reason
        details[ts_bad_new] = [f"timestamp {preview(str(v))!r}: {reason}" for v in values]
    rejected = np.flatnonzero(rules != None)  # noqa: E711 (element-wise)
    records = list(quarantine or [])
    if len(rejected):
        raws = raw_of(source_row[rejected])
        records += [
            {"source_row": int(row), "raw": raw, "rule": rule, "detail": detail}
            for row, raw, rule, detail in zip(
                source_row[rejected], raws, rules[rejected], details[rejected], strict=True
            )
        ]
        keep = pa.array(rules == None)  # noqa: E711 (element-wise)
        table = table.filter(keep)
        ns = ns[rules == None]  # noqa: E711 (element-wise)
        source_row = source_row[rules == None]  # noqa: E711 (element-wise)

    columns: dict[str, object] = {
        "user_id": id_strings(table["user_id"], where),
        "item_id": id_strings(table["item_id"], where),
    }
    if "event_type" in table.column_names:
        columns["event_type"] = map_event_types(table["event_type"], recipe.event_type_map)
    else:
        columns["event_type"] = np.full(table.num_rows, recipe.default_event_type, dtype=object)
    columns["timestamp"] = pd.to_datetime(ns, unit="ns", utc=True)
    if "session_id" in table.column_names:
        columns["session_id"] = id_strings(table["session_id"], where)
    else:
        columns["session_id"] = pa.nulls(table.num_rows, pa.string())
    columns["source_file"] = source_file
    columns["source_row"] = source_row.astype(np.int64)
    canonical = set(columns)
    for name in table.column_names:
        if name not in canonical:
            columns[name] = typed_extra(table[name])
    events = pd.DataFrame(
        {
            name: value.to_pandas() if isinstance(value, pa.ChunkedArray | pa.Array) else value
            for name, value in columns.items()
        },
        index=pd.RangeIndex(table.num_rows),
    )
    records.sort(key=lambda record: record["source_row"])
    return FileRows(source_file, events, quarantine_frame(source_file, records), rows_in)

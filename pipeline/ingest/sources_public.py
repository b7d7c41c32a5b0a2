"""Named public dataset formats: each fixes the column mapping, time unit and event names.

`data.event_type_map` entries override each format's built-in event mapping (keys are the
raw names in the file). See docs/ingest.md for the exact formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from pipeline.errors import InputError
from pipeline.ingest.canonical import FileRows, Recipe, to_canonical
from pipeline.ingest.sources import read_csv_events
from pipeline.ingest.textio import TextTable, first_line, read_delimited, read_text_bytes
from pipeline.params import DataParams

TAOBAO_COLUMNS = ["user_id", "item_id", "category_id", "behavior", "timestamp"]
# `fav` (added to favourites) is an intent-to-buy signal, closer to a cart than to a view.
TAOBAO_EVENTS = {"pv": "view", "cart": "cart", "fav": "cart", "buy": "purchase"}
RETAILROCKET_COLUMNS = {"visitorid": "user_id", "itemid": "item_id", "event": "event_type"}
RETAILROCKET_EVENTS = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
AMAZON_COLUMNS = {
    "reviewerID": "user_id",
    "asin": "item_id",
    "unixReviewTime": "timestamp",
    "overall": "rating",
}
AMAZON_RATINGS_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
YOOCHOOSE_PREPARED = {"SessionId": "session_id", "ItemId": "item_id", "Time": "timestamp"}
YOOCHOOSE_RAW_COLUMNS = ["session_id", "timestamp", "item_id", "category"]
DIGINETICA_COLUMNS = ("session_id", "user_id", "item_id", "timeframe", "eventdate")
DIGINETICA_NO_USER = ("NA", "")
SESSION_USER_PREFIX = "session-"
VIEW = "view"


def _events_map(built_in: dict[str, str], data: DataParams) -> dict[str, str]:
    return {**built_in, **data.event_type_map}


def read_taobao(path: Path, data: DataParams) -> FileRows:
    """Tianchi UserBehavior: `user_id,item_id,category_id,behavior,timestamp`, no header."""
    recipe = Recipe(
        columns={"behavior": "event_type"},
        timestamp_unit="s",
        event_type_map=_events_map(TAOBAO_EVENTS, data),
    )
    return read_csv_events(path, data, recipe, names=TAOBAO_COLUMNS, delimiter=",")


def read_retailrocket(path: Path, data: DataParams) -> FileRows:
    """RetailRocket `events.csv`: `timestamp,visitorid,event,itemid,transactionid` (ms)."""
    recipe = Recipe(
        columns=RETAILROCKET_COLUMNS,
        timestamp_unit="ms",
        event_type_map=_events_map(RETAILROCKET_EVENTS, data),
    )
    return read_csv_events(path, data, recipe, delimiter=",")


def _amazon_recipe(data: DataParams, columns: dict[str, str]) -> Recipe:
    return Recipe(
        columns=columns,
        keep=tuple(AMAZON_COLUMNS) + tuple(AMAZON_RATINGS_COLUMNS),
        timestamp_unit="s",
        event_type_map=dict(data.event_type_map),
        default_event_type=data.default_event_type,
    )


def _read_json_lines(path: Path) -> TextTable:
    """JSON lines (one review object per line) as a table of the review fields we keep."""
    data = read_text_bytes(path)
    n_lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if b"\n\n" not in data and b"\n\r\n" not in data:
        try:
            table = pajson.read_json(pa.BufferReader(data))
            if table.num_rows == n_lines:
                rows = np.arange(table.num_rows, dtype=np.int64)
                return TextTable(path, data, 0, table, rows, [], n_lines)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # some line is not JSON: find which below
    records, rows, quarantine = [], [], []
    for index, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            if not isinstance(value, dict):
                raise ValueError(f"a JSON {type(value).__name__}, not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            raw = line.decode("utf-8", errors="backslashreplace")
            quarantine.append(
                {"source_row": index, "raw": raw, "rule": "bad_json", "detail": str(exc)}
            )
            continue
        records.append(
            {key: None if value.get(key) is None else str(value[key]) for key in AMAZON_COLUMNS}
        )
        rows.append(index)
    table = pa.Table.from_pylist(
        records, schema=pa.schema([(k, pa.string()) for k in AMAZON_COLUMNS])
    )
    present = [k for k in AMAZON_COLUMNS if any(r[k] is not None for r in records)] or list(
        AMAZON_COLUMNS
    )
    rows_in = len(records) + len(quarantine)
    return TextTable(
        path, data, 0, table.select(present), np.asarray(rows, dtype=np.int64), quarantine, rows_in
    )


def read_amazon_reviews(path: Path, data: DataParams) -> FileRows:
    """Amazon reviews as purchase events: JSON lines or CSV with `reviewerID, asin,
    unixReviewTime` (+ `overall` kept as `rating`), or the header-less ratings-only CSV
    `user,item,rating,timestamp`."""
    name = path.name.lower()
    if name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
        text = _read_json_lines(path)
        return _canonical(path, text, _amazon_recipe(data, AMAZON_COLUMNS), data)
    header = first_line(read_text_bytes(path)).decode("utf-8", errors="replace")
    if "reviewerID" in header:
        recipe = _amazon_recipe(data, {k: v for k, v in AMAZON_COLUMNS.items() if k in header})
        return read_csv_events(path, data, recipe)
    recipe = _amazon_recipe(data, {})
    return read_csv_events(path, data, recipe, names=AMAZON_RATINGS_COLUMNS, delimiter=",")


def _canonical(path: Path, text: TextTable, recipe: Recipe, data: DataParams) -> FileRows:
    return to_canonical(
        text.table,
        text.source_row,
        path=path,
        source_file=path.name,
        recipe=recipe,
        max_field_chars=data.max_field_chars,
        raw_of=text.raw_lines,
        rows_in=text.rows_in,
        quarantine=text.quarantine,
    )


def _require(path: Path, table: pa.Table, names: tuple[str, ...] | list[str]) -> None:
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: line 1: missing required column {missing[0]!r} (rule missing_column); "
            f"found {table.column_names}"
        )


def read_diginetica(path: Path, data: DataParams) -> FileRows:
    """DIGINETICA `session_id;user_id;item_id;timeframe;eventdate` item views.

    The user is `user_id`, or `session-<session_id>` where it is `NA`; the time is
    `eventdate` (a day) plus `timeframe` milliseconds.
    """
    text = read_delimited(path, delimiter=data.csv_delimiter)
    table = text.table
    _require(path, table, DIGINETICA_COLUMNS)
    no_user = pc.is_in(table["user_id"], pa.array(DIGINETICA_NO_USER))
    session_user = pc.binary_join_element_wise(SESSION_USER_PREFIX, table["session_id"], "")
    day = pd.to_datetime(
        pd.Series(table["eventdate"].to_pandas()), format="%Y-%m-%d", errors="coerce", utc=True
    )
    offset_ms = pd.to_numeric(pd.Series(table["timeframe"].to_pandas()), errors="coerce")
    stamp = (day + pd.to_timedelta(offset_ms, unit="ms")).dt.as_unit("ns")
    stamp_ns = pa.array(
        stamp.dt.tz_localize(None).to_numpy().view(np.int64), mask=stamp.isna().to_numpy()
    )
    table = pa.table(
        {
            "user_id": pc.if_else(no_user, session_user, table["user_id"]),
            "item_id": table["item_id"],
            "timestamp": stamp_ns,
            "session_id": table["session_id"],
            "timeframe": table["timeframe"],
            "eventdate": table["eventdate"],
        }
    )
    text.table = table
    recipe = Recipe(
        timestamp_unit="ns",
        timestamp_detail="eventdate + timeframe (ms) is not a date/time",
        event_type_map=dict(data.event_type_map),
        default_event_type=data.event_type_map.get(VIEW, VIEW),
    )
    return _canonical(path, text, recipe, data)


def read_yoochoose(path: Path, data: DataParams) -> FileRows:
    """YOOCHOOSE clicks, session = user, all views: the prepared TSV `SessionId ItemId Time`
    (unix seconds, with header) or the raw `yoochoose-clicks.dat`
    (`session,timestamp,item,category`, ISO times, no header)."""
    header = first_line(read_text_bytes(path)).decode("utf-8", errors="replace")
    recipe_args = {
        "event_type_map": dict(data.event_type_map),
        "default_event_type": data.event_type_map.get(VIEW, VIEW),
    }
    if header.startswith("SessionId"):
        text = read_delimited(path, delimiter=data.csv_delimiter)
        _require(path, text.table, list(YOOCHOOSE_PREPARED))
        recipe = Recipe(columns=YOOCHOOSE_PREPARED, timestamp_unit="s", **recipe_args)
    else:
        text = read_delimited(path, names=YOOCHOOSE_RAW_COLUMNS, delimiter=",")
        text.table = text.table.rename_columns(
            [{"session_id": "SessionId"}.get(n, n) for n in text.table.column_names]
        )
        recipe = Recipe(columns={"SessionId": "session_id"}, **recipe_args)
    text.table = text.table.append_column("user_id", text.table["SessionId"])
    return _canonical(path, text, recipe, data)

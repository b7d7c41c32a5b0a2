"""The quarantine table: every rejected row, ingest's and validate's, in one layout.

`data/quarantine/rows.parquet` (docs/interfaces.md): the row's original values as strings
(one column per events column; null where ingest could not parse the row), `raw` (ingest's
original text; null for validate's rows), then `source_file`, `source_row`, `stage`
(`ingest` | `validate`), `rule`, `detail`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError

TAIL_COLUMNS = ("raw", "source_file", "source_row", "stage", "rule", "detail")
INGEST_COLUMNS = ("source_file", "source_row", "raw", "rule", "detail")
VALUE_SUFFIX = "_value"  # an events column named like a tail column keeps its value here


def value_names(events_schema: pa.Schema) -> list[str]:
    """Quarantine column names for the events' value columns."""
    names = [n for n in events_schema.names if n not in ("source_file", "source_row")]
    return [n + VALUE_SUFFIX if n in TAIL_COLUMNS else n for n in names]


def empty(events_schema: pa.Schema) -> pa.Table:
    """A quarantine table with no rows (still written, so readers need no special case)."""
    fields = [pa.field(n, pa.string()) for n in value_names(events_schema)]
    fields += [
        pa.field("raw", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("stage", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("detail", pa.string()),
    ]
    return pa.schema(fields).empty_table()


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """Values as strings, nulls kept. Exotic types (lists, structs) go through Python,
    which is fine: only rejected rows get here."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


def from_validate(
    events: pa.Table, rows: np.ndarray, rules: np.ndarray, details: np.ndarray
) -> pa.Table:
    """Rows of `events` rejected by validate.

    Args:
        events: the interim events table.
        rows: (k,) int64 positions of the rejected rows.
        rules: (k,) str, the rule that rejected each.
        details: (k,) str, why.
    """
    schema = empty(events.schema).schema
    rejected = events.take(pa.array(rows, pa.int64()))
    columns = [_text(rejected[name]) for name in events.schema.names
               if name not in ("source_file", "source_row")]
    source_file = (
        _text(rejected["source_file"]) if "source_file" in events.schema.names
        else pa.nulls(len(rows), pa.string())
    )
    source_row = (
        rejected["source_row"].cast(pa.int64()) if "source_row" in events.schema.names
        else pa.array(rows, pa.int64())
    )
    columns += [
        pa.nulls(len(rows), pa.string()),
        source_file,
        source_row,
        pa.array(np.full(len(rows), "validate", dtype=object), pa.string()),
        pa.array(rules.astype(object), pa.string()),
        pa.array(details.astype(object), pa.string()),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def from_ingest(ingest_quarantine: pa.Table, events_schema: pa.Schema, path: str) -> pa.Table:
    """Ingest's parse failures in the quarantine layout (value columns null, `raw` set)."""
    missing = [c for c in INGEST_COLUMNS if c not in ingest_quarantine.schema.names]
    if missing:
        raise InputError(f"{path}: missing columns {missing} (see docs/interfaces.md)")
    n_rows = ingest_quarantine.num_rows
    schema = empty(events_schema).schema
    columns = [pa.nulls(n_rows, pa.string()) for _ in value_names(events_schema)]
    columns += [
        _text(ingest_quarantine["raw"]),
        _text(ingest_quarantine["source_file"]),
        ingest_quarantine["source_row"].cast(pa.int64()),
        pa.array(np.full(n_rows, "ingest", dtype=object), pa.string()),
        _text(ingest_quarantine["rule"]),
        _text(ingest_quarantine["detail"]),
    ]
    return pa.Table.from_arrays(columns, schema=schema)

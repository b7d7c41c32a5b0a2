"""Field rules owned by ingest, checked on every text column of a parsed file, in order:
`control_chars`, `field_too_long`, `spreadsheet_formula` (the first that fails names the row).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Control characters other than tab, newline and carriage return: binary junk in a text field.
CONTROL_RE = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
FORMULA_START_RE = r"^[=+\-@]"
NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
PREVIEW_CHARS = 40


def preview(value: str) -> str:
    return value if len(value) <= PREVIEW_CHARS else value[:PREVIEW_CHARS] + "..."


def _control_hits(column: pa.ChunkedArray) -> np.ndarray | None:
    return _numpy(pc.match_substring_regex(column, CONTROL_RE))


def _too_long_hits(column: pa.ChunkedArray, max_field_chars: int) -> np.ndarray | None:
    longest_bytes = pc.max(pc.binary_length(column)).as_py() or 0
    if longest_bytes <= max_field_chars:  # bytes >= chars: nothing can be too long
        return None
    return _numpy(pc.greater(pc.utf8_length(column), max_field_chars))


def _formula_hits(column: pa.ChunkedArray) -> np.ndarray | None:
    starts = np.flatnonzero(_numpy(pc.match_substring_regex(column, FORMULA_START_RE)))
    if not len(starts):
        return None
    # Only the few values starting with = + - @ are tested for being plain numbers.
    numbers = _numpy(pc.match_substring_regex(column.take(pa.array(starts)), NUMBER_RE))
    hits = np.zeros(len(column), dtype=bool)
    hits[starts[~numbers]] = True
    return hits


def _numpy(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)


def field_checks(
    table: pa.Table, max_field_chars: int, check_control: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row first failing field rule and its detail (None where the row passes).

    Args:
        table: parsed rows; only `string` columns are checked.
        max_field_chars: longer text fields fail `field_too_long`.
        check_control: False when the caller knows the bytes hold no control characters.

    Returns:
        rules, details: (rows,) object arrays.
    """
    rules = np.full(table.num_rows, None, dtype=object)
    details = np.full(table.num_rows, None, dtype=object)
    string_columns = [name for name in table.column_names if pa.types.is_string(table[name].type)]
    checks: list[tuple[str, Callable]] = [
        ("field_too_long", lambda col: _too_long_hits(col, max_field_chars)),
        ("spreadsheet_formula", _formula_hits),
    ]
    if check_control:
        checks.insert(0, ("control_chars", _control_hits))
    for rule, check in checks:
        for name in string_columns:
            column = table[name]
            hit = check(column)
            if hit is None:
                continue
            new = np.flatnonzero(hit & (rules == None))  # noqa: E711 (element-wise)
            if not len(new):
                continue
            rules[new] = rule
            values = column.take(pa.array(new)).to_pylist()
            if rule == "field_too_long":
                text = [f"column {name!r}: {len(v)} chars > max {max_field_chars}" for v in values]
            elif rule == "control_chars":
                text = [
                    f"column {name!r}: control characters in {v!r:.{PREVIEW_CHARS}}" for v in values
                ]
            else:
                text = [f"column {name!r} looks like a formula: {preview(v)!r}" for v in values]
            details[new] = text
    return rules, details

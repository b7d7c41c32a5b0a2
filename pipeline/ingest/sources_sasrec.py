"""SASRec-style sequence files: one line per user, `uid i1 i2 ...`, in chronological order.

A row here is one event (a user's item at one position); `source_row` is its ordinal in file
order (line by line, position by position), so sorting by it restores the file's order. With
`data.timestamps_path`, an aligned file `uid t1 t2 ...` (unix seconds, or
`data.timestamp_unit`) gives the times; a line whose timestamps do not match its items
(missing user, other length) has its events quarantined as `misaligned_timestamps`. Without
one, each user's events get `SASREC_BASE_TIME_S + position` seconds: increasing, order kept.
A line with a user id and no items is one quarantined row (`empty_sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import InputError
from pipeline.ingest.canonical import FileRows, Recipe, to_canonical
from pipeline.ingest.textio import read_text_bytes
from pipeline.params import DataParams

SASREC_BASE_TIME_S = int(pd.Timestamp("2020-01-01", tz="UTC").timestamp())


@dataclass
class _Sequences:
    """The non-blank lines of a sequence file split into tokens."""

    line_index: np.ndarray  # (lines,) 0-based line number in the file
    lines: list[str]  # (lines,) text of each line
    users: pa.Array  # (lines,) first token
    values: pa.ListArray  # (lines,) the remaining tokens
    lengths: np.ndarray  # (lines,) len(values)
    rejected: list[tuple[int, str, str]]  # (line, raw, detail) of lines that are not UTF-8


def _split_lines(path: Path) -> _Sequences:
    data = read_text_bytes(path)
    kept: list[tuple[int, str]] = []
    rejected = []
    for index, raw in enumerate(data.split(b"\n")):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            kept.append((index, raw.decode("utf-8").strip()))
        except UnicodeDecodeError as exc:
            text = raw.decode("utf-8", errors="backslashreplace")
            rejected.append((index, text, f"byte 0x{raw[exc.start]:02x} is not UTF-8"))
    lines = [text for _, text in kept]
    tokens = pc.utf8_split_whitespace(pa.array(lines, pa.string()))
    users = pc.list_element(tokens, 0) if len(lines) else pa.array([], pa.string())
    values = pc.list_slice(tokens, 1)
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    line_index = np.asarray([index for index, _ in kept], dtype=np.int64)
    return _Sequences(line_index, lines, users, values, lengths, rejected)


def _aligned_times(items: _Sequences, path: Path, data: DataParams) -> tuple[pa.Array, np.ndarray]:
    """Per event timestamp tokens, and (lines,) whether each line's timestamps align."""
    if data.timestamps_path is None:
        position = np.arange(int(items.lengths.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(items.lengths) - items.lengths, items.lengths
        )
        return pa.array(SASREC_BASE_TIME_S + position), np.ones(len(items.lines), dtype=bool)
    stamps = _split_lines(Path(data.timestamps_path))
    users = pd.Index(stamps.users.to_pandas())
    if not users.is_unique:
        dup = users[users.duplicated()][0]
        raise InputError(
            f"{data.timestamps_path}: user {dup!r} appears on two lines (rule duplicate_user)"
        )
    match = users.get_indexer(pd.Index(items.users.to_pandas()))
    aligned = (match >= 0) & (stamps.lengths[np.maximum(match, 0)] == items.lengths)
    times = pc.list_flatten(stamps.values.take(pa.array(match[aligned])))
    return times, aligned


def read_sasrec(path: Path, data: DataParams) -> FileRows:
    """A SASRec-style `uid i1 i2 ...` file as canonical events."""
    if data.timestamps_path is not None and not Path(data.path).is_file():
        raise InputError(
            f"{path}: data.timestamps_path needs data.path to be one file (rule bad_path)"
        )
    items = _split_lines(path)
    n_events = int(items.lengths.sum())
    event_line = np.repeat(np.arange(len(items.lines)), items.lengths)  # (events,)
    ordinal = np.arange(n_events, dtype=np.int64)
    times, aligned = _aligned_times(items, path, data)
    # Whole-line rejects take the ordinal where their events would have started.
    starts = np.concatenate([[0], np.cumsum(items.lengths)])
    records = [
        {
            "source_row": int(starts[np.searchsorted(items.line_index, i)]),
            "raw": raw,
            "rule": "not_utf8",
            "detail": f"line {i + 1}: {detail}",
        }
        for i, raw, detail in items.rejected
    ]
    for line in np.flatnonzero(items.lengths == 0):
        records.append(
            {
                "source_row": int(starts[line]),
                "raw": items.lines[line],
                "rule": "empty_sequence",
                "detail": f"line {items.line_index[line] + 1}: a user id and no items",
            }
        )
    user_per_event = items.users.take(pa.array(event_line))
    item_per_event = pc.list_flatten(items.values)
    misaligned = ~aligned[event_line]
    for event in np.flatnonzero(misaligned):
        line = event_line[event]
        records.append(
            {
                "source_row": int(event),
                "raw": f"{user_per_event[event]} {item_per_event[event]}",
                "rule": "misaligned_timestamps",
                "detail": f"line {items.line_index[line] + 1}: user's timestamps missing or of "
                f"another length in {data.timestamps_path}",
            }
        )
    keep = pa.array(~misaligned)
    table = pa.table(
        {
            "user_id": user_per_event.filter(keep),
            "item_id": item_per_event.filter(keep),
            "timestamp": times,
        }
    )
    rows = ordinal[~misaligned]

    def raw_of(source_rows: np.ndarray) -> list[str]:
        picked = table.take(pa.array(np.searchsorted(rows, source_rows)))
        return [
            " ".join(map(str, values)) for values in zip(*picked.to_pydict().values(), strict=True)
        ]

    unit = (data.timestamp_unit or "s") if data.timestamps_path else "s"
    recipe = Recipe(timestamp_unit=unit, default_event_type=data.default_event_type)
    return to_canonical(
        table,
        rows,
        path=path,
        source_file=path.name,
        recipe=recipe,
        max_field_chars=data.max_field_chars,
        raw_of=raw_of,
        rows_in=n_events + len(records) - int(misaligned.sum()),
        quarantine=records,
    )

"""Source adapters: which files a source reads and how each becomes canonical events.

`read_source(data)` lists the files of `data.path` (a file, or every matching file of a
folder, sorted by name) and returns one `FileRows` per file. Generic `csv` and `parquet`
sources use `data.columns`, `data.timestamp_unit` / `data.timestamp_format`,
`data.event_type_map` and `data.default_event_type`; the named public formats live in
`pipeline.ingest.sources_public` and fix those for their files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.ingest.canonical import FileRows, Recipe, to_canonical
from pipeline.ingest.textio import has_control_bytes, read_delimited
from pipeline.params import DataParams

Reader = Callable[[Path, DataParams], FileRows]


def generic_recipe(data: DataParams) -> Recipe:
    return Recipe(
        columns=dict(data.columns),
        timestamp_unit=data.timestamp_unit,
        timestamp_format=data.timestamp_format,
        event_type_map=dict(data.event_type_map),
        default_event_type=data.default_event_type,
    )


def read_csv_events(
    path: Path,
    data: DataParams,
    recipe: Recipe | None = None,
    names: list[str] | None = None,
    delimiter: str | None = None,
) -> FileRows:
    """A delimited text file (header unless `names` given) as canonical events."""
    text = read_delimited(path, names=names, delimiter=delimiter or data.csv_delimiter)
    return to_canonical(
        text.table,
        text.source_row,
        path=path,
        source_file=path.name,
        recipe=recipe or generic_recipe(data),
        max_field_chars=data.max_field_chars,
        raw_of=text.raw_lines,
        rows_in=text.rows_in,
        quarantine=text.quarantine,
        check_control=has_control_bytes(text.data),
    )


def _json_rows(table: pa.Table) -> Callable[[np.ndarray], list[str]]:
    def raw_of(rows: np.ndarray) -> list[str]:
        picked = table.take(pa.array(np.asarray(rows, dtype=np.int64))).to_pylist()
        return [json.dumps(row, default=str, ensure_ascii=False) for row in picked]

    return raw_of


def read_parquet_events(path: Path, data: DataParams) -> FileRows:
    """A Parquet file with any column names (mapped by `data.columns`) as canonical events."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{path}: not a readable Parquet file: {exc} (rule unreadable_file)"
        ) from None
    if table.num_rows == 0:
        raise InputError(f"{path}: row 1: no data rows (rule no_data_rows)")
    table = table.combine_chunks()
    rows = np.arange(table.num_rows, dtype=np.int64)
    return to_canonical(
        table,
        rows,
        path=path,
        source_file=path.name,
        recipe=generic_recipe(data),
        max_field_chars=data.max_field_chars,
        raw_of=_json_rows(table),
        rows_in=table.num_rows,
    )


def list_files(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    """`path` itself, or the files in folder `path` matching `patterns`, sorted by name."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder (rule missing_input; see data.path)")
    files = sorted({file for pattern in patterns for file in path.glob(pattern) if file.is_file()})
    if not files:
        raise InputError(
            f"{path}: folder has no input files matching {list(patterns)} (rule missing_input)"
        )
    return files


def _source_table() -> dict[str, tuple[tuple[str, ...], Reader]]:
    from pipeline.ingest import sources_public as public
    from pipeline.ingest.sources_sasrec import read_sasrec

    return {
        "csv": (("*.csv", "*.csv.gz", "*.tsv"), read_csv_events),
        "parquet": (("*.parquet", "*.pq"), read_parquet_events),
        "sasrec": (("*.txt",), read_sasrec),
        "taobao": (("*.csv", "*.csv.gz"), public.read_taobao),
        "retailrocket": (("events*.csv", "events*.csv.gz"), public.read_retailrocket),
        "amazon_reviews": (
            ("*.json", "*.jsonl", "*.json.gz", "*.jsonl.gz", "*.csv", "*.csv.gz"),
            public.read_amazon_reviews,
        ),
        "diginetica": (("*.csv", "*.csv.gz"), public.read_diginetica),
        "yoochoose": (("*.txt", "*.tsv", "*.dat", "*.csv"), public.read_yoochoose),
    }


def source_patterns(source: str) -> tuple[str, ...]:
    """File-name patterns a source reads from a folder."""
    return _source_table()[source][0]


def read_source(data: DataParams) -> list[FileRows]:
    """Every file of a file-based source as canonical events (one `FileRows` per file)."""
    patterns, reader = _source_table()[data.source]
    return [reader(path, data) for path in list_files(Path(data.path), patterns)]

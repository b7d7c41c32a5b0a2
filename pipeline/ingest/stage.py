"""`ingest` stage: read the configured source into the canonical events table.

    python -m pipeline ingest --out data/interim

Writes `<out>/events.parquet` (canonical events, docs/interfaces.md), `<out>/quarantine.parquet`
(rows that could not be parsed: source_file, source_row, raw, rule, detail),
`<out>/summary.json` (row accounting overall and per source file) and, when the source has
one, `<out>/catalog.parquet` (item side features, `pipeline.ingest.catalog`). Every input row
is either parsed or quarantined with its rule: `rows_in == rows_parsed + rows_quarantined`,
per file and overall.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from pipeline.ingest.canonical import FileRows
    from pipeline.params import DataParams, SyntheticParams

log = logging.getLogger(__name__)

SYNTHETIC_SOURCE_FILE = "synthetic"
CANONICAL_ORDER = (
    "user_id",
    "item_id",
    "event_type",
    "timestamp",
    "session_id",
    "source_file",
    "source_row",
)


@dataclass(frozen=True)
class IngestResult:
    """Canonical events, the quarantined rows, the accounting summary, the catalog if any."""

    events: pd.DataFrame
    quarantine: pd.DataFrame
    summary: dict
    catalog: pd.DataFrame | None = None


def _file_summary(rows: FileRows) -> dict:
    by_rule = Counter(rows.quarantine["rule"].tolist())
    return {
        "rows_in": rows.rows_in,
        "rows_parsed": len(rows.events),
        "rows_quarantined": len(rows.quarantine),
        "by_rule": dict(sorted(by_rule.items())),
    }


def summarize(source: str, files: list[FileRows], events: pd.DataFrame) -> dict:
    """Row accounting overall and per file, plus the size and time span of the events."""
    per_file = {rows.source_file: _file_summary(rows) for rows in files}
    for name, counts in per_file.items():
        if counts["rows_in"] != counts["rows_parsed"] + counts["rows_quarantined"]:
            raise RuntimeError(f"ingest lost rows of {name}: {counts}")  # a bug, not bad input
    by_rule: Counter = Counter()
    for counts in per_file.values():
        by_rule.update(counts["by_rule"])
    has_events = len(events) > 0
    return {
        "source": source,
        "rows_in": sum(c["rows_in"] for c in per_file.values()),
        "rows_parsed": len(events),
        "rows_quarantined": sum(c["rows_quarantined"] for c in per_file.values()),
        "by_rule": dict(sorted(by_rule.items())),
        "users": int(events["user_id"].nunique()),
        "items": int(events["item_id"].nunique()),
        "first_event": events["timestamp"].min().isoformat() if has_events else None,
        "last_event": events["timestamp"].max().isoformat() if has_events else None,
        "files": per_file,
    }


def _synthetic_files(data: DataParams, synthetic: SyntheticParams) -> tuple[list, pd.DataFrame]:
    from pipeline.ingest.canonical import FileRows, quarantine_frame
    from pipeline.ingest.synthetic import generate_events

    events, catalog = generate_events(synthetic, data.event_types)
    rows = FileRows(
        SYNTHETIC_SOURCE_FILE, events, quarantine_frame(SYNTHETIC_SOURCE_FILE, []), len(events)
    )
    return [rows], catalog


def ingest(data: DataParams, synthetic: SyntheticParams) -> IngestResult:
    """Read `data.source` into canonical events.

    Args:
        data: the `data` params section (source, path, column mapping, ...).
        synthetic: the `synthetic` section, used when `data.source == "synthetic"`.

    Raises:
        pipeline.errors.InputError: a file cannot be read as events at all.
    """
    import pandas as pd

    from pipeline.ingest.canonical import QUARANTINE_COLUMNS
    from pipeline.ingest.catalog import build_catalog
    from pipeline.ingest.sources import read_source

    catalog = None
    if data.source == "synthetic":
        files, catalog = _synthetic_files(data, synthetic)
    else:
        files = read_source(data)
    events = pd.concat([rows.events for rows in files], ignore_index=True)
    extras = [name for name in events.columns if name not in CANONICAL_ORDER]
    events = events[[*CANONICAL_ORDER, *extras]]
    quarantine = pd.concat([rows.quarantine for rows in files], ignore_index=True)
    quarantine = quarantine[list(QUARANTINE_COLUMNS)]
    catalog = build_catalog(data, events, own=catalog)
    return IngestResult(events, quarantine, summarize(data.source, files, events), catalog)


def _arrow(frame: pd.DataFrame, fixed: dict[str, pa.DataType]) -> pa.Table:
    """Arrow table with the contract's types; pandas' large strings become plain strings."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for item in table.schema:
        kind = fixed.get(item.name, item.type)
        if pa.types.is_large_string(kind):
            kind = pa.string()
        fields.append(pa.field(item.name, kind))
    return table.cast(pa.schema(fields))


def write_outputs(result: IngestResult, out: Path) -> None:
    """Write events, quarantine, summary (and the catalog, if any) into `out`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    text = pa.string()
    event_types = {
        "user_id": text,
        "item_id": text,
        "event_type": text,
        "timestamp": pa.timestamp("ns", tz="UTC"),
        "session_id": text,
        "source_file": text,
        "source_row": pa.int64(),
    }
    pq.write_table(_arrow(result.events, event_types), out / "events.parquet")
    quarantine_types = {
        "source_file": text,
        "source_row": pa.int64(),
        "raw": text,
        "rule": text,
        "detail": text,
    }
    pq.write_table(_arrow(result.quarantine, quarantine_types), out / "quarantine.parquet")
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
    catalog_path = out / "catalog.parquet"
    if result.catalog is not None:
        pq.write_table(_arrow(result.catalog, {"item_id": text}), catalog_path)
    else:
        catalog_path.unlink(missing_ok=True)  # a stale catalog of an earlier source would mislead


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/interim)")


def run(args: argparse.Namespace) -> int:
    from pipeline.params import load_params

    params = load_params(args.params)
    result = ingest(params.data, params.synthetic)
    write_outputs(result, args.out)
    summary = result.summary
    by_rule = ", ".join(f"{rule} {n}" for rule, n in summary["by_rule"].items() if n)
    print(f"ingest {summary['source']}: {summary['rows_in']} rows in, {summary['rows_parsed']} "
          f"parsed, {summary['rows_quarantined']} quarantined"
          f"{f' ({by_rule})' if by_rule else ''} -> {args.out}")
    return 0

"""Validate the item catalogue (`<interim>/catalog.parquet`) beside the events.

Row rules, first failing names the row: `catalog_null_item_id`, `catalog_duplicate_item`
(the same item_id as an earlier row; the first stays valid). Valid rows go to
`<validated>/catalog.parquet`, the rest to `<quarantine>/catalog_rows.parquet` with their
values as text, the row and the rule; `summary.json` counts them under `catalog`:
`rows_in == rows_valid + rows_quarantined`. No catalogue, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError

CATALOG_FILE = "catalog.parquet"
QUARANTINE_FILE = "catalog_rows.parquet"


def check_catalog(catalog: pa.Table) -> tuple[pa.Table, pa.Table, dict]:
    """(valid rows, quarantined rows with `source_row`, `raw`, `rule`, counts)."""
    ids = catalog.column("item_id")
    rules = np.full(catalog.num_rows, None, dtype=object)
    null = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(
        ids.cast(pa.string()))), 0), True).to_numpy(zero_copy_only=False)
    rules[null] = "catalog_null_item_id"
    seen = pc.fill_null(ids.cast(pa.string()), "").to_pandas().duplicated(keep="first").to_numpy()
    rules[seen & (rules == None)] = "catalog_duplicate_item"  # noqa: E711 (element-wise)
    bad = rules != None  # noqa: E711
    rows = np.flatnonzero(bad)
    raw = [str(r) for r in catalog.take(pa.array(rows)).to_pylist()]
    quarantined = pa.table({
        "source_file": pa.array([CATALOG_FILE] * len(rows), pa.string()),
        "source_row": pa.array(rows, pa.int64()),
        "raw": pa.array(raw, pa.string()),
        "rule": pa.array(rules[bad].tolist(), pa.string()),
    })
    by_rule = {rule: int((rules == rule).sum()) for rule in sorted(set(rules[bad]))}
    counts = {"rows_in": catalog.num_rows, "rows_valid": int((~bad).sum()),
              "rows_quarantined": int(bad.sum()), "by_rule": by_rule}
    return catalog.filter(pa.array(~bad)), quarantined, counts


def validate_catalog(interim: Path, validated: Path, quarantine_dir: Path) -> dict | None:
    """Check and write the catalogue; returns its counts for the summary, or None."""
    source = interim / CATALOG_FILE
    stale = [validated / CATALOG_FILE, quarantine_dir / QUARANTINE_FILE]
    if not source.is_file():
        for path in stale:  # an earlier run's catalogue must not outlive its source
            path.unlink(missing_ok=True)
        return None
    try:
        catalog = pq.read_table(source)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{source}: unreadable parquet: {exc}") from None
    if "item_id" not in catalog.column_names:
        raise InputError(f"{source}: catalogue has no item_id column (rule catalog_no_item_id)")
    valid, quarantined, counts = check_catalog(catalog)
    validated.mkdir(parents=True, exist_ok=True)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(valid, validated / CATALOG_FILE)
    pq.write_table(quarantined, quarantine_dir / QUARANTINE_FILE)
    return counts

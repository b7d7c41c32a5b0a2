"""Item side features from the validated catalogue, as tokens the model embeds.

Each column named in `sequences.item_features` becomes tokens `column=value`: text values as
they are, numbers named in `sequences.numeric_features` by quantile bucket (`price=q3`), list
values (the S3-Rec `attributes`) one token per element. A missing value is the column's own
unknown token (`brand=?`), so "brand unknown" is something the model can learn; an item
absent from the catalogue has no tokens and still scores from its own embedding.

Writes `item_features.parquet` (`index` int32 vocabulary token, `features` list<int32>) and
`feature_vocab.parquet` (`feature` string, `id` int32; 0 is padding), ids in sorted token
order so the same catalogue gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import InputError

ITEM_FEATURES_FILE = "item_features.parquet"
FEATURE_VOCAB_FILE = "feature_vocab.parquet"
UNKNOWN = "?"


@dataclass(frozen=True)
class ItemFeatures:
    table: pa.Table  # index, features
    vocab: pa.Table  # feature, id
    stats: dict


def _tokens(values: list, column: str, numeric: bool, n_buckets: int) -> list[list[str]]:
    """Per catalogue row, the feature tokens of one column."""
    if numeric:
        numbers = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        known = numbers[~np.isnan(numbers)]
        edges = (np.unique(np.quantile(known, np.linspace(0, 1, n_buckets + 1)[1:-1]))
                 if len(known) else np.array([]))
        buckets = np.searchsorted(edges, numbers, side="right")
        return [[f"{column}={UNKNOWN}"] if np.isnan(x) else [f"{column}=q{b}"]
                for x, b in zip(numbers, buckets, strict=True)]
    out = []
    for value in values:
        if isinstance(value, list | tuple | np.ndarray):
            out.append([f"{column}={v}" for v in value if v is not None] or [f"{column}={UNKNOWN}"])
        else:
            out.append([f"{column}={UNKNOWN if value is None or value == '' else value}"])
    return out


def build_item_features(catalog: pa.Table, vocab: pa.Table, columns: list[str],
                        numeric: list[str], n_buckets: int, source: str) -> ItemFeatures:
    """Feature tokens of every vocabulary item found in the catalogue."""
    missing = [c for c in columns if c not in catalog.column_names]
    if missing:
        raise InputError(f"{source}: sequences.item_features names {missing}, not catalogue "
                         f"columns (columns: {catalog.column_names})")
    ids = catalog.column("item_id").cast(pa.string()).to_pylist()
    per_row: list[list[str]] = [[] for _ in ids]
    for column in columns:
        tokens = _tokens(catalog.column(column).to_pylist(), column, column in numeric, n_buckets)
        for row, toks in zip(per_row, tokens, strict=True):
            row.extend(toks)
    index_of = dict(zip(vocab.column("item_id").to_pylist(), vocab.column("index").to_pylist(),
                        strict=True))
    kept = [(index_of[item], toks) for item, toks in zip(ids, per_row, strict=True)
            if item in index_of]
    kept.sort()
    names = sorted({t for _, toks in kept for t in toks})
    id_of = {name: i + 1 for i, name in enumerate(names)}  # 0 = padding
    table = pa.table({
        "index": pa.array([i for i, _ in kept], pa.int32()),
        "features": pa.array([[id_of[t] for t in toks] for _, toks in kept],
                             pa.list_(pa.int32())),
    })
    feature_vocab = pa.table({"feature": pa.array(names, pa.string()),
                              "id": pa.array(range(1, len(names) + 1), pa.int32())})
    stats = {"columns": columns, "catalog_items": len(ids), "items_with_features": len(kept),
             "vocab_items": vocab.num_rows, "feature_tokens": len(names)}
    return ItemFeatures(table, feature_vocab, stats)


def read_catalog(folder: Path) -> pa.Table | None:
    """`<validated>/catalog.parquet`, or None when the source had no catalogue."""
    import pyarrow.parquet as pq

    path = folder / "catalog.parquet"
    return pq.read_table(path) if path.is_file() else None

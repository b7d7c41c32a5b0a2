"""A tiny sequences folder written straight from the contract in docs/interfaces.md.

Shoppers walk the catalogue in order (item k is followed by item k+1, wrapping around), so
the next item is a deterministic function of the last one: a model that learns anything
learns this. Every third event is a cart, every sixth a purchase.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

EVENT_TYPES = ["view", "cart", "purchase"]
FIRST_ITEM = 3  # ids 0..2 are PAD, MASK, UNK


def event_type_ids(n: int, offset: int) -> list[int]:
    steps = np.arange(offset, offset + n)
    return np.where(steps % 6 == 5, 3, np.where(steps % 3 == 2, 2, 1)).tolist()


def write_tiny_sequences(
    root: Path, n_users: int = 40, n_items: int = 12, max_len: int = 8, seed: int = 0,
    min_len: int = 4, max_events: int = 14,
) -> Path:
    """Write train/val/test parquet, vocab.parquet and meta.json under `root`."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train, val, test = [], [], []
    for user in range(n_users):
        length = int(rng.integers(min_len, max_events + 1))
        start = int(rng.integers(0, n_items))
        items = [FIRST_ITEM + (start + k) % n_items for k in range(length)]
        types = event_type_ids(length, user)
        ts = [1_700_000_000 + 600 * k for k in range(length)]
        uid = f"u{user}"
        train.append({"user_id": uid, "items": items[:-2][-(max_len + 1):],
                      "types": types[:-2][-(max_len + 1):], "ts": ts[:-2][-(max_len + 1):]})
        for rows, cut in ((val, length - 2), (test, length - 1)):
            rows.append({"user_id": uid, "history_items": items[:cut][-max_len:],
                         "history_types": types[:cut][-max_len:],
                         "history_ts": ts[:cut][-max_len:], "target_item": items[cut],
                         "target_type": types[cut], "target_ts": ts[cut]})
    list_types = {"items": "int32", "types": "int8", "ts": "int64"}
    import pyarrow as pa

    def table(rows, prefix=""):
        df = pd.DataFrame(rows)
        schema = [pa.field("user_id", pa.string())]
        for name, dtype in list_types.items():
            schema.append(pa.field(prefix + name, pa.list_(pa.from_numpy_dtype(np.dtype(dtype)))))
        if prefix:
            schema += [pa.field("target_item", pa.int32()), pa.field("target_type", pa.int8()),
                       pa.field("target_ts", pa.int64())]
        return pa.Table.from_pandas(df, schema=pa.schema(schema), preserve_index=False)

    import pyarrow.parquet as pq

    pq.write_table(table(train), root / "train.parquet")
    pq.write_table(table(val, "history_"), root / "val.parquet")
    pq.write_table(table(test, "history_"), root / "test.parquet")
    vocab = pd.DataFrame({"item_id": [f"item{k}" for k in range(n_items)],
                          "index": np.arange(FIRST_ITEM, FIRST_ITEM + n_items, dtype="int32")})
    vocab.to_parquet(root / "vocab.parquet", index=False)
    meta = {"event_types": EVENT_TYPES, "target_event_types": ["cart", "purchase"],
            "max_len": max_len, "split": "leave_one_out", "vocab_size": FIRST_ITEM + n_items,
            "n_items": n_items}
    (root / "meta.json").write_text(json.dumps(meta))
    return root

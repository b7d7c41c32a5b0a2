"""The profile of a model's training data: what a later snapshot is compared with.

One small table, `data_profile.parquet` (`kind`, `key`, `count`), written by
`build_sequences` beside the vocabulary and carried in every model folder, so the champion
brings its own reference to the next retrain: event counts per item, per catalogue
`category`, per event type and per shopper, after the same filtering the model trained on,
over the last `drift.window_days` of the data.
Shoppers are kept by id because "how many of this week's shoppers did the champion see" is
one of the drift checks; a profile is as large as the vocabulary plus the user list.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

PROFILE_FILE = "data_profile.parquet"
KINDS = ("item", "category", "event_type", "user")
CATEGORY_COLUMN = "category"
NS_PER_DAY = 86_400 * 10**9  # the catalogue contract's column (DESIGN.md section 2)


def _rows(kind: str, keys: list[str], counts: np.ndarray) -> pa.Table:
    keep = counts > 0
    return pa.table({
        "kind": pa.array([kind] * int(keep.sum()), pa.string()),
        "key": pa.array([k for k, c in zip(keys, keep, strict=True) if c], pa.string()),
        "count": pa.array(counts[keep].astype(np.int64)),
    })


def events_profile(events, event_types: list[str], window_days: float | None = None) -> pa.Table:
    """Item, event-type and shopper counts of encoded events (`sequences.prep.Events`).

    `window_days`: only the events of the last this many days (up to the newest event), so
    a weekly snapshot of the whole history is compared by its newest behaviour, not diluted
    by the weeks both sides share; None = every event.
    """
    keep = slice(None)
    if window_days is not None and len(events):
        keep = events.ts_ns >= events.ts_ns.max() - int(window_days * NS_PER_DAY)
    items = np.bincount(events.item[keep], minlength=len(events.item_ids))
    users = np.bincount(events.user[keep], minlength=len(events.user_ids))
    types = np.bincount(events.event_type[keep], minlength=len(event_types) + 1)[1:]
    return pa.concat_tables([
        _rows("item", events.item_ids.cast(pa.string()).to_pylist(), items),
        _rows("event_type", list(event_types), types),
        _rows("user", events.user_ids.cast(pa.string()).to_pylist(), users),
    ])


def with_categories(profile: pa.Table, catalog: pa.Table | None) -> pa.Table:
    """Add per-category counts (items' counts summed by the catalogue's `category`)."""
    if catalog is None or CATEGORY_COLUMN not in catalog.column_names:
        return profile
    category_of = dict(zip(catalog.column("item_id").cast(pa.string()).to_pylist(),
                           catalog.column(CATEGORY_COLUMN).cast(pa.string()).to_pylist(),
                           strict=True))
    totals: dict[str, int] = {}
    for item, count in counts_of(profile, "item").items():
        category = category_of.get(item)
        if category is not None:
            totals[category] = totals.get(category, 0) + count
    keys = sorted(totals)
    return pa.concat_tables([profile, _rows("category", keys,
                                            np.array([totals[k] for k in keys], np.int64))])


def counts_of(profile: pa.Table, kind: str) -> dict[str, int]:
    """`key -> count` of one kind."""
    import pyarrow.compute as pc

    part = profile.filter(pc.equal(profile["kind"], kind))
    return dict(zip(part["key"].to_pylist(), part["count"].to_pylist(), strict=True))


def read_profile(folder: Path) -> pa.Table | None:
    """The profile in a sequences or model folder; None when it has none."""
    import pyarrow.parquet as pq

    path = Path(folder) / PROFILE_FILE
    return pq.read_table(path) if path.is_file() else None

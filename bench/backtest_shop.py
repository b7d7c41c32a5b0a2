"""A synthetic shop that changes week by week, cut into weekly snapshots for the backtest.

The built-in simulator (`pipeline.ingest.synthetic`) runs over the whole period, shoppers'
favourite categories drifting session by session (`interest_drift`). On top of it, from the
second week on, each week:

- **new items**: a share of the live items is replaced by a successor (a new id with the same
  category, brand and price: next season's model); from that week on the shoppers'
  events go to the successor and the old id is retired (it never appears again);
- **tastes drift**: a share of the live items swap their events with another item of the
  same category, so which items of a category are popular moves.

Both act on ids only, so the catalogue stays consistent with the events, and a model that
reads side features can place a new item among its category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SECONDS_PER_WEEK = 7 * 86400


@dataclass(frozen=True)
class Shop:
    events: pd.DataFrame  # canonical columns + category, ids already renewed and swapped
    catalog: pd.DataFrame  # item_id, category, brand, price (successors included)
    week_ends: list[pd.Timestamp]  # end of week 0, 1, ..., n (exclusive)


def drifting_shop(n_users: int, n_items: int, weeks: int, seed: int, new_share: float,
                  swap_share: float) -> Shop:
    """`weeks + 2` weeks of events: week 0 (history), the backtest weeks, one to score the last."""
    from pipeline.ingest.synthetic import generate_events
    from pipeline.params import parse_params

    total_weeks = weeks + 2
    params = parse_params({"synthetic": {
        "seed": seed, "n_users": n_users, "n_items": n_items, "n_categories": 12,
        "n_brands": 30, "days": 7 * total_weeks, "sessions_per_user_mean": 3.0 * total_weeks,
        "interest_drift": 0.15}})
    events, catalog = generate_events(params.synthetic, params.data.event_types)
    start = events["timestamp"].min().floor("D")
    ends = [start + pd.Timedelta(weeks=k + 1) for k in range(total_weeks)]
    week = ((events["timestamp"] - start).dt.total_seconds() // SECONDS_PER_WEEK).astype(int)
    rng = np.random.default_rng(seed)
    # simulated item -> the id it sells under this week (a one-to-one map throughout)
    current = {item: item for item in catalog["item_id"]}
    row_of = {row["item_id"]: row for row in catalog.to_dict("records")}
    item_ids = events["item_id"].to_numpy(dtype=object).copy()
    for k in range(1, total_weeks):
        live = sorted(current.values())
        renewed = set(rng.choice(live, int(new_share * len(live)), replace=False).tolist())
        for item, sold in current.items():
            if sold in renewed:  # its successor takes over; `sold` never sells again
                successor = f"{sold.split('w')[0]}w{k}"
                row_of[successor] = {**row_of[sold], "item_id": successor}
                current[item] = successor
        by_category = catalog.set_index("item_id")["category"]
        for _, members in by_category.groupby(by_category):
            chosen = rng.permutation(members.index.to_numpy())[: int(swap_share * len(members))]
            for a, b in zip(chosen[::2], chosen[1::2], strict=False):
                current[a], current[b] = current[b], current[a]
        in_week = (week == k).to_numpy()
        item_ids[in_week] = [current[i] for i in events["item_id"].to_numpy()[in_week]]
    events = events.assign(item_id=item_ids)
    return Shop(events, pd.DataFrame(list(row_of.values())), ends)

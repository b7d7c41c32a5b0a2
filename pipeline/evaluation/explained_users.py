"""A few explained users for the evaluation report: what the model recommends to the first
test shoppers, why (`pipeline.serving.explain`: each item's reason and top history event),
and what they did next. A reader sees the model's reasoning on real histories, not only its
averages. The same `Recommender` serving uses answers, with the popularity fallback built
from the training split as `package` builds it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

N_USERS = 5
TOP_ITEMS = 3


def explain_users(model_dir: Path, sequences_dir: Path, registry, split: str = "test",
                  n_users: int = N_USERS) -> list[dict]:
    """The first `n_users` distinct users of the split: their last events, the top items with
    reasons and top events, and the actual next item.

    Returns:
        `[{"user_id", "history": ["item (type)", ...] (last 5), "next": "item (type)",
        "recommended": [{"item_id", "reason", "because": "item (type), weight w" | ""}]}]`
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.serving.package import popularity_table
    from pipeline.serving.recommender import Recommender

    table = pq.read_table(sequences_dir / f"{split}.parquet").to_pandas()
    table = table.drop_duplicates("user_id").head(n_users)
    if table.empty:
        return []
    with tempfile.TemporaryDirectory(prefix="seqrec-explain-") as tmp:
        popularity = Path(tmp) / "popularity.json"
        popularity.write_text(json.dumps(popularity_table(sequences_dir, registry.max_k)))
        recommender = Recommender(model_dir, popularity, TOP_ITEMS, registry.max_k,
                                  registry.default_event_type, registry.serve_batch_size)
    names = recommender.event_types

    def label(token: int, type_id: int) -> str:
        return f"{recommender.index_to_item[token]} ({names[type_id - 1]})"

    request = pd.DataFrame({
        "history": [[str(recommender.index_to_item[t]) for t in row]
                    for row in table["history_items"]],
        "event_types": [[names[t - 1] for t in row] for row in table["history_types"]],
        "timestamps": [list(map(int, row)) for row in table["history_ts"]],
    })
    answer = recommender.recommend(request, k=TOP_ITEMS, explain=True)
    users = []
    for i, row in enumerate(table.itertuples()):
        recommended = []
        for entry in answer["explanations"].iloc[i]:
            top = entry["events"][0] if entry["events"] else None
            because = (f"{top['item_id']} ({top['event_type']}), weight {top['weight']:.3g}"
                       if top else "")
            recommended.append({"item_id": entry["item_id"], "reason": entry["reason"],
                                "because": because})
        users.append({
            "user_id": str(row.user_id),
            "history": [label(t, y) for t, y in zip(row.history_items[-5:],
                                                    row.history_types[-5:], strict=True)],
            "next": label(int(row.target_item), int(row.target_type)),
            "recommended": recommended,
        })
    return users


def explained_table(users: list[dict]):
    """The report's table: one row per user."""
    from pipeline.evaluation.report import Table

    rows = [[u["user_id"], " → ".join(u["history"]), u["next"],
             "; ".join(f"{r['item_id']}: {r['reason']}"
                       + (f" ← {r['because']}" if r["because"] else "")
                       for r in u["recommended"])] for u in users]
    return Table(
        "A few explained users",
        ["user", "last events (oldest first)", "next event",
         f"top {TOP_ITEMS}: reason ← top event"],
        rows,
        note="Reasons and weights from occlusion (docs/registry.md, Explanations): an event's "
             "weight is how much the item's probability drops when that event is removed.",
    )

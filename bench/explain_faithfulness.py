"""How faithful `explain` is on the benchmarked model: for each (request, explained item),
remove the top-weighted event from the request and, separately, a randomly chosen other one,
and compare the drops of the item's served score (the property tests/serving/test_explain.py
checks on a tiny model, here on the real one)."""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("history", "event_types", "timestamps")


def _score_without(model, row: pd.Series, drop: int, item: str, k_all: int) -> float:
    shortened = {c: [v for j, v in enumerate(row[c]) if j != drop] for c in COLUMNS if c in row}
    out = model.predict(pd.DataFrame([shortened]), params={"k": k_all})
    scores = dict(zip(out["items"][0], out["scores"][0], strict=True))
    return scores.get(item, 0.0)  # fell out of the top k_all: at most the last score


def faithfulness(model, requests: pd.DataFrame, k: int, k_all: int, seed: int = 0) -> dict:
    """Share of (request, item) pairs where removing the top event lowers the score more than
    removing a random other event, and the largest |weight - measured drop|."""
    rng = np.random.default_rng(seed)
    out = model.predict(requests, params={"k": k, "explain": True})
    pairs = wins = 0
    worst_gap = 0.0
    for r, row in requests.reset_index(drop=True).iterrows():
        for rank, entry in enumerate(out["explanations"][r]):
            if not entry["events"] or len(row["history"]) < 2:
                continue
            top, item = entry["events"][0], entry["item_id"]
            full = out["scores"][r][rank]
            drop_top = full - _score_without(model, row, top["position"], item, k_all)
            others = [j for j in range(len(row["history"])) if j != top["position"]]
            drop_random = full - _score_without(model, row, int(rng.choice(others)), item, k_all)
            pairs += 1
            wins += bool(drop_top > drop_random)
            worst_gap = max(worst_gap, abs(drop_top - top["weight"]))
    return {"pairs": pairs, "top_beats_random": round(wins / max(pairs, 1), 3),
            "max_weight_vs_drop_gap": worst_gap}

"""Explanations: each recommended item's top history events, faithful to the served score."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from tests.registry_fixtures import N_ITEMS, make_package

EVENT_TYPES = ("view", "cart", "purchase")


@pytest.fixture(scope="module")
def pyfunc(tmp_path_factory):
    return mlflow.pyfunc.load_model(str(make_package(tmp_path_factory.mktemp("explain"))))


def random_requests(n: int, seed: int) -> pd.DataFrame:
    """Histories of 2..8 known events with types and increasing timestamps."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        length = int(rng.integers(2, 9))
        rows.append({
            "history": [f"item{i}" for i in rng.integers(0, N_ITEMS, length)],
            "event_types": [EVENT_TYPES[t] for t in rng.integers(0, 3, length)],
            "timestamps": np.cumsum(rng.integers(1, 5000, length)).tolist(),
        })
    return pd.DataFrame(rows)


def score_of(pyfunc, row: pd.Series, drop: int, item: str) -> float:
    """The served score of `item` for `row`'s request with history entry `drop` removed."""
    shortened = {name: [v for j, v in enumerate(row[name]) if j != drop]
                 for name in ("history", "event_types", "timestamps")}
    out = pyfunc.predict(pd.DataFrame([shortened]), params={"k": N_ITEMS})
    return dict(zip(out["items"][0], out["scores"][0], strict=True))[item]


def test_top_event_weight_is_the_score_drop_and_beats_a_random_event(pyfunc):
    """Faithfulness, measured through the pyfunc on the request itself: removing the
    top-weighted event lowers the item's score by its weight, and more than removing a
    randomly chosen other event, on most (request, item) pairs."""
    requests = random_requests(25, seed=3)
    out = pyfunc.predict(requests, params={"k": 3, "explain": True})
    rng = np.random.default_rng(0)
    pairs = wins = 0
    for r, row in requests.iterrows():
        for rank, explained in enumerate(out["explanations"][r]):
            assert explained["item_id"] == out["items"][r][rank]
            if not explained["events"]:
                continue
            top = explained["events"][0]
            assert row["history"][top["position"]] == top["item_id"]
            assert row["event_types"][top["position"]] == top["event_type"]
            assert row["timestamps"][top["position"]] == top["timestamp"]
            full = out["scores"][r][rank]
            drop_top = full - score_of(pyfunc, row, top["position"], explained["item_id"])
            assert drop_top == pytest.approx(top["weight"], abs=1e-5)
            others = [j for j in range(len(row["history"])) if j != top["position"]]
            drop_random = full - score_of(pyfunc, row, int(rng.choice(others)),
                                          explained["item_id"])
            pairs += 1
            wins += drop_top > drop_random
    assert pairs >= 25
    assert wins / pairs >= 0.8, f"top event beat a random one on {wins}/{pairs} pairs"


def test_reasons_and_which_rows_are_explained(pyfunc):
    request = pd.DataFrame({
        "history": [["item1", "item2", "ghost"], [], ["item4", "item5"]],
        "explain": [True, True, False],
    })
    out = pyfunc.predict(request, params={"k": 5})
    repeat_row, cold_row = out["explanations"][0], out["explanations"][1]
    assert out["explanations"][2] is None, "a row that did not ask gets no explanation"
    for explained in repeat_row:
        events = explained["events"]
        assert len(events) <= 3 and all(e["weight"] > 0 for e in events)
        assert [e["weight"] for e in events] == sorted((e["weight"] for e in events), reverse=True)
        assert all(e["position"] in (0, 1) for e in events), "unknown items are no events"
        if explained["item_id"] in ("item1", "item2"):
            assert explained["reason"] == "repeat"
        else:
            assert explained["reason"] == ("similar_to" if events else "popular")
    assert {e["reason"] for e in repeat_row} >= {"repeat"}
    assert [e["reason"] for e in cold_row] == ["popular"] * 5
    assert [e["item_id"] for e in cold_row] == list(out["items"][1])
    plain = pyfunc.predict(request[["history"]], params={"k": 5})
    assert "explanations" not in plain.columns
    for a, b in zip(plain["items"], out["items"], strict=True):
        assert list(a) == list(b), "explaining changes no recommendation"


def test_a_malformed_explain_flag_names_the_row(pyfunc):
    request = pd.DataFrame({"history": [["item1"], ["item2"]], "explain": [True, "yes"]})
    with pytest.raises(MlflowException, match="request row 1: 'explain' must be true or false"):
        pyfunc.predict(request)

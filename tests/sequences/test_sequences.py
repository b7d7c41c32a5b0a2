"""build_sequences: ordering, sessions, dedup, k-core, leave-one-out, targets, Toys counts."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.params import ParamsError, SequencesParams
from pipeline.sequences.build import build_sequences
from tests.sequences.helpers import (
    CART,
    DAY_S,
    EVENT_TYPES,
    PURCHASE,
    VIEW,
    events_table,
    items_of,
    loose_params,
    row_of,
    user_items,
)


def test_training_rows_end_before_the_val_targets_session_so_val_histories_end_unseen():
    build = build_sequences(events_table(LOO_ROWS), loose_params(), EVENT_TYPES)
    train, val, vocab = build.tables["train"], build.tables["val"], build.vocab
    # u1's val target c is in the day-3 session (b, c, d): training stops before b, so the
    # val history ends with b, never trained on, as a test history ends with unseen events
    assert user_items(train, vocab, "u1", "items") == ["a"]
    assert user_items(val, vocab, "u1", "history_items") == ["a", "b"]
    # u2 (one target) still trains on everything; u3's val target is its first event
    assert user_items(train, vocab, "u2", "items") == ["a", "c"]


# u1: three events share day 3; file order (source_row) says b, c, d.
# u2: one purchase only -> train only, whole sequence.
# u3: its second-to-last target is its first event -> no val example (no history).
LOO_ROWS = [
    ("u1", "a", "view", 1 * DAY_S),
    ("u1", "b", "view", 3 * DAY_S),
    ("u1", "c", "cart", 3 * DAY_S),
    ("u1", "d", "view", 3 * DAY_S),
    ("u2", "a", "view", 1 * DAY_S),
    ("u1", "e", "purchase", 4 * DAY_S),
    ("u1", "a", "view", 5 * DAY_S),
    ("u2", "c", "purchase", 2 * DAY_S),
    ("u3", "e", "purchase", 1 * DAY_S),
    ("u3", "a", "cart", 2 * DAY_S),
]


def test_leave_one_out_exact_contents_with_stable_order_on_equal_timestamps():
    # Physical rows reversed: only source_row may decide the order of equal timestamps.
    table = events_table(LOO_ROWS, order=list(reversed(range(len(LOO_ROWS)))))
    build = build_sequences(table, loose_params(train_until="val_target"), EVENT_TYPES)
    train, val, test = (build.tables[s] for s in ("train", "val", "test"))
    vocab = build.vocab

    u1_train = row_of(train, "u1")
    assert user_items(train, vocab, "u1", "items") == ["a", "b"]
    assert u1_train["types"] == [VIEW, VIEW]
    assert u1_train["ts"] == [1 * DAY_S, 3 * DAY_S]
    u1_val = row_of(val, "u1")
    assert user_items(val, vocab, "u1", "history_items") == ["a", "b"]
    assert u1_val["history_types"] == [VIEW, VIEW]
    assert (u1_val["target_type"], u1_val["target_ts"]) == (CART, 3 * DAY_S)
    u1_test = row_of(test, "u1")
    assert user_items(test, vocab, "u1", "history_items") == ["a", "b", "c", "d"]
    assert u1_test["history_types"] == [VIEW, VIEW, CART, VIEW]
    assert (u1_test["target_type"], u1_test["target_ts"]) == (PURCHASE, 4 * DAY_S)
    assert items_of(val, vocab, "target_item") == ["c"]
    assert sorted(items_of(test, vocab, "target_item")) == ["a", "e"]  # u3's last cart is a

    # u2 has one target: whole sequence to train, nothing to val/test.
    assert user_items(train, vocab, "u2", "items") == ["a", "c"]
    assert "u2" not in val["user_id"].to_pylist() + test["user_id"].to_pylist()
    # u3's val target is its first event: no history, so no val example and no train row.
    assert "u3" not in val["user_id"].to_pylist() + train["user_id"].to_pylist()
    assert build.stats["dropped_no_history"] == {"val": 1, "test": 0}
    assert build.stats["train_finetune_targets"] == 1  # u2: view a -> purchase c
    assert build.meta["target_event_types"] == ["cart", "purchase"]
    assert build.stats["events"] == len(LOO_ROWS)
    assert build.stats["type_counts"]["test_targets"] == {"view": 0, "cart": 1, "purchase": 1}


def test_max_len_keeps_the_most_recent_events():
    rows = [("u", f"i{k}", "purchase", k * DAY_S) for k in range(8)]
    build = build_sequences(events_table(rows), loose_params(max_len=3), EVENT_TYPES)
    vocab = build.vocab
    # val target i6, test target i7; train = events before i6, last max_len + 1 kept.
    assert items_of(build.tables["train"], vocab, "items") == [["i2", "i3", "i4", "i5"]]
    assert items_of(build.tables["val"], vocab, "history_items") == [["i3", "i4", "i5"]]
    assert items_of(build.tables["test"], vocab, "history_items") == [["i4", "i5", "i6"]]
    assert build.stats["length_max"] == len(rows)


def test_view_only_data_falls_back_to_every_event_as_target():
    rows = [("u", f"i{k}", "view", k * DAY_S) for k in range(4)]
    build = build_sequences(events_table(rows), loose_params(), EVENT_TYPES)
    # Only the types the data has: a cart or purchase query would score untrained.
    assert build.meta["target_event_types"] == ["view"]
    assert items_of(build.tables["test"], build.vocab, "target_item") == ["i3"]


def test_unknown_target_type_is_a_params_error():
    rows = [("u", "a", "view", 0)]
    with pytest.raises(ParamsError, match="target_event_types"):
        build_sequences(
            events_table(rows), loose_params(target_event_types=["basket"]), EVENT_TYPES
        )


def test_unknown_event_type_is_a_one_line_input_error_naming_the_row():
    rows = [("u", "a", "view", 0), ("u", "b", "click", 1)]
    with pytest.raises(InputError, match=r"row 1: event_type 'click'") as info:
        build_sequences(events_table(rows), loose_params(), EVENT_TYPES)
    assert "\n" not in str(info.value)


def test_dedup_drops_only_views_repeating_the_previous_item_of_the_same_user():
    rows = [
        ("u1", "a", "view", 1),
        ("u1", "a", "view", 2),  # dropped: repeats the previous view
        ("u1", "a", "cart", 3),  # kept: not a view
        ("u1", "a", "view", 4),  # dropped: previous event (the cart) has the same item
        ("u1", "b", "view", 5),
        ("u1", "a", "purchase", 6),
        ("u2", "a", "view", 7),  # kept: first event of another user
    ]
    kept = build_sequences(
        events_table(rows), loose_params(dedup_consecutive_views=True), EVENT_TYPES
    )
    assert kept.stats["dropped_dedup"] == 2
    assert kept.stats["events"] == len(rows) - 2
    assert kept.stats["rows_in"] == kept.stats["events"] + 2 + kept.stats["dropped_kcore"]
    assert row_of(kept.tables["train"], "u1")["types"] == [VIEW]  # before the val cart
    assert row_of(kept.tables["test"], "u1")["history_types"] == [VIEW, CART, VIEW]
    off = build_sequences(events_table(rows), loose_params(), EVENT_TYPES)
    assert off.stats["dropped_dedup"] == 0 and off.stats["events"] == len(rows)


def test_sessions_split_on_inactivity_gap_or_session_id():
    minute = 60
    rows = [
        ("u0", "a", "view", 0),  # one session that ends where u1's first session starts
        ("u1", "a", "view", 0),
        ("u1", "b", "view", 10 * minute),
        ("u1", "c", "view", 50 * minute),  # 40 min gap > 30: new session
        ("u1", "d", "view", 55 * minute),
        ("u2", "a", "view", 0, "s1"),
        ("u2", "b", "view", 200 * minute, "s1"),  # same session id despite the gap
        ("u2", "c", "view", 201 * minute, "s2"),  # new id, no gap: new session
    ]
    params = loose_params(target_event_types=["purchase"], session_gap_minutes=30)
    build = build_sequences(events_table(rows), params, EVENT_TYPES)
    # View-only data: every event is a target, so train holds the first len-2 events.
    test = build.tables["test"]
    assert row_of(test, "u1")["history_sessions"] == [0, 0, 1]
    assert row_of(test, "u2")["history_sessions"] == [0, 0]
    assert row_of(build.tables["val"], "u1")["history_sessions"] == [0, 0]
    assert build.stats["sessions"] == 1 + 2 + 2


def test_k_core_iterates_until_every_user_and_item_meets_the_minimum():
    # min 2 per user and item. Item z has one event -> dropped; then u3 has one event
    # left -> dropped; then item y has one event left -> dropped; u2 then keeps x twice.
    rows = [
        ("u1", "x", "view", 1),
        ("u1", "x", "view", 2),
        ("u2", "x", "view", 1),
        ("u2", "y", "view", 2),
        ("u2", "x", "view", 3),
        ("u3", "y", "view", 1),
        ("u3", "z", "view", 2),
    ]
    params = loose_params(min_user_events=2, min_item_events=2)
    build = build_sequences(events_table(rows), params, EVENT_TYPES)
    assert build.stats["kcore_rounds"] >= 3
    assert (build.stats["users"], build.stats["items"], build.stats["events"]) == (2, 1, 4)
    assert build.vocab["item_id"].to_pylist() == ["x"]
    assert build.stats["dropped_kcore"] == 3


def test_k_core_matches_a_naive_reference_on_random_data():
    import pandas as pd

    from pipeline.sequences import prep

    rng = np.random.default_rng(0)
    n = 3000
    frame = pd.DataFrame(
        {
            "user_id": [f"u{k}" for k in rng.integers(300, size=n)],
            "item_id": [f"i{int(k) % 400}" for k in rng.zipf(1.5, size=n)],
        }
    )
    expected = frame
    while True:  # the textbook loop, one filter at a time
        users = expected["user_id"].map(expected["user_id"].value_counts())
        items = expected["item_id"].map(expected["item_id"].value_counts())
        keep = (users >= 5) & (items >= 5)
        if keep.all():
            break
        expected = expected[keep]
    rows = [(u, i, "view", k) for k, (u, i) in enumerate(frame.itertuples(index=False))]
    events, _ = prep.encode_events(events_table(rows), EVENT_TYPES)
    kept, rounds = prep.k_core(events, 5, 5)
    kept_pairs = sorted(
        zip(
            kept.user_ids.take(kept.user).to_pylist(),
            kept.item_ids.take(kept.item).to_pylist(),
            strict=True,
        )
    )
    assert rounds > 1 and 0 < len(kept) < n
    assert kept_pairs == sorted(zip(expected["user_id"], expected["item_id"], strict=True))


def test_everything_filtered_out_is_a_batch_error():
    from pipeline.errors import BatchValidationError

    rows = [("u", "a", "view", 0)]
    with pytest.raises(BatchValidationError, match="no events left after k-core"):
        build_sequences(events_table(rows), SequencesParams(), EVENT_TYPES)


def test_amazon_toys_leave_one_out_counts(shared_data):
    """The SASRec protocol on Toys: the published 19,412 users / 11,924 items / 167,597."""
    ingest = pytest.importorskip("pipeline.ingest.stage", reason="ingest (feat/ingest) not merged")
    from pipeline.params import DataParams, SyntheticParams

    path = shared_data / "amazon" / "Toys_and_Games.txt"
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    result = ingest.ingest(DataParams(source="sasrec", path=str(path)), SyntheticParams())
    longest = 10_000  # no truncation, so train holds every event but the last two per user
    build = build_sequences(result.events, loose_params(max_len=longest), EVENT_TYPES)
    stats = build.stats
    assert (stats["users"], stats["items"], stats["events"]) == (19_412, 11_924, 167_597)
    assert stats["val_examples"] == stats["test_examples"] == 19_412
    assert stats["train_events"] == 167_597 - 2 * 19_412

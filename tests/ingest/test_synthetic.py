"""The synthetic shop: contract, determinism, realism and a sequential signal worth learning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.ingest.synthetic import generate_events
from pipeline.ingest.synthetic_catalog import CONSUMABLE_NAMES
from pipeline.params import ParamsError, SyntheticParams, parse_params

EVENT_TYPES = ["view", "cart", "purchase"]
TINY = {"n_users": 300, "n_items": 200, "n_categories": 8, "n_brands": 10, "days": 30}
SESSION_GAP = pd.Timedelta(minutes=30)


def tiny(**overrides) -> SyntheticParams:
    return SyntheticParams(**{**TINY, **overrides})


@pytest.fixture(scope="module")
def shop() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_events(tiny(), EVENT_TYPES)


def next_item_hit_rates(events: pd.DataFrame, k: int = 10) -> tuple[float, float]:
    """HR@k on each user's last event: (first-order transitions, popularity).

    Both are fitted on every event except each user's last one. The transition model ranks
    the most frequent successors of the user's second-to-last item (no popularity fill-in).
    """
    user = events["user_id"].to_numpy()
    item = events["item_id"].astype("category").cat.codes.to_numpy().astype(np.int64)
    n_items = int(item.max()) + 1
    is_last = np.r_[user[1:] != user[:-1], True]
    pair_ok = (user[1:] == user[:-1]) & ~is_last[1:]  # pairs that do not end at a test event
    pairs, counts = np.unique(item[:-1][pair_ok] * n_items + item[1:][pair_ok], return_counts=True)
    source = pairs // n_items
    by_source = np.lexsort((-counts, source))
    rank = np.arange(pairs.shape[0]) - np.searchsorted(source[by_source], source[by_source])
    top_pairs = pairs[by_source][rank < k]

    target_at = np.flatnonzero(is_last & np.r_[False, user[1:] == user[:-1]])
    query, target = item[target_at - 1], item[target_at]
    transition_hr = np.isin(query * n_items + target, top_pairs).mean()
    popular = np.argsort(-np.bincount(item[~is_last], minlength=n_items), kind="stable")[:k]
    return float(transition_hr), float(np.isin(target, popular).mean())


def test_same_seed_same_tables_other_seed_differs():
    events, catalog = generate_events(tiny(), EVENT_TYPES)
    again, catalog_again = generate_events(tiny(), EVENT_TYPES)
    pd.testing.assert_frame_equal(events, again)
    pd.testing.assert_frame_equal(catalog, catalog_again)
    other, _ = generate_events(tiny(seed=8), EVENT_TYPES)
    assert not events.equals(other)


def test_schema_and_order_follow_the_contract(shop):
    events, catalog = shop
    assert list(events.columns[:7]) == [
        "user_id", "item_id", "event_type", "timestamp", "session_id", "source_file",
        "source_row",
    ]  # fmt: skip
    for column in ("user_id", "item_id", "event_type", "session_id", "source_file", "category"):
        assert pd.api.types.is_string_dtype(events[column]), column
    assert events["timestamp"].dtype == "datetime64[ns, UTC]"
    assert events["source_row"].dtype == "int64"
    assert events["price"].dtype == "float64"
    assert (events["source_row"].to_numpy() == np.arange(len(events))).all()
    assert set(events["source_file"]) == {"synthetic"}
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert not events.drop(columns="session_id").isna().any().any()

    funnel = events["event_type"].map({name: i for i, name in enumerate(EVENT_TYPES)})
    key = pd.DataFrame({"u": events["user_id"], "t": events["timestamp"], "f": funnel})
    assert key.equals(key.sort_values(["u", "t", "f"], kind="stable"))

    assert list(catalog.columns) == ["item_id", "title", "category", "brand", "price"]
    assert len(catalog) == TINY["n_items"] and catalog["item_id"].is_unique
    assert catalog["title"].str.match(r"^\w+ [\w ]+ #\d+$").all()
    assert (catalog["price"] > 0).all() and catalog["category"].nunique() == TINY["n_categories"]
    merged = events.merge(catalog, on="item_id", suffixes=("", "_catalog"), validate="m:1")
    assert (merged["price"] == merged["price_catalog"]).all()
    assert (merged["category"] == merged["category_catalog"]).all()


def test_event_type_names_come_from_params():
    events, _ = generate_events(tiny(n_users=20), ["detail", "addtocart", "transaction", "x"])
    assert set(events["event_type"]) <= {"detail", "addtocart", "transaction"}
    with pytest.raises(ParamsError, match="event_types"):
        generate_events(tiny(), ["view", "purchase"])


def test_params_reject_impossible_catalogue_and_bad_date():
    with pytest.raises(ParamsError, match="n_categories"):
        parse_params({"synthetic": {"n_items": 5, "n_categories": 6}})
    with pytest.raises(ParamsError, match="end_date"):
        parse_params({"synthetic": {"end_date": "1 Nov 2026"}})


def test_funnel_rates_are_realistic_and_users_have_targets(shop):
    events, _ = shop
    counts = events["event_type"].value_counts()
    assert 0.02 <= counts["cart"] / counts["view"] <= 0.15
    assert 0.3 <= counts["purchase"] / counts["cart"] <= 0.5
    targets = events[events["event_type"] != "view"].groupby("user_id").size()
    assert (targets.reindex(events["user_id"].unique(), fill_value=0) >= 3).mean() > 0.6


def test_carts_follow_views_and_purchases_follow_carts_in_the_session(shop):
    events, _ = shop
    first_seen = events.groupby(["session_id", "item_id", "event_type"])["timestamp"].min()
    first_seen = first_seen.unstack("event_type")
    carted = first_seen["cart"].notna()
    assert (first_seen.loc[carted, "view"] < first_seen.loc[carted, "cart"]).all()
    bought = first_seen["purchase"].notna()
    assert (first_seen.loc[bought, "cart"] < first_seen.loc[bought, "purchase"]).all()


def test_sessions_gaps_daily_rhythm_and_period(shop):
    events, _ = shop
    gap = events["timestamp"].diff()
    same_user = events["user_id"].eq(events["user_id"].shift())
    same_session = events["session_id"].eq(events["session_id"].shift())
    assert (gap[same_session] < SESSION_GAP).all() and (gap[same_session] > pd.Timedelta(0)).all()
    assert (gap[same_user & ~same_session] > SESSION_GAP).all()
    assert events.groupby("session_id")["user_id"].nunique().eq(1).all()

    hours = events["timestamp"].dt.hour.value_counts()
    evening, night = hours.reindex(range(18, 23)).sum(), hours.reindex(range(1, 6)).sum()
    assert evening > 4 * night

    end = pd.Timestamp("2026-11-02", tz="UTC")
    assert events["timestamp"].max() < end
    assert events["timestamp"].min() >= end - pd.Timedelta(days=TINY["days"])


def test_consumables_are_bought_again():
    # Taste off: a loyal shopper's favourite items are re-bought in any category, which
    # would blur the consumable/durable contrast this test is about.
    events, _ = generate_events(tiny(brand_affinity=0.0, price_affinity=0.0,
                                     consideration_set=1), EVENT_TYPES)
    purchases = events[events["event_type"] == "purchase"]
    again = purchases.duplicated(["user_id", "item_id"])
    consumable = purchases["category"].str.rstrip(" 0123456789").isin(CONSUMABLE_NAMES)
    assert again[consumable].mean() > 0.15
    assert again[consumable].mean() > 3 * again[~consumable].mean()


def test_a_cart_is_followed_by_its_complement():
    def successors_per_carted_item(complement_prob: float) -> float:
        events, _ = generate_events(tiny(complement_prob=complement_prob), EVENT_TYPES)
        following = events.shift(-1)
        after_cart = (
            (events["event_type"] == "cart")
            & (following["event_type"] == "view")
            & (following["session_id"] == events["session_id"])
        )
        pairs = pd.DataFrame({"cart": events["item_id"], "next": following["item_id"]})
        return pairs[after_cart].groupby("cart")["next"].nunique().mean()

    assert successors_per_carted_item(1.0) == 1.0  # always the one complement item
    assert successors_per_carted_item(0.0) > 1.2


def test_interest_drift_moves_users_between_categories():
    def changed_share(drift: float) -> float:
        events, _ = generate_events(tiny(interest_drift=drift, category_focus=1.0), EVENT_TYPES)
        half = events.groupby("user_id")["timestamp"].transform(lambda t: t > t.median())
        top = events.groupby(["user_id", half])["category"].agg(lambda c: c.mode().iloc[0])
        top = top.unstack()
        return float((top[False] != top[True]).mean())

    assert changed_share(0.5) > changed_share(0.0) + 0.15


def test_first_order_transitions_beat_popularity(shop):
    events, _ = shop
    transition_hr, popularity_hr = next_item_hit_rates(events)
    assert transition_hr >= 1.5 * popularity_hr
    assert transition_hr > 0.3


def test_similar_browsing_is_structure_popularity_misses():
    def transition_lift(similar_prob: float) -> float:
        params = tiny(n_users=600, similar_prob=similar_prob)
        transition_hr, popularity_hr = next_item_hit_rates(generate_events(params, EVENT_TYPES)[0])
        return transition_hr - popularity_hr

    assert transition_lift(0.5) > transition_lift(0.0) + 0.08


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_users": 1, "n_items": 1, "n_categories": 1, "n_brands": 1, "days": 1},
        {"cart_rate": 0.0},
        {"cart_rate": 1.0, "purchase_rate": 1.0, "complement_prob": 1.0, "repeat_prob": 1.0},
        {"sessions_per_user_mean": 1.0, "views_per_session_mean": 1.0},
        {"n_items": 30, "n_categories": 30, "n_similar": 50},
        {"days": 1, "sessions_per_user_mean": 30.0},
    ],
)
def test_extreme_params_keep_the_invariants(overrides):
    events, catalog = generate_events(tiny(**{"n_users": 50, **overrides}), EVENT_TYPES)
    end = pd.Timestamp("2026-11-02", tz="UTC")
    days = overrides.get("days", TINY["days"])
    assert events["timestamp"].between(end - pd.Timedelta(days=days), end, inclusive="left").all()
    gap = events["timestamp"].diff()
    same_session = events["session_id"].eq(events["session_id"].shift())
    same_user = events["user_id"].eq(events["user_id"].shift())
    assert (gap[same_session] < SESSION_GAP).all()
    assert (gap[same_user & ~same_session] > SESSION_GAP).all()
    assert events["item_id"].isin(catalog["item_id"]).all()
    if overrides.get("cart_rate") == 0.0:
        assert set(events["event_type"]) == {"view"}


def _same_brand_lift(events: pd.DataFrame, catalog: pd.DataFrame, event_type: str) -> float:
    """P(two of a user's `event_type` events share a brand) / P(for two random ones)."""
    brand = events["item_id"].map(catalog.set_index("item_id")["brand"])
    chosen = events.assign(brand=brand)[events["event_type"] == event_type]
    per_user = chosen.groupby(["user_id", "brand"]).size()
    totals = per_user.groupby(level=0).sum()
    same_user = (per_user * (per_user - 1)).sum() / (totals * (totals - 1)).sum()
    overall = chosen["brand"].value_counts(normalize=True)
    return float(same_user / (overall**2).sum())


def test_carts_and_purchases_follow_the_shoppers_brand_taste():
    params = {"n_users": 600, "days": 30}
    with_taste = generate_events(SyntheticParams(**params), EVENT_TYPES)
    without = generate_events(SyntheticParams(**params, brand_affinity=0.0, price_affinity=0.0,
                                              consideration_set=1), EVENT_TYPES)
    for event_type in ("cart", "purchase"):
        lift = _same_brand_lift(*with_taste, event_type)
        assert lift > 2.0, event_type  # a shopper's carts share a favourite brand
        assert lift > 1.2 * _same_brand_lift(*without, event_type), event_type
    # the funnel keeps its rates: taste decides which views are carted, not how many
    counts = with_taste[0]["event_type"].value_counts()
    assert 0.06 < counts["cart"] / counts["view"] < 0.11
    assert 0.3 < counts["purchase"] / counts["cart"] < 0.5

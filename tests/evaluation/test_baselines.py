import numpy as np
import pytest

from pipeline.evaluation.baselines import (
    RECENT_BUCKET_S,
    SECONDS_PER_DAY,
    EventLog,
    Popularity,
    RecentPopularity,
    RepeatLast,
    Transitions,
    build_baselines,
    known_events,
    popularity_prior,
)
from pipeline.evaluation.ranking import HistoryBatch, Recommender

V = 8  # items 3..7
VIEW, CART, PURCHASE = 1, 2, 3
DAY = SECONDS_PER_DAY
T0 = 1_700_000_000 // DAY * DAY  # midnight, so hour buckets line up with the events below


def log(users, items, types=None, ts=None):
    n = len(items)
    return EventLog(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.asarray(types if types is not None else [VIEW] * n, dtype=np.int64),
        np.asarray(ts if ts is not None else [T0] * n, dtype=np.int64),
    )


def batch(histories, request_ts=None):
    width = max(len(h) for h in histories)
    items = np.array([[0] * (width - len(h)) + list(h) for h in histories], dtype=np.int64)
    request = np.asarray(
        request_ts if request_ts is not None else [T0] * len(histories), dtype=np.int64
    )
    return HistoryBatch(items, (items > 0).astype(np.int64), np.zeros_like(items), request)


def order(row):
    """Catalogue items (>= 3) best first."""
    return (3 + np.argsort(-row[3:], kind="stable")).tolist()


def test_prior_is_below_one_and_ordered():
    prior = popularity_prior(np.array([3, 3, 3, 4, 5, 5]), V)
    assert prior.max() < 1.0
    assert order(prior)[:3] == [3, 5, 4]


def test_popularity_counts_target_types_and_breaks_ties_by_all_events():
    train = log([0] * 7, [3, 3, 3, 4, 5, 6, 6], [VIEW, VIEW, VIEW, CART, PURCHASE, CART, VIEW])
    rec = Popularity(train, V, [CART, PURCHASE], popularity_prior(train.items, V))
    scores = rec.score(batch([[3], [7]]))
    assert scores.shape == (2, V) and scores.dtype == np.float32
    # 6: one cart, and the most events overall; 4 and 5: one target event each and equal
    # all-event counts (stable order keeps 4 first); 3: views only; 7: never seen.
    assert order(scores[0])[:4] == [6, 4, 5, 3]
    assert np.array_equal(scores[0], scores[1])
    assert isinstance(rec, Recommender)


def test_transitions_follow_the_last_item():
    train = log([0, 0, 0, 1, 1, 2, 2], [3, 4, 5, 3, 4, 5, 6])
    rec = Transitions(train, V, popularity_prior(train.items, V))
    scores = rec.score(batch([[5, 3], [6, 5], [7], []]))
    assert order(scores[0])[0] == 4  # 3 -> 4 twice
    assert order(scores[1])[0] == 6  # 5 -> 6 (user 2); 5 -> 3 crosses users and is not counted
    assert scores[1][3] < 1.0
    # unseen last item / empty history: only the popularity prior remains
    prior_order = order(popularity_prior(train.items, V))
    assert order(scores[2]) == prior_order and order(scores[3]) == prior_order


def test_repeat_last_ranks_the_history_most_recent_first():
    rec = RepeatLast(popularity_prior(np.array([7, 7, 7, 6]), V))
    scores = rec.score(batch([[3, 4, 3, 5], [4]]))
    assert order(scores[0])[:4] == [5, 3, 4, 7]  # 3 seen twice keeps its latest position
    assert order(scores[1])[:3] == [4, 7, 6]


def test_recent_popularity_uses_only_the_window_before_the_request_hour():
    hour = RECENT_BUCKET_S
    events = log(
        [0] * 7,
        [3, 3, 3, 4, 4, 5, 6],
        ts=[
            T0 - 10 * DAY,
            T0 - 10 * DAY,
            T0 - 10 * DAY,  # item 3: old news
            T0 - DAY,
            T0 - 2 * DAY,  # item 4: inside a 7-day window
            T0 - hour,  # item 5: an hour before
            T0 + 10,
        ],  # item 6: in the request's own hour -> must not count
    )
    prior = popularity_prior(events.items, V)
    rec = RecentPopularity(events, V, window_days=7, prior=prior)
    scores = rec.score(batch([[3], [3]], request_ts=[T0 + 30 * 60, T0 + 2 * hour]))
    assert order(scores[0])[:3] == [4, 5, 3]  # 3 leads all-time, only ties are broken by it
    assert scores[0][6] < 1.0  # the event inside the request's hour is not visible yet
    assert scores[1][6] >= 1.0  # but it is an hour later
    # sliding back in time recomputes rather than reusing forward state
    again = rec.score(batch([[3]], request_ts=[T0 + 30 * 60]))
    np.testing.assert_array_equal(again[0], scores[0])


def test_recent_popularity_slides_like_a_recount():
    rng = np.random.default_rng(0)
    n = 400
    events = log(np.zeros(n), rng.integers(3, V, n), ts=np.sort(T0 + rng.integers(0, 20 * DAY, n)))
    prior = popularity_prior(events.items, V)
    requests = np.sort(T0 + rng.integers(0, 25 * DAY, 50))
    sliding = RecentPopularity(events, V, 3, prior).score(batch([[3]] * 50, requests))
    for i, request in enumerate(requests):
        fresh = RecentPopularity(events, V, 3, prior).score(batch([[3]], [request]))
        np.testing.assert_array_equal(sliding[i], fresh[0])


def test_known_events_drops_overlapping_copies():
    train = log([0, 0], [3, 4], ts=[T0, T0 + 1])
    later = log([0, 0, 0, 1], [3, 4, 5, 3], ts=[T0, T0 + 1, T0 + 2, T0])  # row 0 = same user
    merged = known_events([train, later], [np.array(["a"]), np.array(["a", "b"])])
    assert len(merged.items) == 4
    assert sorted(merged.items.tolist()) == [3, 3, 4, 5]


def test_build_baselines_all_score_the_same_shape():
    train = log([0, 0, 1], [3, 4, 5], [VIEW, CART, PURCHASE], [T0 - 3, T0 - 2, T0 - 1])
    recs = build_baselines(train, train, V, [CART, PURCHASE], recent_days=7)
    assert [r.name for r in recs] == [
        "popularity",
        "recent_popularity",
        "transitions",
        "repeat_last",
    ]
    for rec in recs:
        scores = rec.score(batch([[3, 4], [5]], [T0 + DAY, T0 + DAY]))
        assert scores.shape == (2, V) and scores.dtype == np.float32, rec.name
        scores[0, 3] = 99.0  # fresh array the caller may modify
        assert rec.score(batch([[3, 4], [5]], [T0 + DAY, T0 + DAY]))[0, 3] != pytest.approx(99.0)

"""The built-in synthetic shop (`data.source: synthetic`): shoppers browsing, carting, buying.

`generate_events(params, event_types)` returns the canonical events table (docs/interfaces.md)
plus `price` and `category`, and the item catalogue. docs/synthetic.md says what is simulated:
drifting category interests, evening-heavy sessions, similar-item browsing, complements after
a cart, repeat purchases of consumables, and a view -> cart -> purchase funnel.

Vectorised over users: one loop over session ranks (every user's k-th session at once) and,
inside it, one over steps within those sessions; each iteration works on whole arrays.
Same `params.seed`, same tables, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.ingest.synthetic_catalog import Catalog, build_catalog, padded_ids
from pipeline.ingest.synthetic_clock import (
    CART_DWELL_S,
    CHECKOUT_DWELL_S,
    MIN_SESSION_GAP_S,
    MS_PER_S,
    VIEW_DWELL_S,
    draw_counts,
    draw_dwell_ms,
    planned_starts,
    queue_after,
    window_ms,
)
from pipeline.ingest.synthetic_taste import draw_taste
from pipeline.params import ParamsError, SyntheticParams

SOURCE_FILE = "synthetic"
VIEW, CART, PURCHASE = 0, 1, 2  # positions in data.event_types (funnel order)
# Gamma shapes of the per-user session count and per-session view count (heterogeneity).
USER_ACTIVITY_SHAPE = 3.0
SESSION_LENGTH_SHAPE = 2.0
# At most this many sessions per user and day: sessions at least an hour apart must fit in
# the period, which otherwise has to start earlier for the busiest users.
MAX_SESSIONS_PER_DAY = 8


@dataclass
class _EventLog:
    """Event columns gathered from the simulation steps, concatenated once at the end."""

    session: list[np.ndarray] = field(default_factory=list)  # global session index
    item: list[np.ndarray] = field(default_factory=list)
    event_type: list[np.ndarray] = field(default_factory=list)
    time_ms: list[np.ndarray] = field(default_factory=list)

    def add(self, session, item, event_type: int, time_ms) -> None:
        self.session.append(session)
        self.item.append(item)
        self.event_type.append(np.full(session.shape[0], event_type, dtype=np.int8))
        self.time_ms.append(time_ms)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return tuple(
            np.concatenate(column)
            for column in (self.session, self.item, self.event_type, self.time_ms)
        )


class _Shop:
    """Simulation state: per-user memory (indexed by user index) and the event log."""

    def __init__(self, params: SyntheticParams, catalog: Catalog, rng: np.random.Generator):
        self.params, self.catalog, self.rng = params, catalog, rng
        n = params.n_users
        self.favourite = catalog.draw_categories(rng, n)
        self.taste = draw_taste(params, catalog, rng)
        self.last_cart = np.full(n, -1, dtype=np.int64)  # last item carted in the last session
        self.last_consumable = np.full(n, -1, dtype=np.int64)  # last consumable bought
        # When the user's last session ended (its last event + a dwell).
        self.last_end_ms = np.full(n, np.iinfo(np.int64).min // 2, dtype=np.int64)
        self.log = _EventLog()

    def popular_views(self, users: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """A click on a listing: the best by taste of `consideration_set` popular items."""
        k = self.taste.consideration_set
        if k == 1:
            return self.catalog.draw_items(self.rng, categories)
        candidates = self.catalog.draw_items(self.rng, np.repeat(categories, k))
        return self.taste.pick(self.rng, users, candidates.reshape(-1, k))

    def first_views(self, users: np.ndarray, categories: np.ndarray):
        """Session openers: a consumable re-bought, a complement, or a popular item."""
        p, rng = self.params, self.rng
        items = self.popular_views(users, categories)
        consumable, carted = self.last_consumable[users], self.last_cart[users]
        repeat = (consumable >= 0) & (rng.random(users.shape[0]) < p.repeat_prob)
        complement = ~repeat & (carted >= 0) & (rng.random(users.shape[0]) < p.complement_prob)
        items[complement] = self.catalog.complement[carted[complement]]
        items[repeat] = consumable[repeat]
        return items, repeat

    def next_views(self, users, previous: np.ndarray, previous_carted: np.ndarray, categories):
        """Later views: complement of a just-carted item, a similar item, or a popular one."""
        p, rng, catalog = self.params, self.rng, self.catalog
        n = previous.shape[0]
        items = self.popular_views(users, categories)
        complement = previous_carted & (rng.random(n) < p.complement_prob)
        similar = ~complement & (rng.random(n) < p.similar_prob)
        pick = rng.integers(0, catalog.similar.shape[1], int(similar.sum()))
        items[similar] = catalog.similar[previous[similar], pick]
        items[complement] = catalog.complement[previous[complement]]
        return items

    def simulate_rank(self, users: np.ndarray, sessions: np.ndarray, planned_ms, n_views):
        """Every listed user's next session at once (`sessions`: their global indices)."""
        p, rng, catalog = self.params, self.rng, self.catalog
        drift = rng.random(users.shape[0]) < p.interest_drift
        self.favourite[users[drift]] = catalog.draw_categories(rng, int(drift.sum()))
        focused = rng.random(users.shape[0]) < p.category_focus
        categories = np.where(
            focused, self.favourite[users], catalog.draw_categories(rng, users.shape[0])
        )
        start_ms = np.maximum(planned_ms, self.last_end_ms[users] + MIN_SESSION_GAP_S * MS_PER_S)

        # Longest sessions first, so the sessions still browsing at step t are a prefix.
        order = np.argsort(-n_views, kind="stable")
        users, sessions, categories = users[order], sessions[order], categories[order]
        n_views, clock_ms = n_views[order], start_ms[order]
        active_at = np.searchsorted(-n_views, -np.arange(n_views[0]), side="left")
        previous = np.zeros(users.shape[0], dtype=np.int64)
        previous_carted = np.zeros(users.shape[0], dtype=bool)
        cart_parts = []  # (session position, item, deferred, time) per carted view
        for step, active in enumerate(active_at):
            if step == 0:
                items, forced = self.first_views(users, categories)
            else:
                items = self.next_views(
                    users[:active], previous[:active], previous_carted[:active],
                    categories[:active],
                )
                forced = np.zeros(active, dtype=bool)
            view_ms = clock_ms[:active].copy()
            self.log.add(sessions[:active], items, VIEW, view_ms)
            carted = forced | self.taste.choose(
                rng, users[:active], items, p.cart_rate, per_user=True
            )
            deferred = carted & ~forced & (rng.random(active) < p.cart_later_share)
            right_away = carted & ~deferred
            cart_ms = view_ms + draw_dwell_ms(rng, active, CART_DWELL_S)
            clock_ms[:active] = np.where(right_away, cart_ms, view_ms)
            clock_ms[:active] += draw_dwell_ms(rng, active, VIEW_DWELL_S)
            position = np.flatnonzero(carted)
            cart_parts.append((position, items[position], deferred[position], cart_ms[position]))
            previous[:active], previous_carted[:active] = items, right_away
        self._checkout(
            users, sessions, clock_ms, *map(np.concatenate, zip(*cart_parts, strict=True))
        )

    def _checkout(self, users, sessions, clock_ms, position, item, deferred, cart_ms):
        """Carts made after comparing, then purchases of the bought carts, in cart order.

        `clock_ms` is when each session's next event may happen (last event + a dwell).
        """
        p, rng = self.params, self.rng
        later = np.flatnonzero(deferred)
        later = later[np.argsort(position[later], kind="stable")]  # view order per session
        cart_ms[later] = queue_after(clock_ms, position[later], rng, VIEW_DWELL_S)
        self.log.add(sessions[position], item, CART, cart_ms)

        in_order = np.lexsort((cart_ms, position))
        position, item, cart_ms = position[in_order], item[in_order], cart_ms[in_order]
        last_of_session = np.r_[position[1:] != position[:-1], True][: position.shape[0]]
        self.last_cart[users] = -1
        self.last_cart[users[position[last_of_session]]] = item[last_of_session]

        bought = np.flatnonzero(
            self.taste.choose(rng, users[position], item, p.purchase_rate, per_user=False)
        )
        purchase_ms = queue_after(clock_ms, position[bought], rng, CHECKOUT_DWELL_S)
        self.log.add(sessions[position[bought]], item[bought], PURCHASE, purchase_ms)
        self.last_end_ms[users] = clock_ms
        consumable = bought[self.catalog.consumable[self.catalog.category[item[bought]]]]
        last = np.r_[position[consumable][1:] != position[consumable][:-1], True]
        last_bought = consumable[last[: consumable.shape[0]]]  # the session's last consumable
        self.last_consumable[users[position[last_bought]]] = item[last_bought]


def _events_frame(catalog, user_ids, session_ids, user_of_session, log_arrays, event_types):
    session, item, event_type, time_ms = log_arrays
    order = np.lexsort((event_type, time_ms, session))  # session ids ascend with user and time
    session, item, event_type = session[order], item[order], event_type[order]
    timestamp = pd.to_datetime(time_ms[order], unit="ms", utc=True).as_unit("ns")
    table = pa.table(
        {
            "user_id": user_ids.take(user_of_session[session]),
            "item_id": catalog.item_ids.take(item),
            "event_type": pa.array(event_types[:3]).take(event_type),
            "timestamp": pa.array(timestamp),
            "session_id": session_ids.take(session),
            "source_file": pa.repeat(pa.scalar(SOURCE_FILE), session.shape[0]),
            "source_row": np.arange(session.shape[0], dtype=np.int64),
            "price": catalog.price[item],
            "category": catalog.category_names.take(catalog.category[item]),
        }
    )
    return table.to_pandas()


def generate_events(
    params: SyntheticParams, event_types: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate the shop: (events in canonical columns + price, category; item catalogue).

    Args:
        params: the `synthetic` params section.
        event_types: `data.event_types`; the first three are used as view, cart, purchase.

    Returns:
        events sorted by user, time and funnel order (`source_row` = 0..n-1 in that order),
        and the catalogue (item_id, title, category, brand, price).

    Raises:
        ParamsError: fewer than three event types.
    """
    if len(event_types) < 3:
        raise ParamsError(
            f"data.event_types {event_types}: the synthetic shop needs three (view, cart, "
            "purchase in funnel order)"
        )
    rng = np.random.default_rng(params.seed)
    window_start_ms, window_end_ms = window_ms(params)
    catalog = build_catalog(params, rng)
    sessions_per_user = draw_counts(
        rng, params.sessions_per_user_mean, USER_ACTIVITY_SHAPE, params.n_users
    )
    sessions_per_user = np.minimum(sessions_per_user, MAX_SESSIONS_PER_DAY * params.days)
    user_of_session = np.repeat(np.arange(params.n_users), sessions_per_user)
    first_session = np.r_[0, np.cumsum(sessions_per_user)[:-1]]
    planned_ms = planned_starts(params, rng, user_of_session, window_start_ms)
    n_views = draw_counts(
        rng, params.views_per_session_mean, SESSION_LENGTH_SHAPE, user_of_session.shape[0]
    )

    shop = _Shop(params, catalog, rng)
    by_activity = np.argsort(-sessions_per_user, kind="stable")
    users_left = np.searchsorted(
        -sessions_per_user[by_activity], -np.arange(sessions_per_user.max()), side="left"
    )
    for rank, n_active in enumerate(users_left):
        users = by_activity[:n_active]
        sessions = first_session[users] + rank
        shop.simulate_rank(users, sessions, planned_ms[sessions], n_views[sessions])

    session, item, event_type, time_ms = shop.log.arrays()
    # A user whose last session ran past the end of the period is shifted back as a whole,
    # keeping gaps and order: the period's end is a hard bound.
    overflow_ms = np.maximum(shop.last_end_ms - (window_end_ms - 1), 0)
    time_ms -= overflow_ms[user_of_session[session]]

    user_ids = padded_ids("u", params.n_users)
    session_ids = padded_ids("s", user_of_session.shape[0])
    events = _events_frame(
        catalog,
        user_ids,
        session_ids,
        user_of_session,
        (session, item, event_type, time_ms),
        event_types,
    )
    return events, catalog.frame()

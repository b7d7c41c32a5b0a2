"""When things happen in the synthetic shop: the simulated period, session start times with a
daily rhythm, dwell times between events, and group-wise array helpers for the vectorised
simulation (`pipeline.ingest.synthetic`).
"""

from __future__ import annotations

from datetime import date

import numpy as np

from pipeline.params import SyntheticParams

MS_PER_S, S_PER_HOUR, S_PER_DAY = 1000, 3600, 86_400
# Shopping activity by hour of day (UTC): quiet nights, a lunch bump, an evening peak.
HOURLY_ACTIVITY = np.array(
    [2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 5, 5, 6, 7, 9, 11, 12, 11, 8, 4], dtype=float
)
# Sessions are at least this far apart, safely above the usual 30-minute inactivity cut.
MIN_SESSION_GAP_S = 3600
# Seconds between events in a session (median, log-sigma), clipped well under 30 minutes.
VIEW_DWELL_S, CART_DWELL_S, CHECKOUT_DWELL_S = (40.0, 0.9), (15.0, 0.6), (60.0, 0.5)
MIN_DWELL_S, MAX_DWELL_S = 2.0, 20 * 60.0


def draw_dwell_ms(
    rng: np.random.Generator, n: int, median_sigma: tuple[float, float]
) -> np.ndarray:
    median_s, sigma = median_sigma
    dwell_s = np.clip(rng.lognormal(np.log(median_s), sigma, n), MIN_DWELL_S, MAX_DWELL_S)
    return (dwell_s * MS_PER_S).astype(np.int64)


def draw_counts(rng: np.random.Generator, mean: float, shape: float, n: int) -> np.ndarray:
    """`1 + Poisson(Gamma)` counts with the given mean: overdispersed like real activity."""
    rate = rng.gamma(shape, (mean - 1.0) / shape, n) if mean > 1 else np.zeros(n)
    return 1 + rng.poisson(rate)


def group_rank(sorted_groups: np.ndarray) -> np.ndarray:
    """0, 1, 2... within runs of equal values of an array sorted by group."""
    n = sorted_groups.shape[0]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]][:n])
    first = np.zeros(n, dtype=np.int64)
    first[starts] = starts
    return np.arange(n) - np.maximum.accumulate(first)


def group_cumsum(sorted_groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Cumulative sum of `values` restarting at each group of a group-sorted array."""
    total = np.cumsum(values)
    rank = group_rank(sorted_groups)
    return total - (total - values)[np.arange(rank.shape[0]) - rank]


def window_ms(params: SyntheticParams) -> tuple[int, int]:
    """[start, end) of the simulated period in unix ms: `days` whole days up to `end_date`."""
    last_day = date.fromisoformat(params.end_date)  # format checked by SyntheticParams
    end_s = int(np.datetime64(last_day, "s").astype(np.int64)) + S_PER_DAY
    return (end_s - params.days * S_PER_DAY) * MS_PER_S, end_s * MS_PER_S


def planned_starts(params, rng, user_of_session, window_start_ms) -> np.ndarray:
    """Session start times with a daily rhythm, sorted within each user (ms)."""
    n = user_of_session.shape[0]
    day = rng.integers(0, params.days, n)
    hour = rng.choice(HOURLY_ACTIVITY.shape[0], size=n, p=HOURLY_ACTIVITY / HOURLY_ACTIVITY.sum())
    seconds = day * S_PER_DAY + hour * S_PER_HOUR + rng.random(n) * S_PER_HOUR
    starts_ms = window_start_ms + (seconds * MS_PER_S).astype(np.int64)
    return starts_ms[np.lexsort((starts_ms, user_of_session))]


def queue_after(clock_ms, sessions, rng, dwell) -> np.ndarray:
    """Times of end-of-session events, one after another per session (`sessions` sorted).

    The first takes `clock_ms` (already a dwell after the last event), each next one a dwell
    later; `clock_ms` moves on past the last one, in place.
    """
    dwell_ms = draw_dwell_ms(rng, sessions.shape[0], dwell)
    after_ms = clock_ms[sessions] + group_cumsum(sessions, dwell_ms)
    np.maximum.at(clock_ms, sessions, after_ms)
    return after_ms - dwell_ms

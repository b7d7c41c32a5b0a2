"""Non-neural baselines, fitted on the train split and ranked by the same code as the model.

Each implements `score(batch) -> np.ndarray (B, vocab_size) float32`
(`pipeline.evaluation.ranking`).
All of them break ties by all-time popularity: their primary scores are whole counts or
positions, and the `prior` added to them lies in [0, 1), so it only orders items that the
primary score leaves tied. Without it, the pessimistic rank would punish them for ties
that any deployed version would break somehow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.evaluation.ranking import HistoryBatch, left_pad

SECONDS_PER_DAY = 86_400
# Recently-popular windows end at the start of the request's hour: hour-granular windows can
# be cached and slid forward, and nothing from the request's own hour can leak in.
RECENT_BUCKET_S = 3_600


@dataclass(frozen=True)
class EventLog:
    """Flat events, grouped by user in chronological order within each user."""

    user: np.ndarray  # (E,) int64 user index (equal values are contiguous)
    items: np.ndarray  # (E,) int64
    types: np.ndarray  # (E,) int64
    ts: np.ndarray  # (E,) int64 unix seconds


def load_train_events(path: Path) -> tuple[EventLog, np.ndarray]:
    """train.parquet -> (its events flattened, the (U,) user ids)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(f"{path}: train sequences not found (run build_sequences first)")
    table = pq.read_table(path)
    missing = [c for c in ("user_id", "items", "types", "ts") if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: missing columns {missing}")

    def flat(name: str) -> np.ndarray:
        values = pc.list_flatten(table.column(name).combine_chunks())
        return values.to_numpy(zero_copy_only=False).astype(np.int64)

    lengths = pc.fill_null(pc.list_value_length(table.column("items").combine_chunks()), 0)
    user = np.repeat(np.arange(table.num_rows), lengths.to_numpy())
    events = EventLog(user, flat("items"), flat("types"), flat("ts"))
    return events, table.column("user_id").to_numpy(zero_copy_only=False)


def history_events(path: Path, max_len: int) -> EventLog:
    """The histories of a val/test file as events; `user` is the file's row number."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    items, lengths = left_pad(table.column("history_items"), max_len)
    types, _ = left_pad(table.column("history_types"), max_len)
    ts, _ = left_pad(table.column("history_ts"), max_len)
    real = items > 0
    rows = np.broadcast_to(np.arange(len(items))[:, None], items.shape)[real]
    return EventLog(rows.astype(np.int64), items[real], types[real], ts[real])


def known_events(logs: list[EventLog], user_keys: list[np.ndarray]) -> EventLog:
    """Union of event logs without double counts: the same (user, time, item, type) once.

    Train sequences and later histories of the same user overlap; `user_keys[i]` maps
    `logs[i].user` to user ids so that overlapping copies deduplicate.
    """
    import pandas as pd

    frame = pd.DataFrame(
        {
            "user": np.concatenate(
                [keys[log.user] for log, keys in zip(logs, user_keys, strict=True)]
            ),
            "items": np.concatenate([log.items for log in logs]),
            "types": np.concatenate([log.types for log in logs]),
            "ts": np.concatenate([log.ts for log in logs]),
        }
    ).drop_duplicates()
    codes = pd.factorize(frame["user"])[0]
    return EventLog(
        codes.astype(np.int64), *(frame[c].to_numpy(np.int64) for c in ("items", "types", "ts"))
    )


def popularity_prior(items: np.ndarray, vocab_size: int) -> np.ndarray:
    """(V,) float64 in [0, 1): all-time event counts scaled below one (the tie-breaker)."""
    counts = np.bincount(items, minlength=vocab_size)[:vocab_size].astype(np.float64)
    return counts / (counts.max(initial=0.0) + 1.0)


class Popularity:
    """Most bought/carted items in train (counts of target-type events)."""

    name = "popularity"

    def __init__(
        self, train: EventLog, vocab_size: int, target_types: list[int], prior: np.ndarray
    ):
        wanted = np.isin(train.types, target_types)
        counts = np.bincount(train.items[wanted], minlength=vocab_size)[:vocab_size]
        self._row = (counts + prior).astype(np.float32)  # (V,)

    def score(self, batch: HistoryBatch) -> np.ndarray:
        return np.tile(self._row, (len(batch), 1))  # (B, V)


class RecentPopularity:
    """Items with the most events in the `window_days` before each request (trending)."""

    name = "recent_popularity"

    def __init__(self, events: EventLog, vocab_size: int, window_days: float, prior: np.ndarray):
        order = np.argsort(events.ts, kind="stable")
        self._items, self._ts = events.items[order], events.ts[order]
        self._window_s = int(window_days * SECONDS_PER_DAY)
        self._vocab_size = vocab_size
        self._prior = prior
        self._lo = self._hi = 0  # current window: events [lo, hi) of the time-sorted log
        self._counts = np.zeros(vocab_size, dtype=np.int64)

    def _counts_until(self, end_ts: int) -> np.ndarray:
        lo = int(np.searchsorted(self._ts, end_ts - self._window_s, side="left"))
        hi = int(np.searchsorted(self._ts, end_ts, side="left"))
        if lo < self._lo or hi < self._hi or lo >= self._hi:
            self._counts = np.bincount(self._items[lo:hi], minlength=self._vocab_size)
        else:  # slide forward: add new events, drop expired ones
            self._counts += np.bincount(self._items[self._hi : hi], minlength=self._vocab_size)
            self._counts -= np.bincount(self._items[self._lo : lo], minlength=self._vocab_size)
        self._lo, self._hi = lo, hi
        return self._counts[: self._vocab_size]

    def score(self, batch: HistoryBatch) -> np.ndarray:
        bucket_starts = batch.request_ts // RECENT_BUCKET_S * RECENT_BUCKET_S
        buckets, inverse = np.unique(bucket_starts, return_inverse=True)
        # One row per distinct hour (few per batch: examples are sorted by time).
        rows = np.stack([self._counts_until(int(end)) + self._prior for end in buckets])
        return rows.astype(np.float32)[inverse]  # (B, V)


class Transitions:
    """First-order Markov chain: how often each item followed the last item in train."""

    name = "transitions"

    def __init__(self, train: EventLog, vocab_size: int, prior: np.ndarray):
        from scipy.sparse import csr_matrix

        same_user = train.user[1:] == train.user[:-1]
        src, dst = train.items[:-1][same_user], train.items[1:][same_user]
        counts = np.ones(len(src), dtype=np.float32)
        # Duplicate (src, dst) pairs are summed: entry = number of observed transitions.
        self._matrix = csr_matrix((counts, (src, dst)), shape=(vocab_size, vocab_size))
        self._prior = prior.astype(np.float32)

    def score(self, batch: HistoryBatch) -> np.ndarray:
        last_items = batch.items[:, -1]  # (B,) left-padded, so the last column is the latest
        return self._matrix[last_items].toarray() + self._prior  # (B, V)


class RepeatLast:
    """Re-recommend the history, most recent first (strong on repeat-heavy logs)."""

    name = "repeat_last"

    def __init__(self, prior: np.ndarray):
        self._prior = prior.astype(np.float32)

    def score(self, batch: HistoryBatch) -> np.ndarray:
        n_rows, width = batch.items.shape
        scores = np.tile(self._prior, (n_rows, 1))  # (B, V)
        recency = np.arange(1, width + 1, dtype=np.float32)  # (T,) later positions >= 1
        rows = np.repeat(np.arange(n_rows), width)
        # maximum: an item seen several times keeps its most recent position.
        np.maximum.at(scores, (rows, batch.items.ravel()), np.tile(recency, n_rows))
        return scores


def build_baselines(
    train: EventLog,
    recent_log: EventLog,
    vocab_size: int,
    target_types: list[int],
    recent_days: float,
) -> list:
    """The baseline recommenders in report order."""
    prior = popularity_prior(train.items, vocab_size)
    return [
        Popularity(train, vocab_size, target_types, prior),
        RecentPopularity(recent_log, vocab_size, recent_days, prior),
        Transitions(train, vocab_size, prior),
        RepeatLast(prior),
    ]

"""What the repeat scorer knows about each history item at each moment: recency, frequency by
event type, the type of its last event and, with timestamps, the time since.

For a query at position `t` (the event after which the next one is predicted) every position
`j <= t` holding an item's LAST occurrence up to `t` is a repeat candidate; each distinct item
of the history is a candidate exactly once. Its features are small integers, bucketed here and
embedded by `pipeline.model.heads.RepeatScorer`:

- `rank`: how many distinct items the shopper touched after it (0 = the most recent item), the
  quantity `repeat_last` ranks by;
- `gap`: events since its last occurrence (`t - j`), log-bucketed;
- `count_<type>`: how often it was viewed / carted / bought up to `t` (0, 1, 2, 3+);
- `last_type`: the type of its last event;
- `since`: log2 seconds between its last event and the query's event (when `ts` is given);
- `affinity_<type>_<column>`: with item side features, how many of the shopper's events of
  each type up to `t` were on items sharing the candidate's value of each feature column
  (its brand, its category...): the shopper's taste for this candidate, counted, not learnt.

All pair features are computed for every (t, j) at once as (B, T, T) tensors from running
counts over the history (no (B, T, T, T) intermediate): T is at most `max_len`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PAD = 0
RANK_BUCKETS = 12  # 0..7 exactly, then 8-15, 16-31, 32-63, 64+
GAP_BUCKETS = 12
COUNT_BUCKETS = 4  # 0, 1, 2, 3+
SINCE_BUCKETS = 24  # log2 seconds: 1 s .. ~97 days, then capped
AFFINITY_BUCKETS = 7  # 0, 1, 2-3, 4-7, 8-15, 16-31, 32+


def log_bucket(values: torch.Tensor, exact: int, n_buckets: int) -> torch.Tensor:
    """0..exact-1 as they are, then one bucket per doubling, capped at n_buckets - 1."""
    values = values.clamp(min=0)
    doubling = torch.floor(torch.log2(values.float().clamp(min=1) / exact)).long()
    bucket = torch.where(values < exact, values, exact + doubling)
    return bucket.clamp(max=n_buckets - 1)


@dataclass
class RepeatFeatures:
    """Pair features of (query position t, history position j): each tensor (B, T, T), [b, t, j].

    `candidate` is True where j <= t holds the last occurrence (up to t) of a real item.
    """

    candidate: torch.Tensor  # bool
    rank: torch.Tensor  # long, bucketed
    gap: torch.Tensor  # long, bucketed
    counts: torch.Tensor  # long (B, T, T, n_types), bucketed
    last_type: torch.Tensor  # long
    since: torch.Tensor | None  # long, bucketed; None without timestamps
    affinity: torch.Tensor | None = None  # long (B, T, T, n_types * n_columns); None = none

    def at(self, rows: torch.Tensor, queries: torch.Tensor) -> RepeatFeatures:
        """The features of chosen queries: (N,) rows and (N,) positions -> tensors (N, 1, T)."""
        def pick(x):
            return None if x is None else x[rows, queries][:, None]

        return RepeatFeatures(pick(self.candidate), pick(self.rank), pick(self.gap),
                              pick(self.counts), pick(self.last_type), pick(self.since),
                              pick(self.affinity))


def feature_affinity(tokens: torch.Tensor, columns: torch.Tensor, type_hot: torch.Tensor,
                     n_columns: int, queries: torch.Tensor) -> torch.Tensor:
    """Per (query, candidate j): events up to the query, by type, on items sharing j's value
    of each feature column -> (B, Tq, T, n_types * n_columns), bucketed.

    Args:
        tokens, columns: (B, T, K) feature token ids of each position's item and the column
            each token belongs to (1..n_columns; 0 = padding).
        type_hot: (B, T, n_types) one-hot event types.
    """
    real = tokens > 0
    equal = (tokens[:, :, None, :, None] == tokens[:, None, :, None, :])  # (B, Tj, Tk, K, K)
    equal = equal & real[:, :, None, :, None] & real[:, None, :, None, :]
    col_hot = torch.nn.functional.one_hot(columns, n_columns + 1)[..., 1:].float()  # (B,T,K,C)
    # shares[b, j, k, c]: some token of column c of item j is also on item k
    shares = torch.einsum("bjkp,bjpc->bjkc", equal.any(-1).float(), col_hot).clamp(max=1)
    by_type = shares[..., :, None] * type_hot[:, None, :, None, :].float()  # (B,Tj,Tk,C,V)
    running = by_type.cumsum(2)[:, :, queries].transpose(1, 2)  # (B, Tq, Tj, C, V)
    counts = running.flatten(-2).round().long()
    return log_bucket(counts, 2, AFFINITY_BUCKETS)


def repeat_features(items: torch.Tensor, types: torch.Tensor, n_types: int,
                    ts: torch.Tensor | None = None, last_only: bool = False,
                    feature_tokens: torch.Tensor | None = None,
                    feature_columns: torch.Tensor | None = None,
                    n_columns: int = 0) -> RepeatFeatures:
    """Features for every query position of LEFT-padded (B, T) histories (or only the last).

    Args:
        items, types: (B, T) int64, PAD = 0 on the left.
        n_types: event types (type ids 1..n_types).
        ts: (B, T) int64 unix seconds, or None.
        last_only: compute the query at position T-1 only (scoring): tensors are (B, 1, T).
        feature_tokens, feature_columns: (B, T, K) side-feature tokens of each position's item
            and their columns (1..n_columns), for the affinity counts; None = none.
    """
    b, t = items.shape
    real = items != PAD  # (B, T)
    same = (items[:, :, None] == items[:, None, :]) & real[:, :, None]  # (B, T_j, T_k)
    positions = torch.arange(t, device=items.device)
    queries = positions[-1:] if last_only else positions  # (Tq,)
    type_hot = torch.nn.functional.one_hot(types, n_types + 1)[..., 1:]  # (B, T_k, V)
    # by_type[b, j, q, v] = #{k <= q : item_k == item_j, type_k == v}: a running count over k.
    by_type = (same[..., None] & type_hot[:, None].bool()).to(torch.int32).cumsum(2)
    counts = by_type[:, :, queries].transpose(1, 2)  # (B, Tq, T, V)
    total = same.to(torch.int32).cumsum(2)  # (B, T_j, T_k): occurrences of item_j up to k
    upto_j = total.diagonal(dim1=1, dim2=2)  # (B, T): occurrences up to j itself
    # j is the last occurrence up to q when no k in (j, q] holds the same item.
    later = total[:, :, queries].transpose(1, 2) - upto_j[:, None, :]  # (B, Tq, T)
    j_upto_q = (positions[None, :] <= queries[:, None])[None]  # (1, Tq, T)
    candidate = (later == 0) & j_upto_q & real[:, None, :]  # (B, Tq, T)
    # rank: candidates strictly after j (up to q) = distinct items touched since.
    cand = candidate.to(torch.int32)
    rank = cand.flip(-1).cumsum(-1).flip(-1) - cand  # (B, Tq, T)
    gap = (queries[:, None] - positions[None, :]).clamp(min=0)[None].expand(b, -1, -1)
    since = None
    if ts is not None:
        seconds = (ts[:, queries][:, :, None] - ts[:, None, :]).clamp(min=0)  # (B, Tq, T)
        since = log_bucket(seconds, 1, SINCE_BUCKETS)
    affinity = None
    if feature_tokens is not None and n_columns:
        affinity = feature_affinity(feature_tokens, feature_columns, type_hot, n_columns, queries)
    return RepeatFeatures(
        candidate=candidate,
        rank=log_bucket(rank, 8, RANK_BUCKETS),
        gap=log_bucket(gap, 8, GAP_BUCKETS),
        counts=counts.clamp(max=COUNT_BUCKETS - 1).long(),
        last_type=types[:, None, :].expand(-1, len(queries), -1),
        since=since,
        affinity=affinity,
    )

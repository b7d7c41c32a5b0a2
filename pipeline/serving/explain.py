"""Why each recommended item: the history events that drove its score, found by occlusion.

For a shopper with `L` known events, each event `j` is removed in turn (the event itself,
with its type and time: the rest of the history closes up, as if it never happened) and the
model rescores; an event's `weight` is how much the recommended item's final score (the
probability in `scores`) drops without it:

    weight_j(item) = score(item | history) - score(item | history without event j)

All `L` shortened histories of all explained shoppers go through the model together, in
`registry.serve_batch_size` chunks: one extra forward pass over `sum(L)` rows, no gradients.
Removing a shopper's only event leaves an empty history, which serving answers from
popularity, so that is the score without it.

Occlusion, not attention: attention weights say where a layer looked, not what the score
depends on (the repeat head scores history items from their own features, outside any
attention, and the explore gate mixes the two). Occlusion measures the score itself, and it
is cheap because histories are short (`max_len`). The test checks the
property the weights promise through the pyfunc, on the request itself: removing the
top-weighted event from the request lowers the item's score by exactly its weight, more than
removing another event.

Each recommended item gets its `TOP_EVENTS` positive-weight events, largest first, and a
`reason`:
- `repeat`: the item is in the shopper's history (the repeat head's candidates);
- `similar_to`: a new item whose score rests on history events (the first one listed);
- `popular`: no history event raises its score (or the shopper had no known history, and
  the popularity fallback answered).
"""

from __future__ import annotations

import numpy as np

TOP_EVENTS = 3
REASON_REPEAT, REASON_SIMILAR, REASON_POPULAR = "repeat", "similar_to", "popular"


def occluded_histories(batch, rows: np.ndarray):
    """Every explained row's history with one known event removed.

    Returns:
        owner (N,) the row each shortened history belongs to, column (N,) the removed
        event's column in the batch, and the (N, W-1) items, types, ts (ts None when the
        request sent none), still LEFT-padded.
    """
    width = batch.items.shape[1]
    lengths = batch.lengths[rows]
    owner = np.repeat(rows, lengths)  # (N,)
    first = width - lengths  # first real column of each row
    column = np.arange(len(owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    column = column + np.repeat(first, lengths)
    keep = np.ones((len(owner), width), dtype=bool)
    keep[np.arange(len(owner)), column] = False

    def drop(matrix):
        return None if matrix is None else matrix[owner][keep].reshape(len(owner), width - 1)

    return owner, column, drop(batch.items), drop(batch.types), drop(batch.ts)


def occlusion_scores(recommender, batch, rows: np.ndarray, top_tokens: np.ndarray):
    """Scores of each row's recommended items with each event removed.

    Returns:
        owner (N,), column (N,) as in `occluded_histories`, and scores (N, k): the final
        score of the owner's k recommended items without that event.
    """
    import torch

    owner, column, items, types, ts = occluded_histories(batch, rows)
    wanted = top_tokens[owner]  # (N, k) token ids whose scores we need
    scores = np.zeros(wanted.shape, dtype=np.float64)
    lengths = (items != 0).sum(1) if items.shape[1] else np.zeros(len(owner), dtype=np.int64)
    empty = lengths == 0
    # An emptied history is answered by popularity (the serving fallback).
    scores[empty] = recommender.popularity_by_token[wanted[empty]]
    model_rows = np.flatnonzero(~empty)
    for start in range(0, len(model_rows), recommender.batch_size):
        chunk = model_rows[start : start + recommender.batch_size]
        w = int(lengths[chunk].max())
        probs, _ = recommender.probabilities(
            items[chunk, -w:], types[chunk, -w:], None if ts is None else ts[chunk, -w:]
        )
        picked = torch.gather(probs, 1, torch.from_numpy(wanted[chunk]))  # (b, k)
        scores[chunk] = picked.double().numpy()
    return owner, column, scores


def _event(recommender, batch, row: int, column: int, weight: float) -> dict:
    ts = None if batch.ts is None else int(batch.ts[row, column])
    return {
        "item_id": str(recommender.index_to_item[batch.items[row, column]]),
        "event_type": recommender.event_types[int(batch.types[row, column]) - 1],
        "timestamp": ts,
        "weight": float(weight),
        "position": int(batch.positions[row, column]),
    }


def explain_top_k(recommender, batch, rows: np.ndarray, top_tokens: np.ndarray,
                  top_scores: np.ndarray, ks: np.ndarray) -> list:
    """`explanations` column: per request row, None unless explained, else one entry per
    recommended item: `{"item_id", "reason", "events": [{"item_id", "event_type",
    "timestamp", "weight", "position"}]}` (position: index in the request's `history`).

    Args:
        recommender: the `Recommender` that answered (model, vocabulary, popularity).
        batch: the request's `EncodedBatch`.
        rows: request rows to explain.
        top_tokens: (B, k) recommended token ids, -1 where popularity answered.
        top_scores: (B, k) their final scores.
        ks: (B,) items asked per row.
    """
    out: list = [None] * len(top_tokens)
    model_rows = rows[batch.lengths[rows] > 0]
    for row in rows[batch.lengths[rows] == 0]:
        out[row] = [{"item_id": str(item), "reason": REASON_POPULAR, "events": []}
                    for item in recommender.popularity.item_ids[: ks[row]]]
    if not len(model_rows):
        return out
    owner, column, without = occlusion_scores(recommender, batch, model_rows, top_tokens)
    weights = top_scores[owner] - without  # (N, k)
    starts = np.concatenate([[0], np.cumsum(batch.lengths[model_rows])[:-1]])
    for row, start in zip(model_rows, starts, strict=True):
        span = slice(start, start + batch.lengths[row])
        history = set(batch.items[row][batch.items[row] > 0].tolist())
        entries = []
        for i in range(ks[row]):
            token, w = int(top_tokens[row, i]), weights[span, i]
            order = [j for j in np.argsort(-w, kind="stable")[:TOP_EVENTS] if w[j] > 0]
            events = [_event(recommender, batch, row, column[start + j], w[j]) for j in order]
            reason = (REASON_REPEAT if token in history
                      else REASON_SIMILAR if events else REASON_POPULAR)
            entries.append({"item_id": str(recommender.index_to_item[token]),
                            "reason": reason, "events": events})
        out[row] = entries
    return out

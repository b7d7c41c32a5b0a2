"""Evaluation examples as padded arrays, and the batched full-ranking loop.

Every recommender (baseline or model) implements `score(batch) -> np.ndarray (B, V)` and
`rank_examples` turns those scores into per-example target ranks, the union of top-k lists
(coverage) and, for models with a purchase head, purchase logits. Ranking is vectorised per
batch: `count_nonzero(scores >= target_score, axis=1)` in numpy, top-k with torch.topk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from pipeline.errors import InputError, ModelError

log = logging.getLogger(__name__)

EXAMPLE_COLUMNS = (
    "user_id",
    "history_items",
    "history_types",
    "history_ts",
    "target_item",
    "target_type",
    "target_ts",
)


@dataclass(frozen=True)
class HistoryBatch:
    """What a recommender sees for B requests. Histories are chronological, LEFT-padded."""

    items: np.ndarray  # (B, T) int64, 0 = PAD
    types: np.ndarray  # (B, T) int64, 0 = PAD
    ts: np.ndarray  # (B, T) int64 unix seconds, 0 at padding
    request_ts: np.ndarray  # (B,) int64: when the recommendation is asked (the target's time)

    def __len__(self) -> int:
        return len(self.items)


@runtime_checkable
class Recommender(Protocol):
    """Anything that ranks the catalogue for a batch of histories."""

    name: str

    def score(self, batch: HistoryBatch) -> np.ndarray:
        """(B, vocab_size) float32, higher is better; a fresh array the caller may modify."""
        ...


@dataclass(frozen=True)
class Examples:
    """One split's examples, sorted by target time (so time-windowed baselines slide forward)."""

    user_ids: np.ndarray  # (N,) object
    items: np.ndarray  # (N, T) int64
    types: np.ndarray  # (N, T) int64
    ts: np.ndarray  # (N, T) int64
    lengths: np.ndarray  # (N,) int64 history length before truncation to T
    target_item: np.ndarray  # (N,) int64
    target_type: np.ndarray  # (N,) int64
    target_ts: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.target_item)

    def batch(self, start: int, stop: int) -> HistoryBatch:
        return HistoryBatch(
            self.items[start:stop],
            self.types[start:stop],
            self.ts[start:stop],
            self.target_ts[start:stop],
        )


def left_pad(lists, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow list column -> ((N, width) int64 keeping each list's last `width`, lengths)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    array = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.int64)
    n_rows = len(lengths)
    starts = np.cumsum(lengths) - lengths  # (N,) offset of each row in `values`
    rows = np.repeat(np.arange(n_rows), lengths)
    pos_in_row = np.arange(len(values)) - np.repeat(starts, lengths)
    cols = width - lengths[rows] + pos_in_row  # right-aligned; negative = truncated away
    keep = cols >= 0
    padded = np.zeros((n_rows, width), dtype=np.int64)
    padded[rows[keep], cols[keep]] = values[keep]
    return padded, lengths


def load_examples(path: Path, max_len: int) -> Examples:
    """Read val/test.parquet (docs/interfaces.md "Sequences") into padded arrays."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise InputError(f"{path}: examples file not found (run build_sequences first)")
    table = pq.read_table(path)
    missing = [c for c in EXAMPLE_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: missing columns {missing}; expected {list(EXAMPLE_COLUMNS)}")
    targets = table.column("target_item").to_numpy().astype(np.int64)
    null_rows = np.flatnonzero(table.column("target_item").is_null().to_numpy())
    if len(null_rows):
        raise InputError(f"{path}: row {null_rows[0]}: target_item is null")
    target_ts = table.column("target_ts").to_numpy().astype(np.int64)
    order = np.argsort(target_ts, kind="stable")
    items, lengths = left_pad(table.column("history_items"), max_len)
    types, _ = left_pad(table.column("history_types"), max_len)
    ts, _ = left_pad(table.column("history_ts"), max_len)
    return Examples(
        user_ids=table.column("user_id").to_numpy(zero_copy_only=False)[order],
        items=items[order],
        types=types[order],
        ts=ts[order],
        lengths=lengths[order],
        target_item=targets[order],
        target_type=table.column("target_type").to_numpy().astype(np.int64)[order],
        target_ts=target_ts[order],
    )


@dataclass
class RankResult:
    """Per-example outcome of one recommender on one split."""

    name: str
    ranks: np.ndarray  # (N,) float64, +inf = miss
    recommended: np.ndarray  # (V,) bool: item appeared in some top-k list
    purchase_logits: np.ndarray | None  # (N,) float32 for models with a purchase head
    seconds: float


def rank_examples(
    recommender: Recommender,
    examples: Examples,
    vocab_size: int,
    *,
    batch_size: int,
    exclude_history: bool,
    coverage_k: int,
) -> RankResult:
    """Score every example in batches and rank its target among all items."""
    from pipeline.evaluation.metrics import (
        exclude_items,
        mask_unrankable,
        target_ranks,
        top_k_items,
    )

    started = time.perf_counter()
    n_examples = len(examples)
    ranks = np.empty(n_examples, dtype=np.float64)
    recommended = np.zeros(vocab_size, dtype=bool)
    with_purchase = hasattr(recommender, "score_with_purchase")
    purchase = np.empty(n_examples, dtype=np.float32) if with_purchase else None
    for start in range(0, n_examples, batch_size):
        stop = min(start + batch_size, n_examples)
        batch = examples.batch(start, stop)
        if with_purchase:
            raw, purchase_logit = recommender.score_with_purchase(batch)
            purchase[start:stop] = purchase_logit
        else:
            raw = recommender.score(batch)
        if raw.shape != (stop - start, vocab_size):
            raise ModelError(
                f"recommender {recommender.name!r}: scores of shape {raw.shape}, "
                f"expected {(stop - start, vocab_size)} (batch, vocab_size)"
            )
        scores = mask_unrankable(np.asarray(raw, dtype=np.float32))
        if exclude_history:
            exclude_items(scores, batch.items)
        ranks[start:stop] = target_ranks(scores, examples.target_item[start:stop])
        recommended[top_k_items(scores, coverage_k)] = True
    seconds = time.perf_counter() - started
    log.debug(
        "%s: ranked %d examples x %d items in %.2f s",
        recommender.name,
        n_examples,
        vocab_size,
        seconds,
    )
    return RankResult(recommender.name, ranks, recommended, purchase, seconds)

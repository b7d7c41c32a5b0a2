"""Ranking and probability metrics: pure functions over score matrices and target ranks.

Ranks are over the whole catalogue (no sampled negatives). The rank of the target is
*pessimistic*: 1 + the number of OTHER items whose score is >= the target's score, so a tie
counts against the recommender. A model that scores every item the same therefore ranks
every target last, not first (an optimistic rank would give it HR@k = 1). A target whose
score is -inf or NaN (excluded, reserved, or unknown to the model's vocabulary) is a miss:
its rank is +inf and it contributes 0 to every metric.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

N_RESERVED_TOKENS = 3  # 0 PAD, 1 MASK, 2 UNK (docs/interfaces.md); never recommendable
ROUND_DIGITS = 5  # eval.json precision: enough for diffs of 1e-4 on NDCG, no float noise


def mask_unrankable(scores: np.ndarray) -> np.ndarray:
    """In place: reserved tokens and NaN scores become -inf. scores: (B, V) float32."""
    scores[:, :N_RESERVED_TOKENS] = -np.inf
    nan = np.isnan(scores)
    if nan.any():
        scores[nan] = -np.inf
    return scores


def exclude_items(scores: np.ndarray, items: np.ndarray) -> np.ndarray:
    """In place: the items of each row's history get -inf (PAD 0 is reserved anyway).

    A target that already occurs in the history becomes a miss: a recommender that hides
    seen items cannot recommend it, and keeping it would leak the answer.

    Args:
        scores: (B, V) float32.
        items: (B, T) int64 history, left-padded with 0.
    """
    scores[np.arange(len(scores))[:, None], items] = -np.inf
    return scores


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pessimistic 1-based rank of each target; +inf where the target cannot be ranked.

    numpy, not torch: its SIMD compare-and-count over a (1024, 12k) block is ~10x faster
    than torch's bool reduction on CPU (measured: 7 ms vs 77 ms).

    Args:
        scores: (B, V) float32 with unrankable items already at -inf.
        targets: (B,) int64 item indices; out-of-range or reserved indices are misses.

    Returns:
        (B,) float64 ranks.
    """
    n_rows, vocab_size = scores.shape
    valid = (targets >= N_RESERVED_TOKENS) & (targets < vocab_size)
    safe_targets = np.where(valid, targets, 0)
    target_scores = scores[np.arange(n_rows), safe_targets]  # (B,)
    # Counting ">=" includes the target itself, so the count IS the pessimistic rank.
    ranks = np.count_nonzero(scores >= target_scores[:, None], axis=1).astype(np.float64)
    ranks[~(valid & (target_scores > -np.inf))] = np.inf
    return ranks


def top_k_items(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best finite-scored items per row, flattened (for coverage).

    torch.topk (zero-copy view): ~8x faster than np.argpartition here.
    """
    import torch

    k = min(k, scores.shape[1])
    values, indices = torch.topk(torch.from_numpy(scores), k, dim=1)  # (B, k)
    return indices[values > float("-inf")].numpy()


def ranking_metrics(ranks: np.ndarray, ks: Iterable[int]) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item, so IDCG = 1) and MRR@k from target ranks.

    Empty input gives an empty dict: a slice without examples has no metrics.
    """
    if len(ranks) == 0:
        return {}
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks <= k
        out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)))
        out[f"hr@{k}"] = float(np.mean(hit))
        out[f"mrr@{k}"] = float(np.mean(np.where(hit, 1.0 / ranks, 0.0)))
    return out


def coverage(recommended: np.ndarray, vocab_size: int) -> float:
    """Share of catalogue items (reserved tokens excluded) that appear in any top-k list.

    Args:
        recommended: (V,) bool, True where the item was in some user's top-k.
        vocab_size: V, including the reserved tokens.
    """
    n_items = vocab_size - N_RESERVED_TOKENS
    if n_items <= 0:
        return 0.0
    return float(recommended[N_RESERVED_TOKENS:].sum() / n_items)


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC by the Mann-Whitney statistic with averaged ranks for ties.

    Returns None when only one class is present (AUC is undefined there).
    """
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores, method="average")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss_from_logits(labels: np.ndarray, logits: np.ndarray) -> float | None:
    """Mean binary cross-entropy, computed from logits without overflow.

    Returns None for empty input.
    """
    if len(labels) == 0:
        return None
    y = np.asarray(labels, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    # Binary cross-entropy of sigmoid(z) equals softplus(z) minus y times z: no overflow.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def rounded(metrics: dict) -> dict:
    """Round floats for eval.json, recursively; ints and None pass through."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            out[key] = rounded(value)
        elif isinstance(value, float):
            out[key] = round(value, ROUND_DIGITS)
        else:
            out[key] = value
    return out

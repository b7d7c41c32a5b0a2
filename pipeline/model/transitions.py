"""What followed each item in the training histories: a first-order prior for the explore scores.

A transformer's next-item scores are a low-rank function of the history (`hidden @ items.T`,
rank `hidden_dim`): they generalise (an item's neighbours get mass) but are blunt where the
log holds sharp, item-specific successions. On click sessions the `transitions` baseline (what
followed the last item in train, counted) ranked the right item first more often than the
model, which found it in its top 10 more often (Yoochoose: HR@10 0.47 vs 0.38, NDCG@10 0.243
vs 0.256; docs/model.md, "Transition prior"). `transition_top_k` keeps, per item, the K items
that most often followed it in the training histories with their counts (a fixed-shape table
saved with the weights, so serving scores with it); the explore logits add
`weight[next type] * log(1 + count(last item -> candidate))`, the weight learnt per next event
type (zero would ignore the prior). In training, the pair being predicted is itself in the
counts: it is left out (count - 1), or the model would learn to trust a count that contains
the answer, which scoring never has.
"""

from __future__ import annotations

import numpy as np
import torch

PAD = 0


def successor_table(items: np.ndarray, vocab_size: int, top_k: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """(N, L) LEFT-padded training histories -> (vocab_size, K) successor ids and counts.

    Counts every consecutive (item, next item) pair of a row; keeps the K most frequent
    successors of each item (ties: smaller id first); unused slots are id 0 with count 0.
    """
    src, dst = items[:, :-1].ravel(), items[:, 1:].ravel()
    real = (src != PAD) & (dst != PAD)
    pairs = src[real].astype(np.int64) * vocab_size + dst[real]
    keys, counts = np.unique(pairs, return_counts=True)  # sorted by (src, dst)
    key_src, key_dst = keys // vocab_size, keys % vocab_size
    order = np.lexsort((key_dst, -counts, key_src))  # by src, then count desc, then dst
    key_src, key_dst, counts = key_src[order], key_dst[order], counts[order]
    starts = np.searchsorted(key_src, key_src, side="left")
    rank = np.arange(len(key_src)) - starts  # 0-based rank inside each source item
    keep = rank < top_k
    successors = np.zeros((vocab_size, top_k), dtype=np.int64)
    weights = np.zeros((vocab_size, top_k), dtype=np.float32)
    successors[key_src[keep], rank[keep]] = key_dst[keep]
    weights[key_src[keep], rank[keep]] = counts[keep]
    return successors, weights


def successor_counts(successors: torch.Tensor, counts: torch.Tensor, last_items: torch.Tensor,
                     leave_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) last items -> their (N, K) successor ids and counts (sparse: what the prior adds
    to; a dense (N, vocab) count would cost a catalogue-wide tensor per position).

    `leave_out` (N,) targets of training positions: their own pair is removed from the count
    (never below zero). Unused slots keep id PAD with count 0.
    """
    ids, found = successors[last_items], counts[last_items]  # (N, K)
    if leave_out is not None:
        found = (found - (ids == leave_out[:, None]).to(found.dtype)).clamp(min=0)
    return ids, found

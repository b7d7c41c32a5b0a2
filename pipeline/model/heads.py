"""The model's next-item head: a next-type query, then generate (tied softmax) or copy.

- **Query.** Item scores are conditioned on the type of the event being predicted: a learned
  query embedding is added to the hidden state, then a residual feed-forward block mixes it
  in (an added vector alone would only shift each item's score by a per-type constant, while
  "next view" and "next cart" need different items: a similar item vs. the one just viewed).
  Pretraining (every next event) and fine-tuning (next cart/purchase) train the same head
  with different queries, so the pretrained "next cart" is there when fine-tuning starts.
- **Copy** (`copy_head`). Shoppers cart and buy what they viewed: the next target is usually
  an item already in the history. A tied softmax must rebuild that item's embedding from the
  hidden state, which small models do poorly; a pointer over the history positions (scaled
  dot product of the queried state with each position's hidden state) picks it directly,
  using what the transformer knows about each event (type, recency, the shopper's taste).
  The next-item distribution is the gated mixture
  `P(item) = g * P_generate(item) + (1 - g) * sum_{j: item_j = item} P_copy(j)`
  (pointer-generator, See et al. 2017; RepeatNet, Ren et al. AAAI 2019), `g` from the
  queried state. Positions may copy only from themselves and earlier events.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


class NextItemHead(nn.Module):
    """Query embedding + residual block; optional copy pointer and its gate."""

    def __init__(self, hidden_dim: int, ffn_dim: int, n_event_types: int, copy: bool) -> None:
        super().__init__()
        d = hidden_dim
        self.query_emb = nn.Embedding(n_event_types + 1, d, padding_idx=PAD)  # PAD = unused
        self.query_norm = nn.LayerNorm(d)
        self.query_ffn = nn.Sequential(nn.Linear(d, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d))
        self.copy = copy
        if copy:
            self.copy_query = nn.Linear(d, d, bias=False)
            self.copy_key = nn.Linear(d, d, bias=False)
            self.copy_gate = nn.Linear(d, 1)

    def query(self, hidden: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """Condition hidden states on the next event's type: (..., D), (...) -> (..., D)."""
        queried = hidden + self.query_emb(next_types)
        return queried + self.query_ffn(self.query_norm(queried))

    def copy_log_probs(self, queried: torch.Tensor, hidden: torch.Tensor,
                       items: torch.Tensor) -> torch.Tensor:
        """Log-softmax over history positions: (B, Tq, D), (B, T, D), (B, T) -> (B, Tq, T).

        The Tq queries are the last Tq positions; query t may point at positions <= t
        (always at itself, so no row is empty), never at padding.
        """
        t, tq = items.shape[1], queried.shape[1]
        scores = self.copy_query(queried) @ self.copy_key(hidden).transpose(1, 2)  # (B, Tq, T)
        scores = scores.float() / math.sqrt(hidden.shape[-1])
        query_pos = torch.arange(t - tq, t, device=items.device)[:, None]  # (Tq, 1)
        key_pos = torch.arange(t, device=items.device)[None, :]  # (1, T)
        allowed = (key_pos <= query_pos) & (items != PAD)[:, None, :]  # (B, Tq, T)
        allowed = allowed | (key_pos == query_pos)
        return torch.log_softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)

    def gate_logit(self, queried: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (...) logit of generating (vs. copying) the next item."""
        return self.copy_gate(queried).squeeze(-1).float()


def mix(gate_logit: torch.Tensor, log_generate: torch.Tensor,
        log_copy: torch.Tensor) -> torch.Tensor:
    """log(g * P_generate + (1 - g) * P_copy), elementwise; log_copy may be -inf."""
    return torch.logaddexp(F.logsigmoid(gate_logit) + log_generate,
                           F.logsigmoid(-gate_logit) + log_copy)


def copy_log_prob_of(log_copy: torch.Tensor, history: torch.Tensor,
                     targets: torch.Tensor) -> torch.Tensor:
    """log P_copy(target): (N, T) position log-probs, (N, T) items, (N,) -> (N,).

    -inf when the target is not among the positions the query may point at (later
    positions of a training row are not; computed so that no NaN gradient flows:
    a logsumexp over nothing but -inf has one).
    """
    is_target = (history == targets[:, None]) & torch.isfinite(log_copy)  # (N, T): reachable
    found = is_target.any(dim=-1)  # (N,)
    hits = log_copy.masked_fill(~is_target & found[:, None], float("-inf"))
    return torch.logsumexp(hits, dim=-1).masked_fill(~found, float("-inf"))

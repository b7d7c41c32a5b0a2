"""The model's next-item head: a next-type query, then repeat a history item or explore.

- **Query.** Item scores are conditioned on the type of the event being predicted: a learned
  query embedding is added to the hidden state, then a residual feed-forward block mixes it
  in (an added vector alone would only shift each item's score by a per-type constant, while
  "next view" and "next cart" need different items: a similar item vs. the one just viewed).
  Pretraining (every next event) and fine-tuning (next cart/purchase) train the same head
  with different queries, so the pretrained "next cart" is there when fine-tuning starts.
- **Repeat or explore** (`repeat_head`; RepeatNet, Ren et al. AAAI 2019; Li et al., SIGIR
  2023). Shoppers return to what they viewed and re-buy consumables; new items come from
  similar or complementary ones. The next-item distribution is the mixture
  `P(item) = (1 - e) * P_repeat(item) + e * P_explore(item)`, with `e` (explore) from the
  queried state, so each shopper and target type decides how much to repeat:
  - `P_explore` is the tied softmax over the whole catalogue;
  - `P_repeat` is a softmax over the distinct items of the history, each scored from its own
    features (`pipeline.model.repeat`: recency rank, events since, counts by event type,
    last event type, time since) and their match with the shopper's queried state, plus
    the item's embedding against that state (taste: brand, price, category).
  NOTE: the copy pointer this replaces scored history *positions* by the dot product of
  contextual hidden states; it never learnt recency (docs/model.md, "Why the copy pointer
  missed recency").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.repeat import (
    AFFINITY_BUCKETS,
    COUNT_BUCKETS,
    GAP_BUCKETS,
    RANK_BUCKETS,
    SINCE_BUCKETS,
    RepeatFeatures,
)

PAD = 0


class RepeatScorer(nn.Module):
    """Scores repeat candidates: (N, Tq, D) queried states x their history -> (N, Tq, T).

    The candidate features enter as one multi-hot vector per (query, candidate) — the buckets
    of recency rank, events since, last event type, time since, counts by event type and
    affinity counts — through one linear layer, added to the projected shopper state, then a
    GELU and a readout per next event type. (That is a sum of one embedding per feature; as
    one matmul it is several times cheaper than a dozen (N, Tq, T, D) lookups in pretraining.
    Counts fed as plain numbers instead of buckets cost 1% NDCG@10 on the synthetic shop.)
    """

    def __init__(self, hidden_dim: int, n_event_types: int, use_time: bool,
                 n_feature_columns: int = 0) -> None:
        super().__init__()
        d = width = hidden_dim
        self.n_types, self.use_time = n_event_types, use_time
        n_inputs = (RANK_BUCKETS + GAP_BUCKETS + n_event_types + 1
                    + n_event_types * COUNT_BUCKETS + (SINCE_BUCKETS if use_time else 0)
                    + n_event_types * n_feature_columns * AFFINITY_BUCKETS)
        self.features = nn.Linear(n_inputs, width)
        self.state = nn.Linear(d, width)  # the shopper's state, added to every candidate
        # One readout per next event type: what makes an item re-viewed is not what makes it
        # carted, and a view-dominated pretraining must not decide the cart scores.
        self.out = nn.Embedding(n_event_types + 1, width)
        self.out_bias = nn.Embedding(n_event_types + 1, 1)
        self.taste = nn.Linear(d, d, bias=False)  # state -> item-embedding space

    def encode(self, features: RepeatFeatures) -> torch.Tensor:
        """(N, Tq, T) integer features -> (N, Tq, T, n_inputs) float inputs."""
        lead = features.rank.shape
        parts = [F.one_hot(features.rank, RANK_BUCKETS), F.one_hot(features.gap, GAP_BUCKETS),
                 F.one_hot(features.last_type, self.n_types + 1),
                 F.one_hot(features.counts, COUNT_BUCKETS).reshape(*lead, -1)]
        if self.use_time:
            parts.append(F.one_hot(features.since, SINCE_BUCKETS) if features.since is not None
                         else features.rank.new_zeros((*features.rank.shape, SINCE_BUCKETS)))
        if features.affinity is not None:
            parts.append(F.one_hot(features.affinity, AFFINITY_BUCKETS).reshape(*lead, -1))
        return torch.cat([part.float() for part in parts], -1)

    def forward(self, queried: torch.Tensor, features: RepeatFeatures,
                item_vectors: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """Log-softmax over candidates; -inf elsewhere (no candidate: all -inf).

        Args:
            queried: (N, Tq, D) queried hidden states.
            features: pair features, tensors (N, Tq, T).
            item_vectors: (N, T, D) item representations of the history positions.
            next_types: (N, Tq) the type of the event being predicted.
        """
        x = self.features(self.encode(features)) + self.state(queried)[:, :, None, :]
        readout = self.out(next_types)[:, :, None, :]  # (N, Tq, 1, D)
        score = (F.gelu(x) * readout).sum(-1) + self.out_bias(next_types)  # (N, Tq, T)
        taste = self.taste(queried) @ item_vectors.transpose(1, 2)  # (N, Tq, T)
        score = (score + taste / math.sqrt(queried.shape[-1])).float()
        score = score.masked_fill(~features.candidate, float("-inf"))
        # A row without candidates (only padding) would give NaN: it has no repeat mass.
        empty = ~features.candidate.any(-1, keepdim=True)
        return torch.log_softmax(score.masked_fill(empty, 0.0), -1).masked_fill(
            empty, float("-inf"))


class NextItemHead(nn.Module):
    """Query embedding + residual block; optional repeat scorer and explore gate."""

    def __init__(self, hidden_dim: int, ffn_dim: int, n_event_types: int, repeat: bool,
                 use_time: bool = False, n_feature_columns: int = 0) -> None:
        super().__init__()
        d = hidden_dim
        self.query_emb = nn.Embedding(n_event_types + 1, d, padding_idx=PAD)  # PAD = unused
        self.query_norm = nn.LayerNorm(d)
        self.query_ffn = nn.Sequential(nn.Linear(d, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d))
        self.repeat = (RepeatScorer(d, n_event_types, use_time, n_feature_columns)
                       if repeat else None)
        # Per next event type: a shopper re-views often but may cart mostly what is new.
        self.explore_gate = nn.Linear(d, n_event_types + 1) if repeat else None

    def query(self, hidden: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """Condition hidden states on the next event's type: (..., D), (...) -> (..., D)."""
        queried = hidden + self.query_emb(next_types)
        return queried + self.query_ffn(self.query_norm(queried))

    def explore_logit(self, queried: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """(..., D), (...) -> (...) logit of exploring the catalogue (vs. repeating the
        history) for the next event of that type."""
        logits = self.explore_gate(queried)  # (..., n_types + 1)
        return logits.gather(-1, next_types[..., None]).squeeze(-1).float()


def mix(explore_logit: torch.Tensor, log_explore: torch.Tensor,
        log_repeat: torch.Tensor) -> torch.Tensor:
    """log(e * P_explore + (1 - e) * P_repeat), elementwise; log_repeat may be -inf."""
    return torch.logaddexp(F.logsigmoid(explore_logit) + log_explore,
                           F.logsigmoid(-explore_logit) + log_repeat)


def repeat_log_prob_of(log_repeat: torch.Tensor, history: torch.Tensor,
                       targets: torch.Tensor) -> torch.Tensor:
    """log P_repeat(target): (N, T) candidate log-probs, (N, T) items, (N,) -> (N,).

    Each distinct item is one candidate, so at most one position matches; -inf when the
    target is not a candidate (a new item), without a NaN gradient.
    """
    hit = (history == targets[:, None]) & torch.isfinite(log_repeat)  # (N, T)
    found = hit.any(-1)
    picked = log_repeat.masked_fill(~hit, 0.0).sum(-1)  # the one matching entry, or 0
    return picked.masked_fill(~found, float("-inf"))

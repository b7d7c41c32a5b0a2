"""Causal transformer over behaviour tokens (SASRec-style); its config: `pipeline.model.config`.

A shopper's history is a sequence of events; each event is a token built from the item,
the event type (view/cart/purchase), its position in the window and, optionally, the
log-scale time gap to the previous event. torch's own `nn.TransformerEncoderLayer`
(pre-norm, batch-first; attention runs through `scaled_dot_product_attention`) with a
causal mask turns tokens into hidden states; the item embedding table doubles as the output
layer (tied weights: `score = hidden @ item_emb.T`), as in SASRec (Kang & McAuley, ICDM 2018).

NOTE: departs from the SASRec paper in the loss (full softmax cross-entropy by default, as
in Klenitskiy & Vasilev, RecSys 2023) and adds the event-type and time-gap embeddings, a
purchase-probability head (is the next target event a purchase rather than a cart) and
`pipeline.model.heads.NextItemHead`: item scores conditioned on the type of the event being
predicted (next view / cart / purchase), as a mixture of repeating a history item (scored
from its recency, frequency and event types) and exploring the catalogue.

Saving and loading the model folder: `pipeline.model.folder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import ModelError
from pipeline.model.config import N_RESERVED, PAD, ModelConfig
from pipeline.model.heads import NextItemHead
from pipeline.model.repeat import RepeatFeatures, repeat_features
from pipeline.model.transitions import successor_counts

INIT_STD = 0.02  # normal init of embeddings and linear layers (BERT/GPT-2 convention)
ACTIVATION = "gelu"


def time_gap_bucket(ts: torch.Tensor, items: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Log2-second bucket of the gap to the previous event: 1..n_buckets; 0 = none/padding."""
    gap_s = (ts[:, 1:] - ts[:, :-1]).clamp(min=0).float()  # (B, T-1)
    bucket = torch.floor(torch.log2(gap_s + 1.0)).long().clamp(max=n_buckets - 1) + 1
    has_prev = (items[:, 1:] != PAD) & (items[:, :-1] != PAD)
    bucket = torch.where(has_prev, bucket, torch.zeros_like(bucket))
    return torch.cat([torch.zeros_like(bucket[:, :1]), bucket], dim=1)  # (B, T)


def seen_columns(history: torch.Tensor, n_columns: int) -> torch.Tensor:
    """(N, T) LEFT-padded item ids -> (N, n_columns) bool: the item columns (ids minus the
    reserved tokens) the row holds."""
    # Column 0 of the scratch table stands for every reserved id (padding), so a padding
    # position never overwrites a real item's column.
    index = torch.where(history >= N_RESERVED, history - N_RESERVED + 1, 0)
    seen = torch.zeros(history.shape[0], n_columns + 1, dtype=torch.bool, device=history.device)
    return seen.scatter_(1, index, True)[:, 1:]


class SeqRecModel(nn.Module):
    """Behaviour-token transformer with tied item output and a purchase head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_dim
        self.item_emb = nn.Embedding(config.vocab_size, d, padding_idx=PAD)
        self.type_emb = nn.Embedding(config.n_event_types + 1, d, padding_idx=PAD)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.gap_emb = (
            nn.Embedding(config.time_gap_buckets + 1, d, padding_idx=PAD)
            if config.time_gap_buckets
            else None
        )
        self.emb_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=d, nhead=config.n_heads, dim_feedforward=config.ffn_dim,
            dropout=config.dropout, activation=ACTIVATION, batch_first=True, norm_first=True,
        )
        # Pre-norm blocks need a final norm; nested tensors need a key padding mask we don't use.
        self.encoder = nn.TransformerEncoder(
            layer, config.n_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.feature_emb = None
        if config.n_features:
            # A bag summing each item's feature embeddings (the padding id adds nothing): the
            # (items, features per item, D) tensor of a plain lookup is never built; it cost
            # most of a training step on Amazon's 37 attributes per item.
            self.feature_emb = nn.EmbeddingBag(config.n_features, d, mode="sum",
                                               padding_idx=PAD)
            # Which feature tokens each item has: data, but saved with the weights so serving
            # scores with the same features (filled by `set_item_features`).
            self.register_buffer("item_features", torch.zeros(
                config.vocab_size, config.features_per_item, dtype=torch.long))
            self.register_buffer("feature_columns", torch.zeros(config.n_features,
                                                                dtype=torch.long))
        self.transition_weight = None
        if config.transition_top_k:
            # What followed each item in training (`pipeline.model.transitions`): data saved
            # with the weights, filled by `set_transitions`.
            self.register_buffer("successors", torch.zeros(
                config.vocab_size, config.transition_top_k, dtype=torch.long))
            self.register_buffer("successor_counts", torch.zeros(
                config.vocab_size, config.transition_top_k))
            self.transition_weight = nn.Embedding(config.n_event_types + 1, 1)
        self.purchase_head = nn.Linear(d, 1)
        self.head = NextItemHead(d, config.ffn_dim, config.n_event_types, config.repeat_head,
                                 use_time=config.time_gap_buckets > 0,
                                 n_feature_columns=config.n_feature_columns)
        self.apply(self._init_weights)
        if self.transition_weight is not None:  # start as the counts' log, as `transitions`
            nn.init.ones_(self.transition_weight.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding | nn.EmbeddingBag):
            nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if not isinstance(module, nn.Linear) and module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])

    def _attention_mask(self, items: torch.Tensor) -> torch.Tensor:
        """Boolean (B * heads, T, T), True = blocked: the future and padding keys.

        Every query may see itself, so a padding row never has all keys blocked (no NaN).
        """
        t = items.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=items.device).tril()  # (T, T)
        key_ok = (items != PAD)[:, None, :]  # (B, 1, T)
        eye = torch.eye(t, dtype=torch.bool, device=items.device)  # (T, T)
        allowed = causal & (key_ok | eye)  # (B, T, T)
        return (~allowed).repeat_interleave(self.config.n_heads, dim=0)  # (B*H, T, T)

    def forward(
        self, items: torch.Tensor, types: torch.Tensor, ts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden state after each event of LEFT-padded (B, T) histories -> (B, T', D).

        T' = min(T, max_len): longer inputs keep their most recent `max_len` events.
        Positions do not depend on the padding a batch adds (see `_positions`), so the same
        history gives the same output in any batch.
        """
        cfg = self.config
        if items.shape[1] == 1:  # torch's encoder rejects a (B*H, 1, 1) mask: one padding
            pad = (1, 0)  # column on the left (blocked as a key) changes no score
            hidden = self.forward(F.pad(items, pad, value=PAD), F.pad(types, pad),
                                  None if ts is None else F.pad(ts, pad))
            return hidden[:, 1:]  # (B, 1, D)
        items, types = items[:, -cfg.max_len :], types[:, -cfg.max_len :]  # (B, T)
        x = self.item_vectors(items) * math.sqrt(cfg.hidden_dim)  # (B, T, D)
        x = x + self.type_emb(types) + self.pos_emb(self._positions(items))  # (B, T, D)
        if self.gap_emb is not None:
            if ts is None:
                raise ModelError("model uses time_gap_buckets: pass the `ts` of each event")
            x = x + self.gap_emb(time_gap_bucket(ts[:, -cfg.max_len :], items,
                                                 cfg.time_gap_buckets))
        x = self.emb_dropout(x) * (items != PAD)[..., None]  # padding carries no signal
        return self.encoder(x, mask=self._attention_mask(items))  # (B, T, D)

    def _positions(self, items: torch.Tensor) -> torch.Tensor:
        """Position ids of LEFT-padded (B, T) items -> (B, T) or (1, T).

        "from_start": the first real event is 0, the next 1, ... (padding 0, masked anyway).
        Training reads the hidden state after every prefix of a history; with positions counted
        from the start, the prefix "first j events" has exactly the positions it has when served
        alone, so what is trained at event j is what serving computes for a j-event history.
        "from_end" (the latest event is max_len - 1, SASRec's left padding) gives a training
        prefix the positions of the *whole* row's length: the state after one event carries
        "L - 1 events follow", which serving never sees. Measured on Yoochoose, where 44% of
        the test sessions have a one-event history: docs/model.md, "Positions".
        """
        t = items.shape[1]
        if self.config.positions == "from_end":
            return torch.arange(self.config.max_len - t, self.config.max_len,
                                device=items.device)[None]  # (1, T)
        real = (items != PAD).long()  # (B, T)
        return (real.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)

    def query(self, hidden: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """Condition hidden states on the type of the event to predict: (..., D) -> (..., D)."""
        return self.head.query(hidden, next_types)

    def set_item_features(self, table: torch.Tensor, columns: torch.Tensor) -> None:
        """(vocab_size, features_per_item) feature token ids of every item (0 = none) and
        (n_features,) the catalogue column of each token (1-based, 0 = padding)."""
        self.item_features.copy_(table)
        self.feature_columns.copy_(columns)

    def set_transitions(self, successors: torch.Tensor, counts: torch.Tensor) -> None:
        """(vocab_size, K) ids of the items that most often followed each item, and counts."""
        self.successors.copy_(successors)
        self.successor_counts.copy_(counts)

    def repeat_inputs(self, items: torch.Tensor, types: torch.Tensor,
                      ts: torch.Tensor | None, last_only: bool) -> RepeatFeatures:
        """Repeat-candidate features of (B, T) histories (`pipeline.model.repeat`)."""
        cfg = self.config
        tokens = columns = None
        if cfg.n_feature_columns:
            tokens = self.item_features[items]  # (B, T, K)
            columns = self.feature_columns[tokens]  # (B, T, K)
        return repeat_features(items, types, cfg.n_event_types,
                               ts if cfg.time_gap_buckets > 0 else None, last_only,
                               tokens, columns, cfg.n_feature_columns)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item representations of token ids (the tied output rows): (...) -> (..., D).

        The item's own embedding plus the sum of its side features' embeddings, so items of
        one brand or category share what is learnt about them (and a rarely seen item is
        not only noise)."""
        vectors = self.item_emb(items)
        if self.feature_emb is not None:
            tokens = self.item_features[items]  # (..., K)
            bags = self.feature_emb(tokens.reshape(-1, tokens.shape[-1]))  # (n, D)
            vectors = vectors + bags.reshape(vectors.shape)
        return vectors

    def item_table(self) -> torch.Tensor:
        """(vocab_size, D): `item_vectors` of every token, the tied output layer."""
        table = self.item_emb.weight
        if self.feature_emb is not None:
            table = table + self.feature_emb(self.item_features)
        return table

    def item_logits(self, hidden: torch.Tensor, last_items: torch.Tensor | None = None,
                    next_types: torch.Tensor | None = None,
                    leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """Explore scores of the real items (ids >= N_RESERVED): (N, D) -> (N, vocab_size - 3).

        `hidden` is a queried state (`query`). With `transition_top_k`, the transition prior
        of the (N,) `last_items` is added, weighted by the (N,) `next_types`; `leave_out`
        (training targets) removes the predicted pair from its own count.
        """
        logits = hidden @ self.item_table()[N_RESERVED:].T
        if self.transition_weight is None:
            return logits
        if last_items is None or next_types is None:
            raise ModelError("model uses transition_top_k: pass the last items and next types")
        ids, counts = successor_counts(self.successors, self.successor_counts, last_items,
                                       leave_out)  # (N, K): unused slots are PAD, count 0
        prior = self.transition_weight(next_types) * torch.log1p(counts)  # (N, K)
        # Slot ids are distinct per row, so adding in place of a dense (N, V) count is exact.
        return logits.scatter_add(1, (ids - N_RESERVED).clamp(min=0),
                                  prior.masked_fill(ids < N_RESERVED, 0.0).to(logits.dtype))

    def default_query_types(self) -> list[int]:
        """Type ids scored by `score_last`: the fine-tuning targets (every type if none)."""
        cfg = self.config
        names = [t for t in cfg.target_event_types if t in cfg.event_types] or cfg.event_types
        return [1 + cfg.event_types.index(t) for t in names]

    def _query_weights(self, query_types: list[int], purchase_logit: torch.Tensor):
        """(B, Q) probability of each queried type being the next target event.

        With the purchase head's positive type among several queried types, it gets
        sigmoid(purchase_logit) and the others share the rest (the head's training
        label); otherwise the types weigh the same.
        """
        cfg = self.config
        n = len(query_types)
        positive = (1 + cfg.event_types.index(cfg.positive_event_type)
                    if cfg.positive_event_type in cfg.event_types else None)
        if n == 1 or positive not in query_types:
            return torch.full((purchase_logit.shape[0], n), 1.0 / n, device=purchase_logit.device)
        p_positive = torch.sigmoid(purchase_logit.float())[:, None]  # (B, 1)
        is_positive = torch.tensor([t == positive for t in query_types],
                                   device=purchase_logit.device)  # (Q,)
        return torch.where(is_positive, p_positive, (1 - p_positive) / (n - 1))  # (B, Q)

    def purchase_logit(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) logit that the next target event is `positive_event_type`."""
        return self.purchase_head(hidden).squeeze(-1)

    @torch.no_grad()
    def score_last(
        self,
        items: torch.Tensor,
        types: torch.Tensor,
        ts: torch.Tensor | None = None,
        query_types: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item scores and purchase logit after the last event of LEFT-padded histories.

        Scores are log-probabilities of the next item given the kind of event asked for:
        with several query types, the mixture `log sum_q P(q) P(item | q)`, P(q) from the
        purchase head (`_query_weights`). By default the query is the fine-tuning targets
        (cart or purchase): "what will they cart or buy next".

        Args:
            items: (B, T) int64 item ids, PAD=0 on the left.
            types: (B, T) int64 event-type ids, PAD=0 on the left.
            ts: (B, T) int64 unix seconds; needed only when `time_gap_buckets > 0`.
            query_types: event-type ids of the next event to score for; None = the
                config's `target_event_types` (every type when it has none).

        Returns:
            item_logits (B, vocab_size) float with reserved tokens at -inf, and
            purchase_logit (B,).
        """
        hidden = self(items, types, ts)  # (B, T, D)
        cfg = self.config
        items, types = items[:, -cfg.max_len :], types[:, -cfg.max_len :]  # as the encoder saw
        last = hidden[:, -1]  # (B, D)
        purchase_logit = self.purchase_logit(last)  # (B,)
        query_types = list(query_types or self.default_query_types())
        weights = self._query_weights(query_types, purchase_logit)  # (B, Q)
        features = None
        if cfg.repeat_head:
            window_ts = None if ts is None else ts[:, -cfg.max_len :]
            features = self.repeat_inputs(items, types, window_ts, last_only=True)
        # The mixture is built in probability space: one exp per score (softmax) and one log at
        # the end. The repeat part is sparse (at most T items per row), so it is scattered in.
        # Scores below float32's smallest probability (log-prob < ~-103) tie at -inf, far
        # below any cut-off a ranking uses.
        item_column = (items - N_RESERVED).clamp(min=0)  # (B, T) column in the item scores
        seen = seen_columns(items, cfg.vocab_size - N_RESERVED) if cfg.explore_novel else None
        probs = None
        for q, query_type in enumerate(query_types):
            query = torch.full_like(purchase_logit, query_type, dtype=torch.long)  # (B,)
            queried = self.query(last, query)  # (B, D)
            logits = self.item_logits(queried, items[:, -1], query).float()  # (B, V - 3)
            if features is not None and seen is not None:  # explore: new items only
                logits = logits.masked_fill(seen, float("-inf"))
            p_item = torch.softmax(logits, 1)
            if features is not None:
                p_explore = torch.sigmoid(self.head.explore_logit(queried, query))[:, None]
                log_repeat = self.head.repeat(queried[:, None], features,
                                              self.item_vectors(items), query[:, None])[:, 0]
                p_repeat = (log_repeat.exp() * (1 - p_explore)).nan_to_num(0.0)
                p_item = p_item.mul_(p_explore).scatter_add_(1, item_column, p_repeat)
            p_item = p_item.mul_(weights[:, q : q + 1])
            probs = p_item if probs is None else probs.add_(p_item)
        reserved = torch.full((last.shape[0], N_RESERVED), float("-inf"), device=last.device)
        return torch.cat([reserved, probs.log_()], dim=1), purchase_logit

    def estimate_train_flops(self, positions: int, seq_len: int, scored: int) -> float:
        """Training FLOPs of one step (forward + backward = 3x forward), nanoGPT-style.

        Args:
            positions: B * T computed positions, padding included (it costs the same).
            seq_len: T, for the attention scores (2 * layers * T * D per position, PaLM app. B).
            scored: positions whose hidden state meets the tied output over all items.
        """
        cfg = self.config
        d, n_layers = cfg.hidden_dim, cfg.n_layers
        per_layer = 4 * d * d + 2 * d * cfg.ffn_dim  # qkv + out projections, feed-forward
        per_position = n_layers * per_layer + 2 * n_layers * seq_len * d
        return 6.0 * (positions * per_position + scored * cfg.vocab_size * d)

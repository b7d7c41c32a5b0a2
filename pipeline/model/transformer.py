"""Causal transformer over behaviour tokens (SASRec-style) and its config.

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
predicted (next view / cart / purchase), optionally mixed with a copy pointer over the
history (shoppers cart what they viewed).

Saving and loading the model folder: `pipeline.model.folder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields

import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.model.heads import NextItemHead

PAD, MASK, UNK = 0, 1, 2
N_RESERVED = 3  # token ids below this are never recommended
INIT_STD = 0.02  # normal init of embeddings and linear layers (BERT/GPT-2 convention)
ACTIVATION = "gelu"
ARCHITECTURE_FIELDS = (
    "vocab_size", "max_len", "n_event_types", "hidden_dim", "n_layers", "n_heads",
    "ffn_dim", "time_gap_buckets", "copy_head",
)  # fields that must agree for weights to be reusable (dropout and heads' use may differ)


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved as `config.json`."""

    vocab_size: int  # item tokens incl. the reserved PAD/MASK/UNK
    max_len: int  # events in the attention window
    event_types: list[str]  # canonical event types; type id = 1 + position (0 = PAD)
    hidden_dim: int = 64
    n_layers: int = 2
    n_heads: int = 2
    ffn_dim: int = 64  # feed-forward width (SASRec uses hidden_dim)
    dropout: float = 0.2
    time_gap_buckets: int = 0  # log2-second buckets of the gap to the previous event; 0 = off
    copy_head: bool = True  # mix a pointer over the history into the next-item scores
    target_event_types: list[str] = field(default_factory=list)  # fine-tuning targets
    positive_event_type: str | None = None  # purchase head: next target event is this type

    @property
    def n_event_types(self) -> int:
        return len(self.event_types)

    def to_dict(self) -> dict:
        return {**asdict(self), "n_event_types": self.n_event_types}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> ModelConfig:
        names = {f.name for f in fields(cls)}
        missing = sorted(
            f.name for f in fields(cls)
            if f.name not in raw and f.default is MISSING and f.default_factory is MISSING
        )
        if missing:
            raise ModelError(f"{source}: missing model config keys {missing}")
        return cls(**{k: v for k, v in raw.items() if k in names})

    def architecture(self) -> dict:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}


def time_gap_bucket(ts: torch.Tensor, items: torch.Tensor, n_buckets: int) -> torch.Tensor:
    """Log2-second bucket of the gap to the previous event: 1..n_buckets; 0 = none/padding."""
    gap_s = (ts[:, 1:] - ts[:, :-1]).clamp(min=0).float()  # (B, T-1)
    bucket = torch.floor(torch.log2(gap_s + 1.0)).long().clamp(max=n_buckets - 1) + 1
    has_prev = (items[:, 1:] != PAD) & (items[:, :-1] != PAD)
    bucket = torch.where(has_prev, bucket, torch.zeros_like(bucket))
    return torch.cat([torch.zeros_like(bucket[:, :1]), bucket], dim=1)  # (B, T)


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
        self.purchase_head = nn.Linear(d, 1)
        self.head = NextItemHead(d, config.ffn_dim, config.n_event_types, config.copy_head)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
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
        Positions are right-aligned (the latest event is always position max_len - 1), so the
        same history gives the same output whatever padding a batch adds.
        """
        cfg = self.config
        items, types = items[:, -cfg.max_len :], types[:, -cfg.max_len :]  # (B, T)
        t = items.shape[1]
        positions = torch.arange(cfg.max_len - t, cfg.max_len, device=items.device)  # (T,)
        x = self.item_emb(items) * math.sqrt(cfg.hidden_dim)  # (B, T, D)
        x = x + self.type_emb(types) + self.pos_emb(positions)[None]  # (B, T, D)
        if self.gap_emb is not None:
            if ts is None:
                raise ModelError("model uses time_gap_buckets: pass the `ts` of each event")
            x = x + self.gap_emb(time_gap_bucket(ts[:, -cfg.max_len :], items,
                                                 cfg.time_gap_buckets))
        x = self.emb_dropout(x) * (items != PAD)[..., None]  # padding carries no signal
        return self.encoder(x, mask=self._attention_mask(items))  # (B, T, D)

    def query(self, hidden: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """Condition hidden states on the type of the event to predict: (..., D) -> (..., D)."""
        return self.head.query(hidden, next_types)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of the real items (ids >= N_RESERVED): (N, D) -> (N, vocab_size - 3).

        `hidden` is a queried state (`query`)."""
        return hidden @ self.item_emb.weight[N_RESERVED:].T

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
        items = items[:, -self.config.max_len :]  # (B, T) as the encoder saw them
        last = hidden[:, -1]  # (B, D)
        purchase_logit = self.purchase_logit(last)  # (B,)
        query_types = list(query_types or self.default_query_types())
        weights = self._query_weights(query_types, purchase_logit)  # (B, Q)
        # The mixture is built in probability space: one exp per score (softmax) and one log at
        # the end. The copy part is sparse (at most T items per row), so it is scattered in.
        # Scores below float32's smallest probability (log-prob < ~-103) tie at -inf, far
        # below any cut-off a ranking uses.
        is_item = items >= N_RESERVED  # (B, T): positions the pointer may copy
        item_column = (items - N_RESERVED).clamp(min=0)  # (B, T) column in the item scores
        probs = None
        for q, query_type in enumerate(query_types):
            query = torch.full_like(purchase_logit, query_type, dtype=torch.long)  # (B,)
            queried = self.query(last, query)  # (B, D)
            p_item = torch.softmax(self.item_logits(queried).float(), 1)  # (B, V - 3)
            if self.config.copy_head:
                p_generate = torch.sigmoid(self.head.gate_logit(queried))[:, None]  # (B, 1)
                log_copy = self.head.copy_log_probs(queried[:, None], hidden, items)[:, 0]
                p_copy = (log_copy.exp() * (1 - p_generate)).masked_fill(~is_item, 0.0)
                p_item = p_item.mul_(p_generate).scatter_add_(1, item_column, p_copy)
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

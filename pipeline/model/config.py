"""The model's config (`config.json` in a model folder) and its reserved token ids.

Token ids: PAD 0 (padding), MASK 1, UNK 2 (an item the vocabulary does not know); items
start at `N_RESERVED`. Event-type ids: 0 PAD, then 1 + position in `event_types`.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from pipeline.errors import ModelError

PAD, MASK, UNK = 0, 1, 2
N_RESERVED = 3  # token ids below this are never recommended
ARCHITECTURE_FIELDS = (
    "vocab_size", "max_len", "n_event_types", "hidden_dim", "n_layers", "n_heads",
    "ffn_dim", "time_gap_buckets", "repeat_head", "n_features", "features_per_item",
    "n_feature_columns", "positions", "transition_top_k",
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
    repeat_head: bool = True  # mix repeating a history item with exploring the catalogue
    n_features: int = 0  # item side-feature tokens (category=..., brand=..., price=q3); 0 = none
    features_per_item: int = 0  # feature tokens per item (padded with 0)
    n_feature_columns: int = 0  # catalogue columns the tokens come from (brand, category...)
    # Position ids: "from_start" (the first event of the window is 0) or "from_end" (the latest
    # is max_len - 1; models saved before this key existed). See `forward`.
    positions: str = "from_end"
    transition_top_k: int = 0  # successors kept per item for the transition prior; 0 = off
    explore_novel: bool = False  # the explore part ranks only items outside the history
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

"""The stage sections of `params.yaml`: data, synthetic shop, validation, sequences, model,
training and evaluation. `pipeline.params` composes them with the registry, gate and Airflow
sections and loads the file; import sections from there.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CANONICAL_COLUMNS = ("user_id", "item_id", "event_type", "timestamp", "session_id")


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(Section):
    source: Literal[
        "synthetic",
        "csv",
        "parquet",
        "sasrec",
        "taobao",
        "retailrocket",
        "amazon_reviews",
        "diginetica",
        "yoochoose",
    ] = "synthetic"
    path: str = "data/raw"
    timestamps_path: str | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = None
    timestamp_format: str | None = None
    event_types: list[str] = Field(default_factory=lambda: ["view", "cart", "purchase"])
    event_type_map: dict[str, str] = Field(default_factory=dict)
    default_event_type: str = "purchase"
    csv_delimiter: str | None = None
    max_field_chars: int = Field(default=512, gt=0)
    catalog_path: str | None = None
    item_columns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> DataParams:
        bad = sorted(set(self.columns.values()) - set(CANONICAL_COLUMNS))
        if bad:
            raise ValueError(
                f"data.columns maps to unknown canonical columns {bad}; "
                f"allowed: {list(CANONICAL_COLUMNS)}"
            )
        unknown = sorted(set(self.event_type_map.values()) - set(self.event_types))
        if unknown:
            raise ValueError(f"data.event_type_map targets {unknown} not in data.event_types")
        if self.default_event_type not in self.event_types:
            raise ValueError("data.default_event_type must be one of data.event_types")
        return self


class SyntheticParams(Section):
    seed: int = 7
    n_users: int = Field(default=4000, gt=0)
    n_items: int = Field(default=2000, gt=0)
    n_categories: int = Field(default=24, gt=0)
    n_brands: int = Field(default=60, gt=0)
    days: int = Field(default=60, gt=0)
    end_date: str = "2026-11-01"
    sessions_per_user_mean: float = Field(default=10.0, ge=1)
    views_per_session_mean: float = Field(default=5.5, ge=1)
    zipf_exponent: float = Field(default=1.0, gt=0)
    category_focus: float = Field(default=0.7, ge=0, le=1)
    similar_prob: float = Field(default=0.5, ge=0, le=1)
    n_similar: int = Field(default=4, gt=0)
    cart_rate: float = Field(default=0.08, ge=0, le=1)
    cart_later_share: float = Field(default=0.4, ge=0, le=1)
    purchase_rate: float = Field(default=0.4, ge=0, le=1)
    complement_prob: float = Field(default=0.5, ge=0, le=1)
    consumable_share: float = Field(default=0.3, ge=0, le=1)
    repeat_prob: float = Field(default=0.3, ge=0, le=1)
    interest_drift: float = Field(default=0.1, ge=0, le=1)
    brand_affinity: float = Field(default=3.0, ge=0)
    price_affinity: float = Field(default=1.0, ge=0)
    consideration_set: int = Field(default=2, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SyntheticParams:
        if self.n_categories > self.n_items:
            raise ValueError("synthetic.n_categories must not exceed synthetic.n_items")
        try:
            date.fromisoformat(self.end_date)
        except ValueError:
            raise ValueError(f"synthetic.end_date {self.end_date!r} is not YYYY-MM-DD") from None
        return self


class ValidateParams(Section):
    min_timestamp: str = "2000-01-01"
    future_tolerance_hours: float = Field(default=24.0, ge=0)
    max_id_length: int = Field(default=128, gt=0)
    min_rows: int = Field(default=1, ge=0)
    max_rows: int = Field(default=500_000_000, gt=0)
    max_volume_change: float = Field(default=5.0, gt=1)
    max_quarantine_share: float = Field(default=0.05, ge=0, le=1)
    max_staleness_days: float | None = None
    purchase_rate_band: tuple[float, float] | None = None
    min_users: int = Field(default=1, ge=0)
    min_items: int = Field(default=1, ge=0)
    gx_sample_rows: int = Field(default=200_000, gt=0)
    reference_time: str | None = None
    previous_summary: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ValidateParams:
        for key in ("min_timestamp", "reference_time"):
            value = getattr(self, key)
            if value is not None:
                try:
                    datetime.fromisoformat(value)
                except ValueError:
                    raise ValueError(f"{key} {value!r} is not an ISO 8601 date/time") from None
        band = self.purchase_rate_band
        if band is not None and not 0 <= band[0] <= band[1] <= 1:
            raise ValueError("purchase_rate_band must be [low, high] with 0 <= low <= high <= 1")
        return self


class SequencesParams(Section):
    session_gap_minutes: float = Field(default=30.0, gt=0)
    dedup_consecutive_views: bool = True
    min_user_events: int = Field(default=3, ge=1)
    min_item_events: int = Field(default=2, ge=1)
    max_len: int = Field(default=50, gt=1)
    split: Literal["leave_one_out", "temporal"] = "leave_one_out"
    train_until: Literal["val_session", "val_target"] = "val_session"
    val_days: float = Field(default=7.0, gt=0)
    test_days: float = Field(default=7.0, gt=0)
    target_event_types: list[str] = Field(default_factory=lambda: ["cart", "purchase"])
    previous_vocab: str | None = None
    max_oov_share: float = Field(default=0.5, ge=0, le=1)
    max_examples_per_user: int | None = Field(default=10, gt=0)
    item_features: list[str] = Field(default_factory=lambda: ["category", "brand", "price"])
    numeric_features: list[str] = Field(default_factory=lambda: ["price"])
    numeric_buckets: int = Field(default=8, gt=1)


class ModelParams(Section):
    hidden_dim: int = Field(default=64, gt=0)
    n_layers: int = Field(default=2, gt=0)
    n_heads: int = Field(default=2, gt=0)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    time_gap_buckets: int = Field(default=0, ge=0)
    loss: Literal["full_ce", "sampled_softmax"] = "full_ce"
    n_negatives: int = Field(default=256, gt=0)
    ffn_dim: int | None = Field(default=None, gt=0)
    repeat_head: bool = True
    item_features: bool = True
    positions: Literal["from_start", "from_end"] = "from_start"
    transition_top_k: int = Field(default=0, ge=0)
    explore_novel: bool = False

    @model_validator(mode="after")
    def _check_heads(self) -> ModelParams:
        if self.hidden_dim % self.n_heads:
            raise ValueError("model.hidden_dim must be divisible by model.n_heads")
        if self.repeat_head and self.loss != "full_ce":
            raise ValueError("model.repeat_head needs loss full_ce (the repeat/explore mixture "
                             "needs normalised next-item probabilities); set repeat_head: false")
        if self.explore_novel and not self.repeat_head:
            raise ValueError("model.explore_novel needs repeat_head (it restricts the explore "
                             "part of the repeat/explore mixture to items outside the history)")
        if self.transition_top_k and self.loss != "full_ce":
            raise ValueError("model.transition_top_k needs loss full_ce (the prior is added to "
                             "every item's score); set transition_top_k: 0")
        return self


class PretrainParams(Section):
    epochs: int = Field(default=3, gt=0)
    balance_types: bool = False
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=50, ge=0)
    val_every_n_epochs: int = Field(default=1, gt=0)
    max_time_minutes: float | None = Field(default=None, gt=0)
    horizon: int = Field(default=1, ge=1)
    explore_steps: int = Field(default=0, ge=0)


class FinetuneParams(Section):
    epochs: int = Field(default=5, gt=0)
    batch_size: int = Field(default=128, gt=0)
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=50, ge=0)
    freeze: Literal["none", "embeddings", "all_but_top_k"] = "none"
    unfreeze_top_k: int = Field(default=1, ge=0)
    purchase_loss_weight: float = Field(default=0.5, ge=0)
    patience: int = Field(default=3, gt=0)
    val_every_n_epochs: int = Field(default=1, gt=0)
    max_time_minutes: float | None = Field(default=None, gt=0)
    checkpoint_every_n_steps: int = Field(default=100, gt=0)
    calibrate_gate: bool = False


class TrainerParams(Section):
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(default=1, gt=0)
    strategy: str = "auto"
    precision: str = "auto"
    gradient_clip_val: float = Field(default=1.0, ge=0)
    seed: int = 42
    deterministic: bool = True
    num_workers: int = Field(default=0, ge=0)
    limit_train_batches: float | int = 1.0
    limit_val_batches: float | int = 1.0
    float32_matmul_precision: Literal["highest", "high", "medium"] = "high"
    cpu_threads: int | None = Field(default=None, gt=0)


class EvaluateParams(Section):
    ks: list[int] = Field(default_factory=lambda: [5, 10, 20])
    exclude_history: bool = False
    recent_days: float = Field(default=7.0, gt=0)
    batch_size: int = Field(default=1024, gt=0)
    head_item_share: float = Field(default=0.2, gt=0, lt=1)
    short_history_max: int = Field(default=5, gt=0)
    report_k: int = Field(default=10, gt=0)

    @model_validator(mode="after")
    def _check(self) -> EvaluateParams:
        if not self.ks or min(self.ks) <= 0:
            raise ValueError("evaluate.ks must be a non-empty list of positive cut-offs")
        if self.report_k not in self.ks:
            raise ValueError(f"evaluate.report_k={self.report_k} must be one of evaluate.ks")
        return self


class RetrainParams(Section):
    """Where training starts: today's full rebuild, or warm from a registered model."""

    init: Literal["scratch", "pretrained", "champion"] = "pretrained"
    init_from: str | None = "data/champion_model"
    warm_pretrain_epochs: int = Field(default=0, ge=0)
    window_days: float | None = Field(default=None, gt=0)
    dag_init: Literal["pretrained", "champion"] = "champion"
    rebuild_every_n_runs: int | None = Field(default=4, gt=0)


class DriftParams(Section):
    """Thresholds of the drift report (new snapshot against the champion's training data)."""

    window_days: float | None = Field(default=7.0, gt=0)
    max_unseen_item_share: float = Field(default=0.2, ge=0, le=1)
    max_item_js: float = Field(default=0.18, ge=0, le=1)
    max_category_js: float = Field(default=0.03, ge=0, le=1)
    max_event_type_js: float = Field(default=0.01, ge=0, le=1)
    max_volume_ratio: float = Field(default=3.0, ge=1)
    min_returning_user_share: float = Field(default=0.2, ge=0, le=1)

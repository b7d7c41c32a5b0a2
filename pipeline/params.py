"""Typed loader for `params.yaml`: the one source of truth for every knob.

Every section is a frozen pydantic model with `extra="forbid"`, so a typo in
`params.yaml` is an error naming the key instead of a silently ignored setting.
Paths of stage outputs are *not* params: `dvc.yaml` passes them as arguments.

    python -m pipeline params            # print the resolved params as JSON
    python -m pipeline params --schema   # print the JSON schema
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import SeqrecError
from pipeline.params_sections import (  # re-exported: `from pipeline.params import DataParams`
    CANONICAL_COLUMNS,
    DataParams,
    DriftParams,
    EvaluateParams,
    FinetuneParams,
    ModelParams,
    PretrainParams,
    RetrainParams,
    Section,
    SequencesParams,
    SyntheticParams,
    TrainerParams,
    ValidateParams,
)

DEFAULT_PARAMS_PATH = Path("params.yaml")
__all__ = [
    "CANONICAL_COLUMNS", "DataParams", "DriftParams", "EvaluateParams", "FinetuneParams",
    "ModelParams",
    "PretrainParams", "SequencesParams", "SyntheticParams", "TrainerParams", "ValidateParams",
    "AirflowParams", "GateParams", "Params", "ParamsError", "RegistryParams", "ReproduceParams",
    "RetrainParams",
    "load_params", "parse_params", "params_schema",
]


class ParamsError(SeqrecError):
    """`params.yaml` is missing, unreadable or does not match the schema."""


class RegistryParams(Section):
    model_name: str = "seqrec"
    experiment: str = "seqrec"
    default_k: int = Field(default=10, gt=0)
    max_k: int = Field(default=100, gt=0)
    default_event_type: str = "view"
    serve_batch_size: int = Field(default=1024, gt=0)
    serve_threads: int = Field(default=1, ge=0)
    serve_workers: int = Field(default=2, gt=0)
    serve_variant: Literal["fp32", "int8", "compiled"] = "fp32"
    card_max_slices: int = Field(default=12, ge=0)

    @model_validator(mode="after")
    def _check(self) -> RegistryParams:
        if self.default_k > self.max_k:
            raise ValueError("registry.default_k must not exceed registry.max_k")
        return self


class GateParams(Section):
    primary_metric: str = "ndcg@10"
    min_improvement: float = 0.0
    guard_tolerances: dict[str, float] = Field(default_factory=lambda: {"hr@10": 0.01})
    baseline_margin: float = 0.0
    baselines: list[str] | None = None
    require_approval: bool = True
    approval_via: Literal["mlflow", "airflow"] = "mlflow"
    approval_timeout_hours: float = Field(default=72.0, gt=0)
    approval_poke_interval_s: float = Field(default=60.0, gt=0)


class AirflowParams(Section):
    schedule: str | None = "@weekly"
    landing_dir: str = "data/landing"
    workspace_root: str = "workspaces"
    pipeline_command: str = "dvc repro"
    drift_command: str = "dvc repro drift"
    retries: int = Field(default=2, ge=0)
    retry_delay_minutes: float = Field(default=5.0, gt=0)
    pipeline_timeout_minutes: float = Field(default=240.0, gt=0)
    task_timeout_minutes: float = Field(default=30.0, gt=0)
    max_retry_delay_minutes: float = Field(default=60.0, gt=0)
    landing_source: str | None = None
    snapshot: Literal["all", "new"] = "all"
    trigger_on_asset: bool = False
    cli_command: str | None = None


class ReproduceParams(Section):
    tolerance: float = Field(default=1e-4, ge=0)
    metrics: list[str] | None = None
    command: str = "dvc repro --force"
    workdir: str | None = None


class Params(Section):
    data: DataParams = Field(default_factory=DataParams)
    synthetic: SyntheticParams = Field(default_factory=SyntheticParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    sequences: SequencesParams = Field(default_factory=SequencesParams)
    model: ModelParams = Field(default_factory=ModelParams)
    pretrain: PretrainParams = Field(default_factory=PretrainParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    trainer: TrainerParams = Field(default_factory=TrainerParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    registry: RegistryParams = Field(default_factory=RegistryParams)
    gate: GateParams = Field(default_factory=GateParams)
    airflow: AirflowParams = Field(default_factory=AirflowParams)
    reproduce: ReproduceParams = Field(default_factory=ReproduceParams)
    retrain: RetrainParams = Field(default_factory=RetrainParams)
    drift: DriftParams = Field(default_factory=DriftParams)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _check_gate(self) -> Params:
        if self.finetune.calibrate_gate and not self.model.repeat_head:
            raise ValueError("finetune.calibrate_gate needs model.repeat_head (it shifts the "
                             "repeat/explore gate); set calibrate_gate: false")
        return self


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        key = key.replace("validate_", "validate")
        lines.append(f"{source}: {key}: {err['msg']}")
    return "\n".join(lines)


def parse_params(raw: dict | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping; errors name the offending key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        raise ParamsError(_format_errors(exc, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS_PATH) -> Params:
    """Read and validate `params.yaml` (or another file with the same schema)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return parse_params(raw, str(path))


def params_schema() -> dict:
    """JSON schema of `params.yaml`."""
    return Params.model_json_schema(by_alias=True)

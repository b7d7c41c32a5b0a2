"""Promotion gate: may a freshly trained model challenge the champion?

A pure function of three JSON documents and the `gate` params, so the rule is unit-tested
without Airflow or MLflow:

- the challenger's `reports/eval.json` (`{"model": {...}, "baselines": {...}, ...}`),
- the champion's metrics on the *same* new test split (the evaluate CLI run on
  `models:/<name>@champion`), or None on the first run,
- `reports/validation/summary.json` from the validate stage.

Rules, all of which must hold:
1. validation passed: no batch rule failed and every input row is accounted for;
2. with a champion: `challenger[primary] - champion[primary] >= gate.min_improvement` (so the
   default 0.0 lets an equal model through to the approval step; set a small positive value
   to demand a real gain, a negative one to accept a bounded drop); each guard metric may
   drop by at most its tolerance in `gate.guard_tolerances`;
3. without a champion: `model[primary] - best_baseline[primary] >= gate.baseline_margin`,
   the best among `gate.baselines` (all baselines in eval.json when null).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import SeqrecError
from pipeline.params import GateParams

PASSED = "pass"
FAILED = "fail"


class GateError(SeqrecError):
    """A metrics file the gate needs is missing or lacks a metric."""


@dataclass(frozen=True)
class Check:
    """One rule of the gate with the numbers it was decided on."""

    name: str
    passed: bool
    detail: str
    value: float | None = None
    reference: float | None = None
    threshold: float | None = None


@dataclass
class GateReport:
    """What the gate decided and why; written as `reports/gate.json` and logged to MLflow."""

    decision: str
    primary_metric: str
    reasons: list[str]
    checks: list[Check]
    challenger: dict[str, float]
    champion: dict[str, float] | None
    best_baseline: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    decided_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def passed(self) -> bool:
        return self.decision == PASSED

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a metrics JSON; a missing or broken file is a one-line GateError naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateError(f"{path}: metrics file not found") from None
    except json.JSONDecodeError as exc:
        raise GateError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise GateError(f"{path}: top level must be an object")
    return data


def _metric(metrics: dict[str, Any], name: str, where: str) -> float:
    try:
        return float(metrics[name])
    except KeyError:
        raise GateError(f"{where}: metric {name!r} missing (have {sorted(metrics)})") from None
    except (TypeError, ValueError):
        raise GateError(f"{where}: metric {name!r} is not a number: {metrics[name]!r}") from None


def _model_metrics(evaluation: dict[str, Any], where: str) -> dict[str, float]:
    model = evaluation.get("model")
    if not isinstance(model, dict):
        raise GateError(f"{where}: key 'model' with the model's metrics is missing")
    return {k: float(v) for k, v in model.items() if isinstance(v, int | float)}


def validation_check(validation: dict[str, Any] | None) -> Check:
    """Validation passed: the file exists, rows add up, and no batch rule failed.

    Accepts the validate stage's `summary.json` (or a metrics file): `batch_passed` (bool or
    0/1), `success`/`passed` when present, and batch rule results (`batch` or `batch_rules`)
    as a list or mapping of objects with `passed`/`success`.
    """
    if validation is None:
        return Check("validation", False, "the validation summary is missing")
    failed: list[str] = []
    for flag in ("batch_passed", "success", "passed"):  # bool, or 0/1 in a metrics file
        if flag in validation and not validation[flag]:
            failed.append(f"{flag}={validation[flag]}")
    failed_rules = validation.get("failed_rules")
    if isinstance(failed_rules, list) and failed_rules:
        failed.append("failed rules " + ", ".join(map(str, failed_rules)))
    rules = validation.get("batch_rules") or validation.get("batch") or []
    items = rules.items() if isinstance(rules, dict) else enumerate(rules)
    for name, result in items:
        if isinstance(result, dict) and (
            result.get("success") is False or result.get("passed") is False
        ):
            failed.append(str(result.get("rule", name)))
    counts = [validation.get(k) for k in ("rows_in", "rows_valid", "rows_quarantined")]
    if all(isinstance(c, int) for c in counts) and counts[0] != counts[1] + counts[2]:
        failed.append(f"rows_in {counts[0]} != rows_valid {counts[1]} + quarantined {counts[2]}")
    if failed:
        return Check("validation", False, "validation failed: " + "; ".join(failed))
    return Check("validation", True, "validation passed")


def _beats(name: str, value: float, reference: float, margin: float, what: str) -> Check:
    delta = value - reference
    passed = delta >= margin
    detail = (
        f"{name}: challenger {value:.4f} vs {what} {reference:.4f}: delta {delta:+.4f} "
        f"{'meets' if passed else 'misses'} the required >= {margin:+.4f}"
    )
    return Check(f"primary:{name}", passed, detail, value, reference, margin)


def _guard(name: str, value: float, reference: float, tolerance: float) -> Check:
    delta = value - reference
    passed = delta >= -tolerance
    verdict = "within" if passed else "regresses beyond"
    detail = (
        f"{name}: challenger {value:.4f} vs champion {reference:.4f} (delta {delta:+.4f}) "
        f"{verdict} tolerance {tolerance:.4f}"
    )
    return Check(f"guard:{name}", passed, detail, value, reference, -tolerance)


def best_baseline(
    evaluation: dict[str, Any], metric: str, names: list[str] | None, where: str
) -> tuple[str, float]:
    """The baseline with the highest `metric` among `names` (all when None)."""
    baselines = evaluation.get("baselines") or {}
    chosen = {k: v for k, v in baselines.items() if names is None or k in names}
    if not chosen:
        raise GateError(f"{where}: no baselines {names or ''} to compare the first model with")
    scores = {k: _metric(v, metric, f"{where}: baselines.{k}") for k, v in chosen.items()}
    name = max(scores, key=scores.__getitem__)
    return name, scores[name]


def decide(
    challenger_eval: dict[str, Any],
    champion_eval: dict[str, Any] | None,
    validation: dict[str, Any] | None,
    gate: GateParams,
    where: str = "reports/eval.json",
) -> GateReport:
    """Apply the gate; returns the report with every check and its numbers."""
    primary = gate.primary_metric
    challenger = _model_metrics(challenger_eval, where)
    value = _metric(challenger, primary, f"{where}: model")
    checks = [validation_check(validation)]
    champion = None
    baseline_name = None
    if champion_eval is not None:
        champion = _model_metrics(champion_eval, "champion metrics")
        reference = _metric(champion, primary, "champion metrics: model")
        checks.append(_beats(primary, value, reference, gate.min_improvement, "champion"))
        for name, tolerance in sorted(gate.guard_tolerances.items()):
            checks.append(
                _guard(
                    name,
                    _metric(challenger, name, f"{where}: model"),
                    _metric(champion, name, "champion metrics: model"),
                    tolerance,
                )
            )
    else:
        baseline_name, reference = best_baseline(challenger_eval, primary, gate.baselines, where)
        what = f"best baseline {baseline_name}"
        checks.append(_beats(primary, value, reference, gate.baseline_margin, what))
    reasons = [c.detail for c in checks if not c.passed]
    return GateReport(
        decision=PASSED if not reasons else FAILED,
        primary_metric=primary,
        reasons=reasons,
        checks=checks,
        challenger=challenger,
        champion=champion,
        best_baseline=baseline_name,
        params=gate.model_dump(),
    )

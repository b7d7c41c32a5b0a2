"""The validate stage's records: `summary.json` (accounting, rules, GX verdicts), the DVC
metrics file, the one-line gate error, and the previous snapshot's volume for `volume_change`.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import InputError
from pipeline.validation.batch_rules import BatchRule

if TYPE_CHECKING:  # validate imports this module
    from pipeline.validation.validate import BatchCheck


HEADLINE_KEYS = ("rows_valid", "rows_quarantined")
PREVIOUS_SUMMARY_FILE = "summary.json"


def read_previous_rows_in(path: str | Path | None) -> int | None:
    """`rows_in` of the previous snapshot's summary; None = no volume check.

    A folder stands for its summary.json; an empty folder (first run, no champion yet) means
    no previous snapshot. A file path must exist.
    """
    if path is None or str(path) == "":
        return None
    if Path(path).is_dir():
        path = Path(path) / PREVIOUS_SUMMARY_FILE
        if not path.is_file():
            return None
    try:
        return int(json.loads(Path(path).read_text(encoding="utf-8"))["rows_in"])
    except FileNotFoundError:
        raise InputError(f"{path}: previous summary not found") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a summary JSON with an integer rows_in") from None


def _number(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _observed(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "none"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def gate_message(events_path: Path, failed: list[BatchRule], metrics: dict,
                 sample_failures: list[str], index_html: Path) -> str:
    """ONE line: each failed rule with observed value, threshold and param, then the report."""
    parts = [f"rule {rule.name}: observed {_observed(metrics[rule.metric])}, threshold "
             f"{rule.threshold()} ({rule.param})" for rule in failed]
    if sample_failures:
        parts.append(f"rule validated_sample: observed {len(sample_failures)} failed "
                     f"expectations ({', '.join(sample_failures[:3])}), threshold 0")
    return f"{events_path}: batch validation failed: {'; '.join(parts)}; report: {index_html}"


def build_summary(check: BatchCheck, passed: dict[str, bool], failures: list[str],
                  pages: list[str], now: datetime, sample_rows: int) -> dict:
    """`summary.json`: accounting, per-rule counts, and every batch rule with GX's verdict."""
    metrics = {key: _number(value) for key, value in check.metrics.items()}
    batch = {
        rule.name: {"passed": passed[rule.name], "observed": metrics[rule.metric],
                    "threshold": rule.threshold(), "param": rule.param}
        for rule in check.rules
    }
    failed = [name for name, ok in passed.items() if not ok]
    return {
        "rows_in": metrics["rows_in"],
        "rows_valid": metrics["rows_valid"],
        "rows_quarantined": metrics["rows_quarantined"],
        "by_stage": check.by_stage,
        "by_rule": check.by_rule,
        "batch_passed": not failed,
        "failed_rules": failed,
        "batch": batch,
        "metrics": metrics,
        "reference_time": now.isoformat(),
        "gx": {"sample_rows": sample_rows, "failed_expectations": failures,
               "index": "index.html", "validation_pages": pages},
    }


def dvc_metrics(summary: dict) -> dict:
    """`metrics/validation.json`: the row accounting only, so `dvc metrics show` stays narrow;
    per-rule counts and every batch rule are in `summary.json` (the gate reads that)."""
    return {key: summary[key] for key in HEADLINE_KEYS}


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")

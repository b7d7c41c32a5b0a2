"""The model card: markdown shown as the model version's description in the MLflow UI.

Sections: metrics against the champion (same test data when the caller scored the champion
on it), baselines, slices, data statistics, lineage and the gate report. Inputs are the JSON
files the pipeline writes (docs/interfaces.md); any of them may be missing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# The registry's description column holds 5000 characters (MLflow's SQL schema); the full
# card is also logged as a run artifact.
MAX_DESCRIPTION_CHARS = 5000
TRUNCATION_NOTE = "\n\n_(truncated: the full card is the run artifact `{artifact}`)_\n"
MAX_GATE_JSON_CHARS = 1500
CARD_METRIC_PRIORITY = ("ndcg@10", "hr@10", "mrr@10")


def read_json(path: str | Path | None) -> dict[str, Any] | None:
    """The JSON object at `path`, or None when no path is given or the file is absent."""
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def model_metrics(scores: dict[str, Any] | None) -> dict[str, float]:
    """Numeric metrics of the model from `eval.json` layout (`{"model": {...}}`) or a flat dict."""
    if not scores:
        return {}
    inner = scores.get("model") if isinstance(scores.get("model"), dict) else scores
    return {k: float(v) for k, v in inner.items() if _is_number(v)}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if _is_number(value):
        if isinstance(value, float) and math.isnan(value):
            return "nan"
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    return str(value)


def _ordered(metrics: list[str]) -> list[str]:
    first = [m for m in CARD_METRIC_PRIORITY if m in metrics]
    return first + sorted(m for m in metrics if m not in first)


def metrics_section(challenger: dict[str, float], champion: dict[str, float], label: str) -> str:
    if not challenger:
        return "## Metrics\n\nNo evaluation metrics were given.\n"
    lines = [
        "## Metrics vs champion",
        "",
        f"| metric | challenger | {label} | Δ |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in _ordered(list(challenger)):
        ours, theirs = challenger[name], champion.get(name)
        delta = None if theirs is None else ours - theirs
        sign = "" if delta is None or delta < 0 else "+"
        lines.append(
            f"| {name} | {_fmt(ours)} | {_fmt(theirs)} | "
            f"{'—' if delta is None else sign + f'{delta:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def table_section(title: str, rows: dict[str, Any], max_rows: int) -> str:
    """A `name | metric...` table of nested metric dicts (baselines, slices)."""
    flat = _flatten_rows(rows)
    if not flat:
        return ""
    columns = _ordered(sorted({m for metrics in flat.values() for m in metrics}))
    columns = [c for c in columns if c in CARD_METRIC_PRIORITY] or columns[:3]
    lines = [f"## {title}", "", "| | " + " | ".join(columns) + " |"]
    lines.append("| --- |" + " ---: |" * len(columns))
    for name, metrics in list(flat.items())[:max_rows]:
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics.get(c)) for c in columns) + " |")
    if len(flat) > max_rows:
        lines.append(f"\n_{len(flat) - max_rows} more rows in `reports/eval.json`._")
    return "\n".join(lines) + "\n"


def _flatten_rows(rows: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """`{a: {b: {metric: v}}}` -> `{"a/b": {metric: v}}`; leaves are dicts holding numbers."""
    flat: dict[str, dict[str, Any]] = {}
    for name, value in (rows or {}).items():
        if not isinstance(value, dict):
            continue
        numbers = {k: v for k, v in value.items() if _is_number(v)}
        if numbers:
            flat[f"{prefix}{name}"] = numbers
        nested = {k: v for k, v in value.items() if isinstance(v, dict)}
        flat.update(_flatten_rows(nested, prefix=f"{prefix}{name}/"))
    return flat


def key_value_section(title: str, values: dict[str, Any]) -> str:
    scalars = {k: v for k, v in (values or {}).items() if not isinstance(v, dict | list)}
    if not scalars:
        return ""
    lines = [f"## {title}", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
    return "\n".join(lines) + "\n"


def gate_section(report: dict[str, Any] | None) -> str:
    if report is None:
        return ""
    verdict = report.get("passed", report.get("decision"))
    text = json.dumps(report, indent=1, sort_keys=True)
    if len(text) > MAX_GATE_JSON_CHARS:
        text = text[:MAX_GATE_JSON_CHARS] + "\n..."
    head = f"**Verdict:** {_fmt(verdict)}\n\n" if verdict is not None else ""
    return f"## Gate report\n\n{head}```json\n{text}\n```\n"


def approval_section(approval_via: str) -> str:
    """What a reviewer does, in the words of the page they read it on (docs/registry.md)."""
    if approval_via == "auto":
        return ("No approval step (`gate.require_approval: false`): the retrain DAG promotes "
                "a challenger that passes the gate.\n")
    if approval_via == "airflow":
        return ("**To decide:** read this card, then answer the retrain DAG's question in the "
                "Airflow UI (*Required Actions*, task `approve_in_airflow`): **Approve** or "
                "**Reject**. Airflow records who answered.\n")
    return ("**To decide:** in **Tags** below, first add the tag `approved_by` = your name "
            "(Name and Value boxes, **Add**): the MLflow UI records no name, and without it "
            "the record says *unknown (set in the MLflow UI)*. Then click the pencil on the "
            "row `approval` (now `pending`), replace `pending` by `approved` or `rejected` "
            "and click **Save**.\n")


def render(
    model_name: str,
    evaluation: dict[str, Any] | None,
    champion_scores: dict[str, Any] | None,
    champion_label: str,
    data_stats: dict[str, Any] | None,
    lineage: dict[str, str],
    gate_report: dict[str, Any] | None,
    max_slices: int,
    approval_via: str = "mlflow",
) -> str:
    """The full card as markdown; `approval_via` (`gate.approval_via`, or `auto` without an
    approval step) picks the reviewer's instructions."""
    evaluation = evaluation or {}
    parts = [
        f"# {model_name}: model card\n",
        "Next-behaviour transformer (docs/interfaces.md).\n",
        approval_section(approval_via),
        metrics_section(model_metrics(evaluation), model_metrics(champion_scores), champion_label),
        table_section("Baselines", evaluation.get("baselines") or {}, max_slices),
        table_section("Slices", evaluation.get("slices") or {}, max_slices),
        key_value_section("Data", data_stats or {}),
        key_value_section("Lineage", lineage),
        gate_section(gate_report),
    ]
    return "\n".join(part for part in parts if part)


def fit_description(card: str, artifact: str) -> str:
    """`card` cut to the registry's description limit, saying where the rest is."""
    if len(card) <= MAX_DESCRIPTION_CHARS:
        return card
    note = TRUNCATION_NOTE.format(artifact=artifact)
    return card[: MAX_DESCRIPTION_CHARS - len(note)] + note

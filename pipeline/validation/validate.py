"""`validate` stage: row rules -> quarantine, batch rules -> GX gate, Data Docs report.

    python -m pipeline validate --interim data/interim --out data/validated \\
        --quarantine data/quarantine --report reports/validation \\
        --metrics metrics/validation.json [--previous-summary PATH]

Row rules (`pipeline.validation.row_rules`) run vectorised over every event; rejected rows go to
`data/quarantine/rows.parquet` with ingest's parse failures, and the stage goes on.
Batch rules (`pipeline.validation.batch_rules`) are checked by Great Expectations on a one-row
metrics table, plus a GX suite over a sample of the validated events
(`pipeline.validation.expectations`).
A failed batch rule writes the report and summary, then stops the stage with one line
naming the rule, the observed value, the threshold and the report. See docs/validation.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import BatchValidationError, InputError
from pipeline.params import Params, load_params
from pipeline.validation import quarantine
from pipeline.validation.batch_rules import (
    EXPECTED_TYPES,
    BatchRule,
    batch_metrics,
    batch_rules,
    schema_problems,
)
from pipeline.validation.row_rules import ROW_RULES, check_rows
from pipeline.validation.summary import (
    build_summary,
    dvc_metrics,
    gate_message,
    read_previous_rows_in,
    write_json,
)

log = logging.getLogger(__name__)
SCHEMA_RULE = "schema"  # row rule given to every row when the table breaks the contract
SAMPLE_SEED = 0  # fixed: the same input yields the same GX sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interim", required=True, help="ingest's output folder")
    parser.add_argument("--out", required=True, help="folder for the validated events.parquet")
    parser.add_argument("--quarantine", required=True, help="folder for rows.parquet")
    parser.add_argument("--report", required=True, help="Data Docs + summary.json folder")
    parser.add_argument("--metrics", required=True, help="DVC metrics JSON file")
    parser.add_argument(
        "--previous-summary", default=None,
        help="summary.json of the previous snapshot, or a folder holding one (enables the "
        "volume_change rule); default: validate.previous_summary",
    )


@dataclass(frozen=True)
class BatchCheck:
    """Everything the row pass and the metrics produce, before GX has its say."""

    valid: pa.Table
    quarantined: pa.Table
    metrics: dict
    rules: list[BatchRule]
    by_rule: dict[str, int]
    by_stage: dict[str, int]
    schema_ok: bool


def reference_time(value: str | None) -> datetime:
    """`validate.reference_time` as an aware UTC datetime; None = now."""
    if value is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def check_batch(
    events: pa.Table,
    ingest_quarantine: pa.Table,
    params: Params,
    now: datetime,
    previous_rows_in: int | None,
) -> BatchCheck:
    """Pure part of the stage: split rows into valid and quarantined, compute batch metrics."""
    vp = params.validate_
    problems = schema_problems(events.schema)
    if problems:  # row rules need the contract's columns: reject all, let the gate say why
        rejected_rows = np.arange(events.num_rows)
        rules = np.full(events.num_rows, SCHEMA_RULE, dtype=object)
        details = np.full(events.num_rows, "columns break the contract: " + "; ".join(problems),
                          dtype=object)
        valid_mask = np.zeros(events.num_rows, dtype=bool)
        row_counts = {SCHEMA_RULE: events.num_rows}
    else:
        row_check = check_rows(events, vp, params.data.event_types, now)
        valid_mask = row_check.valid_mask
        rejected_rows = np.flatnonzero(row_check.codes)
        rules = np.asarray(ROW_RULES, dtype=object)[row_check.codes[rejected_rows] - 1]
        details = row_check.details.loc[rejected_rows].to_numpy(dtype=object)
        row_counts = row_check.counts()
    rejected = quarantine.from_validate(events, rejected_rows, rules, details)
    quarantined = pa.concat_tables([ingest_quarantine, rejected])
    by_rule = dict(pd.Series(ingest_quarantine["rule"].to_numpy(zero_copy_only=False))
                   .value_counts().sort_index().astype(int))
    for rule, count in row_counts.items():
        by_rule[rule] = by_rule.get(rule, 0) + count
    rows_in = events.num_rows + ingest_quarantine.num_rows
    metrics = batch_metrics(events, valid_mask, rows_in, quarantined.num_rows, now,
                            previous_rows_in)
    return BatchCheck(
        valid=events.filter(pa.array(valid_mask)),
        quarantined=quarantined,
        metrics=metrics,
        rules=batch_rules(vp, has_previous=previous_rows_in is not None),
        by_rule={k: int(v) for k, v in by_rule.items()},
        by_stage={"ingest": ingest_quarantine.num_rows, "validate": rejected.num_rows},
        schema_ok=not problems,
    )


def read_interim(folder: Path) -> tuple[pa.Table, pa.Table]:
    """Events and ingest's quarantine, checked against ingest's own counts."""
    events_path, quarantine_path = folder / "events.parquet", folder / "quarantine.parquet"
    summary_path = folder / "summary.json"
    if not events_path.is_file():
        raise InputError(f"{events_path}: not found (run `python -m pipeline ingest` first)")
    try:
        events = pq.read_table(events_path)
        ingest_q = pq.read_table(quarantine_path) if quarantine_path.is_file() else None
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{folder}: unreadable parquet: {exc}") from None
    ingest_q = (quarantine.from_ingest(ingest_q, events.schema, str(quarantine_path))
                if ingest_q is not None else quarantine.empty(events.schema))
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        for key, actual, where in (("rows_parsed", events.num_rows, events_path),
                                   ("rows_quarantined", ingest_q.num_rows, quarantine_path)):
            if key in summary and int(summary[key]) != actual:
                raise InputError(f"{summary_path}: {key} = {summary[key]} but {where} has "
                                 f"{actual} rows (ingest's accounting is broken)")
    return events, ingest_q


def gx_sample(valid: pa.Table, n_rows: int) -> pd.DataFrame:
    """A seeded random sample of the validated events, as pandas, for the GX sample suite."""
    columns = [c for c in EXPECTED_TYPES if c in valid.schema.names]
    if valid.num_rows > n_rows:
        rng = np.random.default_rng(SAMPLE_SEED)
        rows = np.sort(rng.choice(valid.num_rows, size=n_rows, replace=False))
        valid = valid.select(columns).take(pa.array(rows))
    return valid.select(columns).to_pandas()


def run(args: argparse.Namespace) -> int:
    from pipeline.validation.catalog import validate_catalog
    from pipeline.validation.expectations import SAMPLE_RULE, SampleSpec, run_expectations

    params = load_params(args.params)
    vp = params.validate_
    now = reference_time(vp.reference_time)
    started = time.perf_counter()
    timings_s: dict[str, float] = {}

    def lap(name: str) -> None:
        timings_s[name] = round(time.perf_counter() - started - sum(timings_s.values()), 3)

    interim = Path(args.interim)
    events, ingest_q = read_interim(interim)
    previous_rows_in = read_previous_rows_in(args.previous_summary or vp.previous_summary)
    lap("read")
    check = check_batch(events, ingest_q, params, now, previous_rows_in)
    del events  # the valid subset and the quarantine are all we need from here
    lap("rules")

    report_dir = Path(args.report)
    sample = gx_sample(check.valid, vp.gx_sample_rows) if check.schema_ok else None
    max_ns = pd.Timestamp(now) + pd.Timedelta(hours=vp.future_tolerance_hours)
    spec = SampleSpec(
        event_types=list(params.data.event_types),
        max_id_length=vp.max_id_length,
        min_timestamp=pd.Timestamp(vp.min_timestamp, tz="UTC").isoformat(),
        max_timestamp=max_ns.isoformat(),
    )
    outcome = run_expectations(report_dir, check.rules, check.metrics, sample, spec)
    lap("great_expectations")

    summary = build_summary(check, outcome.passed, outcome.failures, outcome.pages, now,
                            0 if sample is None else len(sample))
    quarantine_dir = Path(args.quarantine)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(check.quarantined, quarantine_dir / "rows.parquet")
    if summary["batch_passed"]:
        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(check.valid, out_dir / "events.parquet")
        catalog = validate_catalog(interim, out_dir, quarantine_dir)
        if catalog is not None:
            summary["catalog"] = catalog
    lap("write")
    summary["timings_s"] = timings_s
    log.debug("validate timings (s): %s", timings_s)
    write_json(report_dir / "summary.json", summary)
    write_json(Path(args.metrics), dvc_metrics(summary))

    if not summary["batch_passed"]:
        failed = [rule for rule in check.rules if not outcome.passed[rule.name]]
        sample_failures = [f.partition(": ")[2] for f in outcome.failures
                           if f.startswith(SAMPLE_RULE + ":")]
        raise BatchValidationError(gate_message(
            interim / "events.parquet", failed, check.metrics, sample_failures,
            outcome.index_html if report_dir.is_absolute() else report_dir / "index.html",
        ))
    catalog_text = ""
    if "catalog" in summary:
        catalog_text = (f"; catalogue {summary['catalog']['rows_valid']} valid, "
                        f"{summary['catalog']['rows_quarantined']} quarantined")
    print(f"validate: {summary['rows_valid']} valid, {summary['rows_quarantined']} quarantined "
          f"of {summary['rows_in']} rows{catalog_text}; report: {report_dir / 'index.html'}")
    return 0

"""validate stage: every row rule and batch rule on tiny broken inputs, the accounting
invariant on each, GX's verdict vs a plain-Python twin, Data Docs content, and the CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import BatchValidationError, InputError
from pipeline.params import load_params, parse_params
from pipeline.validation import validate
from pipeline.validation.batch_rules import batch_rules
from pipeline.validation.row_rules import ROW_RULES
from tests.conftest import run_cli
from tests.validation.fixtures.corpus import (
    EVENTS_SCHEMA,
    REFERENCE_TIME,
    ROW_CASES,
    clean_events,
    ingest_failures,
    with_duplicates,
    with_row_case,
    write_interim,
    write_params,
)


def stage_args(root: Path, previous: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(
        params=str(root / "params.yaml"), interim=str(root / "data/interim"),
        out=str(root / "data/validated"), quarantine=str(root / "data/quarantine"),
        report=str(root / "reports/validation"), metrics=str(root / "metrics/validation.json"),
        previous_summary=None if previous is None else str(previous),
    )


def run_stage(root: Path, events, failures=None, previous: Path | None = None,
              schema=EVENTS_SCHEMA, **validate_params) -> tuple[dict, str | None]:
    """Run the real stage in-process (GX imported once per session); returns
    (summary.json, the batch error message or None)."""
    write_interim(root / "data/interim", events, failures, schema=schema)
    write_params(root / "params.yaml", **validate_params)
    error = None
    try:
        validate.run(stage_args(root, previous))
    except BatchValidationError as exc:
        error = str(exc)
    summary = json.loads((root / "reports/validation/summary.json").read_text())
    assert_accounting(root, summary)
    return summary, error


def assert_accounting(root: Path, summary: dict) -> None:
    """rows_in = rows_valid + rows_quarantined, and the files agree with the summary."""
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    assert sum(summary["by_rule"].values()) == summary["rows_quarantined"]
    assert sum(summary["by_stage"].values()) == summary["rows_quarantined"]
    quarantined = pq.read_table(root / "data/quarantine/rows.parquet")
    assert quarantined.num_rows == summary["rows_quarantined"]
    counts = pd.Series(quarantined["rule"].to_pylist()).value_counts().to_dict()
    assert counts == {rule: n for rule, n in summary["by_rule"].items() if n}
    metrics = json.loads((root / "metrics/validation.json").read_text())
    assert metrics == {k: summary[k] for k in ("rows_valid", "rows_quarantined")}
    validated = root / "data/validated/events.parquet"
    if summary["batch_passed"]:
        assert pq.read_metadata(validated).num_rows == summary["rows_valid"]


def check_in_memory(events: pd.DataFrame, **validate_params):
    params = parse_params({"validate": {"reference_time": REFERENCE_TIME, **validate_params}})
    table = pa.Table.from_pandas(events, schema=EVENTS_SCHEMA, preserve_index=False)
    empty_ingest = validate.quarantine.empty(table.schema)
    now = validate.reference_time(REFERENCE_TIME)
    return validate.check_batch(table, empty_ingest, params, now, None)


# ---- row rules (no GX: fast) ------------------------------------------------------------

@pytest.mark.parametrize("rule", sorted(ROW_CASES))
def test_each_row_rule_quarantines_exactly_its_row(rule):
    row, _ = ROW_CASES[rule]
    check = check_in_memory(with_row_case(clean_events(), rule))
    assert check.by_rule[rule] == 1
    assert sum(check.by_rule.values()) == 1, check.by_rule
    quarantined = check.quarantined.to_pandas()
    assert quarantined["source_row"].tolist() == [row]
    assert quarantined["stage"].tolist() == ["validate"]
    assert quarantined["detail"].iloc[0]
    assert check.valid.num_rows + check.quarantined.num_rows == len(clean_events())
    assert row not in check.valid["source_row"].to_pylist()


def test_every_row_rule_has_a_case():
    assert set(ROW_RULES) == set(ROW_CASES) | {"duplicate_event"}


def test_duplicates_keep_the_first_copy_and_name_it():
    events = with_duplicates(clean_events(), [5, 7, 5])  # row 5 appears three times
    check = check_in_memory(events)
    assert check.by_rule["duplicate_event"] == 3
    quarantined = check.quarantined.to_pandas()
    assert sorted(quarantined["source_row"]) == [120, 121, 122]
    assert {5, 7} <= set(check.valid["source_row"].to_pylist())
    detail = quarantined.set_index("source_row")["detail"]
    assert detail[120].endswith("events.csv:5 (kept)")
    assert detail[122].endswith("events.csv:5 (kept)")


def test_duplicates_are_found_across_parquet_row_groups():
    events = with_duplicates(clean_events(), [2, 3])
    table = pa.Table.from_pandas(events, schema=EVENTS_SCHEMA, preserve_index=False)
    chunked = pa.concat_tables([table.slice(0, 60), table.slice(60)])  # copies in chunk 2
    params = parse_params({"validate": {"reference_time": REFERENCE_TIME}})
    check = validate.check_batch(chunked, validate.quarantine.empty(table.schema), params,
                                 validate.reference_time(REFERENCE_TIME), None)
    assert check.by_rule["duplicate_event"] == 2
    assert check.quarantined["source_row"].to_pylist() == [120, 121]


def test_first_broken_rule_wins_and_row_is_counted_once():
    events = with_row_case(with_row_case(clean_events(), "null_user_id"), "unknown_event_type")
    events.loc[3, "event_type"] = "click"  # row 3: null user AND unknown type
    check = check_in_memory(events)
    assert check.by_rule["null_user_id"] == 1 and check.by_rule["unknown_event_type"] == 1
    assert check.quarantined.num_rows == 2


def test_quarantine_keeps_original_values_as_strings():
    check = check_in_memory(with_row_case(clean_events(), "unknown_event_type"))
    row = check.quarantined.to_pylist()[0]
    assert check.quarantined.schema.field("price").type == pa.string()
    assert row["event_type"] == "click" and row["user_id"] == "u7"
    assert float(row["price"]) == pytest.approx(clean_events()["price"][7])
    assert row["timestamp"].startswith(str(clean_events()["timestamp"][7].date()))


# ---- the stage end to end, in-process (real GX) ------------------------------------------

def test_clean_input_quarantines_nothing_and_keeps_the_schema(tmp_path):
    summary, error = run_stage(tmp_path, clean_events(), max_staleness_days=2,
                               purchase_rate_band=[0.05, 0.2], min_users=12, min_items=5)
    assert error is None and summary["batch_passed"]
    assert summary["rows_quarantined"] == 0 and summary["rows_valid"] == len(clean_events())
    assert {"staleness", "purchase_rate"} <= set(summary["batch"])
    validated = pq.read_table(tmp_path / "data/validated/events.parquet")
    assert validated.schema.equals(EVENTS_SCHEMA)
    assert validated.equals(pq.read_table(tmp_path / "data/interim/events.parquet"))
    assert summary["gx"]["failed_expectations"] == []
    assert len(summary["gx"]["validation_pages"]) == 2  # batch metrics + validated sample


def test_ingest_parse_failures_are_merged_and_counted(tmp_path):
    events = with_row_case(clean_events(), "null_timestamp")
    summary, error = run_stage(tmp_path, events, ingest_failures(4))
    assert error is None
    assert summary["rows_in"] == len(events) + 4
    assert summary["by_stage"] == {"ingest": 4, "validate": 1}
    assert summary["by_rule"]["unparseable_timestamp"] == 4
    rows = pq.read_table(tmp_path / "data/quarantine/rows.parquet").to_pandas()
    ingest_rows = rows[rows["stage"] == "ingest"]
    assert ingest_rows["raw"].str.startswith("garbage line").all()
    assert ingest_rows["user_id"].isna().all()


BATCH_CASES = {
    # rule -> (events, ingest failures, params, observed value in the message)
    "min_rows": (clean_events, 0, {"min_rows": 500}, "observed 120, threshold >= 500"),
    "max_rows": (clean_events, 3, {"max_rows": 100}, "observed 123, threshold <= 100"),
    "quarantine_share": (clean_events, 30, {"max_quarantine_share": 0.1},
                         "observed 0.2, threshold <= 0.1"),
    "min_users": (clean_events, 0, {"min_users": 50}, "observed 12, threshold >= 50"),
    "min_items": (clean_events, 0, {"min_items": 1000}, "threshold >= 1000"),
    "staleness": (clean_events, 0, {"max_staleness_days": 1,
                                    "reference_time": "2026-12-01T00:00:00+00:00"},
                  "threshold <= 1"),
    "purchase_rate": (clean_events, 0, {"purchase_rate_band": [0.3, 0.5]},
                      "observed 0.1, threshold in [0.3, 0.5]"),
}


@pytest.mark.parametrize("rule", sorted(BATCH_CASES))
def test_each_batch_rule_stops_the_stage_after_writing_the_report(tmp_path, rule):
    make_events, n_failures, params, expected = BATCH_CASES[rule]
    summary, error = run_stage(tmp_path, make_events(), ingest_failures(n_failures), **params)
    assert error is not None, f"{rule} did not fail the batch"
    assert f"rule {rule}: " in error and expected in error
    assert str(tmp_path / "reports/validation/index.html") in error
    assert "\n" not in error
    assert summary["failed_rules"] == [rule]
    assert not (tmp_path / "data/validated/events.parquet").exists()
    assert_gx_agrees_with_twin(summary, params)
    assert_data_docs_mark_failed(tmp_path, rule, summary["batch"][rule]["observed"])


def test_empty_input_fails_min_rows_without_crashing(tmp_path):
    summary, error = run_stage(tmp_path, clean_events().iloc[:0])
    assert "rule min_rows: observed 0, threshold >= 1" in error
    assert summary["rows_in"] == 0


def test_category_event_type_is_accepted_and_kept(tmp_path):
    """pandas writes a category column as an arrow dictionary: still the string contract."""
    schema = EVENTS_SCHEMA.set(2, pa.field("event_type", pa.dictionary(pa.int32(), pa.string())))
    events = with_row_case(clean_events(), "unknown_event_type")
    events["event_type"] = events["event_type"].astype("category")
    summary, error = run_stage(tmp_path, events, schema=schema)
    assert error is None and summary["by_rule"]["unknown_event_type"] == 1
    validated = pq.read_table(tmp_path / "data/validated/events.parquet")
    assert pa.types.is_dictionary(validated.schema.field("event_type").type)


def test_volume_change_against_previous_snapshot(tmp_path):
    previous = tmp_path / "previous_summary.json"
    previous.write_text(json.dumps({"rows_in": 1000}))
    summary, error = run_stage(tmp_path, clean_events(), previous=previous)
    assert "rule volume_change: observed 8.333, threshold <= 5" in error
    assert summary["batch"]["volume_change"]["passed"] is False
    previous.write_text(json.dumps({"rows_in": 200}))  # 120 vs 200: within 5x
    summary, error = run_stage(tmp_path, clean_events(), previous=previous)
    assert error is None and summary["batch"]["volume_change"]["passed"] is True


def test_previous_summary_folder_from_params(tmp_path):
    folder = tmp_path / "previous_validation"  # what dvc.yaml declares as a dependency
    folder.mkdir()
    summary, error = run_stage(tmp_path, clean_events(), previous_summary=str(folder))
    assert error is None and "volume_change" not in summary["batch"]  # empty: first run
    (folder / "summary.json").write_text(json.dumps({"rows_in": 1000}))  # the champion's data
    summary, error = run_stage(tmp_path, clean_events(), previous_summary=str(folder))
    assert "rule volume_change: observed 8.333" in error


@pytest.mark.parametrize(("change", "rule", "observed"), [
    ("drop_item_id", "schema.item_id", "missing"),
    ("timestamp_us", "schema.timestamp", "timestamp[us, tz=UTC]"),
    ("naive_timestamp", "schema.timestamp", "timestamp[ns]"),
])
def test_schema_breach_quarantines_everything_and_names_the_column(tmp_path, change, rule,
                                                                    observed):
    events, schema = clean_events(), EVENTS_SCHEMA
    if change == "drop_item_id":
        events = events.drop(columns="item_id")
        schema = schema.remove(schema.get_field_index("item_id"))
    else:
        field = pa.field("timestamp", pa.timestamp("us", tz="UTC") if change == "timestamp_us"
                         else pa.timestamp("ns"))
        schema = schema.set(schema.get_field_index("timestamp"), field)
        if change == "naive_timestamp":
            events["timestamp"] = events["timestamp"].dt.tz_localize(None)
    summary, error = run_stage(tmp_path, events, schema=schema)
    assert f"rule {rule}: observed {observed}" in error
    assert summary["by_rule"] == {"schema": len(events)} and summary["rows_valid"] == 0
    assert rule in summary["failed_rules"]


def test_sample_suite_catches_a_row_pass_that_lets_bad_rows_through(tmp_path, monkeypatch):
    """The GX sample suite is an independent check: break the row pass, GX still objects."""
    import pipeline.validation.row_rules as row_rules

    monkeypatch.setattr(row_rules, "_assign", lambda codes, failing, rule: None)
    events = with_row_case(clean_events(), "unknown_event_type")
    summary, error = run_stage(tmp_path, events)
    assert "rule validated_sample" in error
    assert "expect_column_values_to_be_in_set(event_type)" in error
    assert summary["failed_rules"] == ["validated_sample"]


def assert_gx_agrees_with_twin(summary: dict, params: dict) -> None:
    """GX's verdict on every batch rule equals the plain-Python check of the same bounds."""
    rules = batch_rules(parse_params({"validate": params}).validate_, has_previous=False)
    for rule in rules:
        observed = summary["metrics"][rule.metric]
        twin = rule.passes(float("nan") if observed is None else observed)
        assert summary["batch"][rule.name]["passed"] is twin, rule.name


def assert_data_docs_mark_failed(root: Path, rule: str, observed) -> None:
    """A real GX site: index + a validation page whose row for `rule` has the failed icon
    and the observed value."""
    report = root / "reports/validation"
    index = (report / "index.html").read_text()
    assert "batch_metrics" in index and "validated_events_sample" in index
    page = next((report / "validations/batch_metrics").rglob("*.html")).read_text()
    rows = [r for r in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S) if f"{rule}: " in r]
    assert rows, f"no Data Docs row for {rule}"
    assert "fa-times text-danger" in rows[0]
    if isinstance(observed, int):
        assert f">{observed}<" in rows[0]


# ---- inputs the stage refuses ------------------------------------------------------------

def test_ingest_accounting_mismatch_is_an_input_error(tmp_path):
    write_interim(tmp_path / "data/interim", clean_events())
    summary_path = tmp_path / "data/interim/summary.json"
    summary_path.write_text(json.dumps({"rows_in": 130, "rows_parsed": 125,
                                        "rows_quarantined": 5}))
    write_params(tmp_path / "params.yaml")
    with pytest.raises(InputError, match=r"summary.json: rows_parsed = 125 .* 120 rows"):
        validate.run(stage_args(tmp_path))


def test_missing_events_is_an_input_error(tmp_path):
    write_params(tmp_path / "params.yaml")
    with pytest.raises(InputError, match=r"events.parquet: not found"):
        validate.run(stage_args(tmp_path))


@pytest.mark.parametrize("bad", [{"purchase_rate_band": [0.5, 0.1]},
                                 {"min_timestamp": "yesterday"},
                                 {"reference_time": "soon"}])
def test_bad_validate_params_name_the_key(bad):
    with pytest.raises(Exception, match=next(iter(bad))):
        parse_params({"validate": bad})


def test_repo_params_have_the_reference_time_key():
    from tests.conftest import REPO_ROOT

    assert load_params(REPO_ROOT / "params.yaml").validate_.reference_time is None


# ---- the CLI (subprocess, this checkout) -------------------------------------------------

CLI_ARGS = ("validate", "--interim", "data/interim", "--out", "data/validated",
            "--quarantine", "data/quarantine", "--report", "reports/validation",
            "--metrics", "metrics/validation.json")


def test_cli_batch_failure_is_one_line_exit_1(tmp_path):
    events = with_duplicates(clean_events(), list(range(40)))  # 40 of 160 rows duplicated
    write_interim(tmp_path / "data/interim", events)
    write_params(tmp_path / "params.yaml", max_quarantine_share=0.05)
    proc = run_cli(*CLI_ARGS, cwd=tmp_path, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0] == (
        "error: data/interim/events.parquet: batch validation failed: rule quarantine_share: "
        "observed 0.25, threshold <= 0.05 (validate.max_quarantine_share); "
        "report: reports/validation/index.html"
    )
    summary = json.loads((tmp_path / "reports/validation/summary.json").read_text())
    assert summary["by_rule"]["duplicate_event"] == 40
    assert_accounting(tmp_path, summary)


def test_cli_clean_run_writes_every_output(tmp_path):
    write_interim(tmp_path / "data/interim", clean_events(), ingest_failures(2))
    write_params(tmp_path / "params.yaml")
    proc = run_cli(*CLI_ARGS, cwd=tmp_path)
    assert proc.stderr.strip() == ""
    assert "120 valid, 2 quarantined of 122 rows" in proc.stdout
    metrics = json.loads((tmp_path / "metrics/validation.json").read_text())
    assert metrics == {"rows_valid": 120, "rows_quarantined": 2}
    assert (tmp_path / "reports/validation/index.html").is_file()
    assert np.array_equal(
        pq.read_table(tmp_path / "data/validated/events.parquet")["source_row"].to_numpy(),
        np.arange(120),
    )

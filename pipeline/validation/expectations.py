"""Great Expectations 1.x suites as code, run in an ephemeral context, rendered as Data Docs.

Two suites, each behind a whole-dataframe batch definition, a validation definition and a
checkpoint whose `UpdateDataDocsAction` writes into the report folder:

- `batch_metrics`: the one-row metrics table from `pipeline.validation.batch_rules` (row counts,
  quarantine share, distinct users/items, purchase rate, newest-event age, volume ratio,
  column types). One expectation per batch rule, tagged `meta.rule`, so the gate is GX's
  verdict and the Data Docs show each rule with its observed value.
- `validated_events_sample`: a sample of the validated events (columns, types, value set,
  not-null, id lengths, timestamp range, no duplicates). It re-checks what the vectorised row
  pass promised; a failure here is a bug in that pass and stops the batch too.

GX is imported inside functions only: `python -m pipeline --help` must not pay for it.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from pipeline.validation.batch_rules import EXPECTED_TYPES, BatchRule
from pipeline.validation.row_rules import DUPLICATE_KEY

SITE_NAME = "seqrec_validation"
BATCH_SUITE = "batch_metrics"
SAMPLE_SUITE = "validated_events_sample"
SAMPLE_RULE = "validated_sample"
RESULT_FORMAT = "SUMMARY"
# What GX writes into a site folder; cleared before a build so old runs do not linger.
SITE_ENTRIES = ("index.html", "validations", "expectations", "static")
STRING_COLUMNS = ("user_id", "item_id", "event_type", "source_file")


@dataclass(frozen=True)
class SampleSpec:
    """What every validated row must satisfy (the row rules, restated for GX)."""

    event_types: list[str]
    max_id_length: int
    min_timestamp: str
    max_timestamp: str


@dataclass(frozen=True)
class GxOutcome:
    """GX's verdict per rule and where the Data Docs are.

    Attributes:
        passed: batch rule name (and `validated_sample`) -> GX success.
        failures: failed expectations as `rule: expectation_type(column)` strings.
        index_html: the Data Docs entry page.
        pages: validation result pages, relative to the report folder.
    """

    passed: dict[str, bool]
    failures: list[str]
    index_html: Path
    pages: list[str]


def _import_gx():
    """Import GX quietly: no analytics, and no INFO flood on the stage's stderr (which
    carries its one-line error)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def _context(report_dir: Path):
    """Ephemeral context (in-memory stores) whose only Data Docs site is `report_dir`."""
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "show_how_to_buttons": False,
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(report_dir.resolve()),
        },
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={SITE_NAME: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _batch_suite(rules: list[BatchRule]):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(name=BATCH_SUITE)
    for rule in rules:
        meta = {"rule": rule.name, "param": rule.param}
        description = f"{rule.name}: {rule.meaning} {rule.threshold()} ({rule.param})"
        if rule.allowed is not None:
            expectation = gxe.ExpectColumnValuesToBeInSet(
                column=rule.metric, value_set=list(rule.allowed), meta=meta,
                description=description,
            )
        else:
            # max over a one-row table is the value itself, and the renderer shows it as the
            # observed value; a NaN (a mean over no rows) is observed as null and fails.
            expectation = gxe.ExpectColumnMaxToBeBetween(
                column=rule.metric, min_value=rule.min_value, max_value=rule.max_value,
                meta=meta, description=description,
            )
        suite.add_expectation(expectation)
    return suite


def _sample_suite(spec: SampleSpec):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    meta = {"rule": SAMPLE_RULE}
    suite = gx.ExpectationSuite(name=SAMPLE_SUITE)
    suite.add_expectation(gxe.ExpectTableColumnsToMatchSet(
        column_set=[c for c, allowed in EXPECTED_TYPES.items() if "missing" not in allowed],
        exact_match=False, meta=meta,
    ))
    for column in STRING_COLUMNS:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInTypeList(
            column=column, type_list=["str"], meta=meta))
    # pandas shows a tz-aware datetime column as Timestamp; arrow's unit/tz is checked by
    # the batch suite's schema rules.
    suite.add_expectation(gxe.ExpectColumnValuesToBeOfType(
        column="timestamp", type_="Timestamp", meta=meta))
    for column in ("user_id", "item_id", "event_type", "timestamp"):
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column, meta=meta))
    for column in ("user_id", "item_id"):
        suite.add_expectation(gxe.ExpectColumnValueLengthsToBeBetween(
            column=column, min_value=1, max_value=spec.max_id_length, meta=meta))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(
        column="event_type", value_set=spec.event_types, meta=meta))
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(
        column="timestamp", min_value=spec.min_timestamp, max_value=spec.max_timestamp,
        meta=meta))
    suite.add_expectation(gxe.ExpectCompoundColumnsToBeUnique(
        column_list=list(DUPLICATE_KEY), meta=meta))
    return suite


def _checkpoint(context, source, suite):
    """Dataframe asset + whole-dataframe batch + validation definition + checkpoint."""
    import great_expectations as gx

    batch = source.add_dataframe_asset(suite.name).add_batch_definition_whole_dataframe("all")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=context.suites.add(suite))
    )
    return context.checkpoints.add(gx.Checkpoint(
        name=suite.name,
        validation_definitions=[definition],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])],
        result_format=RESULT_FORMAT,
    ))


def clear_site(report_dir: Path) -> None:
    """Remove a previous build's pages (only what GX writes; nothing else in the folder)."""
    for entry in SITE_ENTRIES:
        path = report_dir / entry
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def gx_frame(sample: pd.DataFrame) -> pd.DataFrame:
    """Strings as Python objects: GX's type check then inspects each value, not the dtype."""
    return sample.astype({c: object for c in STRING_COLUMNS if c in sample.columns})


def run_expectations(
    report_dir: Path,
    rules: list[BatchRule],
    metrics: dict,
    sample: pd.DataFrame | None,
    spec: SampleSpec,
) -> GxOutcome:
    """Run both suites and build the Data Docs site into `report_dir`.

    Args:
        report_dir: the Data Docs folder (created if needed).
        rules: batch rules to check against `metrics`.
        metrics: the one-row metrics table as a dict.
        sample: validated events to re-check, or None to skip that suite (schema failure).
        spec: the row contract for the sample suite.

    Returns:
        GX's verdict per rule and the paths of the Data Docs.
    """
    _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    report_dir.mkdir(parents=True, exist_ok=True)
    clear_site(report_dir)
    context = _context(report_dir)
    run_id = RunIdentifier(run_name="validate", run_time=datetime.now(UTC))
    source = context.data_sources.add_pandas("seqrec")
    runs = [(_checkpoint(context, source, _batch_suite(rules)), pd.DataFrame([metrics]))]
    if sample is not None:
        runs.append((_checkpoint(context, source, _sample_suite(spec)), gx_frame(sample)))

    passed: dict[str, bool] = {}
    failures: list[str] = []
    for checkpoint, frame in runs:
        result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=run_id)
        for suite_result in result.run_results.values():
            for item in suite_result.results:
                config = item.expectation_config
                rule = (config.meta or {}).get("rule", config.type)
                ok = bool(item.success)  # an expectation that raised has success False
                passed[rule] = passed.get(rule, True) and ok
                if not ok:
                    target = config.kwargs.get("column") or config.kwargs.get("column_list", "")
                    failures.append(f"{rule}: {config.type}({target})")
    for rule in rules:
        passed.setdefault(rule.name, False)  # no verdict from GX is no pass
    pages = sorted(
        str(path.relative_to(report_dir)) for path in (report_dir / "validations").rglob("*.html")
    )
    return GxOutcome(passed, failures, report_dir / "index.html", pages)

"""Batch-level rules: the schema contract and the aggregate metrics the gate checks.

The metrics are computed once, vectorised, into a one-row table; Great Expectations then
checks that table (see `pipeline.validation.expectations`), so every batch rule appears in the Data
Docs with its observed value, and the gate decision is GX's decision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.params import ValidateParams
from pipeline.validation.row_rules import as_string

# Arrow types of the canonical events (docs/interfaces.md), as `type_label` prints them.
# "missing" is allowed only where the column itself is optional.
STRING = "string"
EXPECTED_TYPES: dict[str, tuple[str, ...]] = {
    "user_id": (STRING,),
    "item_id": (STRING,),
    "event_type": (STRING,),
    "timestamp": ("timestamp[ns, tz=UTC]",),
    "session_id": (STRING, "null", "missing"),
    "source_file": (STRING,),
    "source_row": ("int64",),
}
UTC_NAMES = ("UTC", "Etc/UTC", "+00:00", "Z")
PURCHASE_EVENT_TYPE = "purchase"
NS_PER_DAY = 86_400 * 10**9
SCHEMA_PREFIX = "schema."


def type_label(arrow_type: pa.DataType | None) -> str:
    """Arrow type as the contract names it: all string encodings are `string`."""
    if arrow_type is None:
        return "missing"
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return STRING
    if pa.types.is_timestamp(arrow_type) and arrow_type.tz in UTC_NAMES:
        return str(pa.timestamp(arrow_type.unit, tz="UTC"))
    return str(arrow_type)


def schema_labels(schema: pa.Schema) -> dict[str, str]:
    """`type.<column>` -> observed type label, for every contract column."""
    return {
        f"type.{name}": type_label(schema.field(name).type if name in schema.names else None)
        for name in EXPECTED_TYPES
    }


def schema_problems(schema: pa.Schema) -> list[str]:
    """Contract columns that are missing or mistyped, as `column: observed` strings."""
    labels = schema_labels(schema)
    return [
        f"{name}: {labels[f'type.{name}']}"
        for name, allowed in EXPECTED_TYPES.items()
        if labels[f"type.{name}"] not in allowed
    ]


@dataclass(frozen=True)
class BatchRule:
    """One batch check: `metric` of the one-row metrics table must lie in the bounds.

    Attributes:
        name: the rule as users see it (summary keys, error message, Data Docs).
        metric: column of the metrics table it reads.
        param: the params key(s) that set the threshold.
        meaning: what the metric is, in the shop's words.
        min_value / max_value: inclusive bounds (None = open).
        allowed: for schema rules, the accepted type labels instead of bounds.
    """

    name: str
    metric: str
    param: str
    meaning: str
    min_value: float | None = None
    max_value: float | None = None
    allowed: tuple[str, ...] | None = None

    def threshold(self) -> str:
        if self.allowed is not None:
            return f"one of {list(self.allowed)}"
        if self.min_value is not None and self.max_value is not None:
            return f"in [{self.min_value:g}, {self.max_value:g}]"
        if self.min_value is not None:
            return f">= {self.min_value:g}"
        return f"<= {self.max_value:g}"

    def passes(self, observed: float | str | None) -> bool:
        """Plain-Python twin of the GX expectation (tests check that both agree)."""
        if self.allowed is not None:
            return observed in self.allowed
        if observed is None or (isinstance(observed, float) and math.isnan(observed)):
            return False
        low_ok = self.min_value is None or observed >= self.min_value
        return low_ok and (self.max_value is None or observed <= self.max_value)


def batch_rules(params: ValidateParams, has_previous: bool) -> list[BatchRule]:
    """The configured batch rules; optional ones appear only when their param is set."""
    rules = [
        BatchRule(
            f"{SCHEMA_PREFIX}{name}", f"type.{name}", "docs/interfaces.md",
            f"arrow type of column {name}", allowed=allowed,
        )
        for name, allowed in EXPECTED_TYPES.items()
    ]
    rules += [
        BatchRule("min_rows", "rows_valid", "validate.min_rows", "valid rows",
                  min_value=params.min_rows),
        BatchRule("max_rows", "rows_in", "validate.max_rows", "input rows",
                  max_value=params.max_rows),
        BatchRule("quarantine_share", "quarantine_share", "validate.max_quarantine_share",
                  "share of input rows quarantined", max_value=params.max_quarantine_share),
        BatchRule("min_users", "users", "validate.min_users", "distinct valid users",
                  min_value=params.min_users),
        BatchRule("min_items", "items", "validate.min_items", "distinct valid items",
                  min_value=params.min_items),
    ]
    if has_previous:
        rules.append(BatchRule(
            "volume_change", "volume_ratio", "validate.max_volume_change",
            "input rows vs the previous snapshot, larger / smaller",
            max_value=params.max_volume_change,
        ))
    if params.max_staleness_days is not None:
        rules.append(BatchRule(
            "staleness", "newest_event_age_days", "validate.max_staleness_days",
            "days from the newest valid event to now", max_value=params.max_staleness_days,
        ))
    if params.purchase_rate_band is not None:
        low, high = params.purchase_rate_band
        rules.append(BatchRule(
            "purchase_rate", "purchase_rate", "validate.purchase_rate_band",
            f"share of valid events of type {PURCHASE_EVENT_TYPE}", min_value=low, max_value=high,
        ))
    return rules


def volume_ratio(rows_in: int, previous_rows_in: int) -> float:
    """Larger over smaller of two row counts (floored at 1 so an empty side is finite)."""
    current, previous = max(rows_in, 1), max(previous_rows_in, 1)
    return max(current, previous) / min(current, previous)


def batch_metrics(
    events: pa.Table,
    valid_mask: np.ndarray,
    rows_in: int,
    rows_quarantined: int,
    now: datetime,
    previous_rows_in: int | None,
) -> dict[str, float | int | str | None]:
    """The one-row metrics table the batch suite checks.

    Args:
        events: the interim events table (all parsed rows).
        valid_mask: (n_rows,) bool, rows that passed every row rule.
        rows_in: input rows, ingest's parse failures included.
        rows_quarantined: rows rejected by ingest or by the row rules.
        now: reference time for the staleness metric (UTC).
        previous_rows_in: `rows_in` of the previous snapshot, if one was given.

    Returns:
        metric name -> value; means over no rows are NaN (and fail their rule).
    """
    metrics: dict[str, float | int | str | None] = dict(schema_labels(events.schema))
    rows_valid = int(valid_mask.sum())
    metrics.update(
        rows_in=rows_in,
        rows_valid=rows_valid,
        rows_quarantined=rows_quarantined,
        quarantine_share=rows_quarantined / rows_in if rows_in else 0.0,
        users=0,
        items=0,
        purchase_rate=math.nan,
        newest_event=None,
        newest_event_age_days=math.nan,
        volume_ratio=None if previous_rows_in is None else volume_ratio(rows_in, previous_rows_in),
    )
    if rows_valid == 0 or schema_problems(events.schema):
        return metrics
    valid = events.select(["user_id", "item_id", "event_type", "timestamp"]).filter(
        pa.array(valid_mask)
    )
    newest = pc.max(valid["timestamp"]).cast(pa.timestamp("ns", tz="UTC"))
    newest_ns = newest.cast(pa.int64()).as_py()
    purchases = pc.sum(pc.equal(valid["event_type"].cast(pa.string()), PURCHASE_EVENT_TYPE))
    metrics.update(
        users=pc.count_distinct(as_string(valid["user_id"])).as_py(),
        items=pc.count_distinct(as_string(valid["item_id"])).as_py(),
        purchase_rate=(purchases.as_py() or 0) / rows_valid,
        newest_event=newest.as_py().isoformat(),
        newest_event_age_days=(pd.Timestamp(now).value - newest_ns) / NS_PER_DAY,
    )
    return metrics

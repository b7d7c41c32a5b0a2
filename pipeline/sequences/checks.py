"""Great Expectations suite on the built sequences.

GX runs on a one-row frame of aggregates computed with Arrow kernels from the output
tables (min/max lengths, token ranges, time order, cut-offs, OOV share), not on the rows
themselves: the aggregates are exact, so nothing is sampled away, and the suite takes the
same fraction of a second at 10M events as at 10. Each expectation carries its rule name
in `meta`; a failure stops the stage with one line naming rule, observed value and bound.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import BatchValidationError
from pipeline.sequences.vocab import FIRST_ITEM_TOKEN

SUITE_NAME = "seqrec_sequences"
SEQUENCE_PREFIX = {"train": "", "val": "history_", "test": "history_"}


@dataclass(frozen=True)
class Rule:
    """`min_value <= frame[column] <= max_value` (None = unbounded)."""

    name: str
    column: str
    min_value: float | None = None
    max_value: float | None = None

    def bound(self) -> str:
        low = "-inf" if self.min_value is None else f"{self.min_value:g}"
        high = "inf" if self.max_value is None else f"{self.max_value:g}"
        return f"[{low}, {high}]"


def _max(array) -> int | None:
    return pc.max(array).as_py() if len(array) else None


def _min(array) -> int | None:
    return pc.min(array).as_py() if len(array) else None


def _last_values(lists: pa.ChunkedArray) -> pa.Array:
    """Last element of each non-empty list."""
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    ends = np.cumsum(lengths)  # one past each row's last element in the flattened values
    return pc.list_flatten(lists).take(pa.array(ends[lengths > 0] - 1))


def aggregates(tables: dict[str, pa.Table], meta: dict) -> tuple[dict, list[Rule]]:
    """The one-row frame's values and the rules to check on them."""
    max_len, vocab_size = meta["max_len"], meta["vocab_size"]
    values: dict[str, int | float | None] = {}
    rules: list[Rule] = []
    for split, table in tables.items():
        prefix = SEQUENCE_PREFIX[split]
        lengths = pc.list_value_length(table.column(f"{prefix}items"))
        tokens = pc.list_flatten(table.column(f"{prefix}items"))
        limit = max_len + 1 if split == "train" else max_len
        values[f"{split}_rows"] = table.num_rows
        values[f"{split}_min_length"] = _min(lengths)
        values[f"{split}_max_length"] = _max(lengths)
        values[f"{split}_min_token"] = _min(tokens)
        values[f"{split}_max_token"] = _max(tokens)
        rules += [
            Rule("split_not_empty", f"{split}_rows", 1),
            Rule("no_empty_sequences", f"{split}_min_length", 1),
            Rule("length_within_max_len", f"{split}_max_length", 1, limit),
            Rule("tokens_are_items", f"{split}_min_token", FIRST_ITEM_TOKEN),
            Rule("tokens_in_vocabulary", f"{split}_max_token", None, vocab_size - 1),
        ]
        if split != "train":
            target = table.column("target_item")
            values[f"{split}_min_target"] = _min(target)
            values[f"{split}_max_target"] = _max(target)
            last_ts = _last_values(table.column("history_ts"))
            with_history = table.filter(pc.greater(pc.list_value_length(table["history_ts"]), 0))
            gap = pc.subtract(last_ts, with_history.column("target_ts").combine_chunks())
            values[f"{split}_max_history_minus_target_ts"] = _max(gap)
            rules += [
                Rule("target_is_item", f"{split}_min_target", FIRST_ITEM_TOKEN),
                Rule("target_in_vocabulary", f"{split}_max_target", None, vocab_size - 1),
                Rule("history_before_target", f"{split}_max_history_minus_target_ts", None, 0),
            ]
    if meta["split"] == "temporal":
        cut = meta["cutoffs"]
        values["train_max_ts"] = _max(pc.list_flatten(tables["train"].column("ts")))
        values["val_min_target_ts"] = _min(tables["val"].column("target_ts"))
        values["val_max_target_ts"] = _max(tables["val"].column("target_ts"))
        values["test_min_target_ts"] = _min(tables["test"].column("target_ts"))
        rules += [
            Rule("train_before_val_cutoff", "train_max_ts", None, cut["val_cutoff"] - 1),
            Rule("val_targets_in_val_window", "val_min_target_ts", cut["val_cutoff"]),
            Rule("val_targets_in_val_window", "val_max_target_ts", None, cut["test_cutoff"] - 1),
            Rule("test_targets_in_test_window", "test_min_target_ts", cut["test_cutoff"]),
        ]
    else:  # leave-one-out: a user's train events end at or before their val target
        train_last = pa.table(
            {
                "user_id": tables["train"].column("user_id"),
                "train_last_ts": _last_values(tables["train"].column("ts")),
            }
        )
        val = tables["val"].select(["user_id", "target_ts"])
        joined = train_last.join(val, "user_id", join_type="inner")
        values["max_train_minus_val_target_ts"] = _max(
            pc.subtract(joined.column("train_last_ts"), joined.column("target_ts"))
        )
        rules.append(Rule("train_before_val_target", "max_train_minus_val_target_ts", None, 0))
    if meta.get("previous_vocab_items") is not None:
        values["oov_share"] = meta["oov_share"]
        rules.append(Rule("oov_share", "oov_share", 0, meta["max_oov_share"]))
    # An empty split has no min/max: `split_not_empty` alone reports it.
    return values, [rule for rule in rules if values[rule.column] is not None]


def _run_suite(values: dict, rules: list[Rule]) -> dict[int, bool]:
    """Validate the frame with a GX 1.x ephemeral context; {rule position: success}."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("sequences")
        .add_dataframe_asset("aggregates")
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": pd.DataFrame([values])})
    )
    suite = gx.ExpectationSuite(name=SUITE_NAME)
    for position, rule in enumerate(rules):
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column=rule.column,
                min_value=rule.min_value,
                max_value=rule.max_value,
                meta={"rule": rule.name, "position": position},
            )
        )
    result = batch.validate(suite)
    return {int(r.expectation_config.meta["position"]): bool(r.success) for r in result.results}


def check_sequences(tables: dict[str, pa.Table], meta: dict) -> dict[str, bool]:
    """Run the suite; returns {rule: passed} or raises on the first failures.

    Raises:
        BatchValidationError: one line naming each failed rule, observed value and bound.
    """
    values, rules = aggregates(tables, meta)
    outcomes = _run_suite(values, rules)
    failures, passed = [], {}
    for position, rule in enumerate(rules):
        ok = outcomes[position]
        passed[rule.name] = passed.get(rule.name, True) and ok
        if not ok:
            failures.append(
                f"rule {rule.name} failed: observed {rule.column}={values[rule.column]}, "
                f"allowed {rule.bound()}"
            )
    if failures:
        raise BatchValidationError(f"sequence suite {SUITE_NAME}: " + "; ".join(failures))
    return passed

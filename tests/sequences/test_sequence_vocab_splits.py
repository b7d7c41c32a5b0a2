"""Vocabulary stability, the temporal split, the GX sequence suite and the CLI."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.errors import BatchValidationError, InputError
from pipeline.sequences.build import build_sequences
from pipeline.sequences.checks import check_sequences
from pipeline.sequences.vocab import FIRST_ITEM_TOKEN, read_vocab, resolve_vocab_path
from tests.conftest import run_cli
from tests.sequences.helpers import (
    DAY_S,
    EVENT_TYPES,
    events_table,
    items_of,
    loose_params,
    row_of,
    user_items,
)

SNAPSHOT_1 = [
    ("u1", "b", "purchase", 1 * DAY_S),
    ("u1", "a", "purchase", 2 * DAY_S),
    ("u2", "c", "purchase", 1 * DAY_S),
    ("u2", "b", "purchase", 3 * DAY_S),
    ("u2", "a", "purchase", 4 * DAY_S),
]
# Snapshot 2 drops item c, keeps a and b, adds z (day 5), y and x (both day 6; x < y by id).
SNAPSHOT_2 = [
    ("u1", "a", "purchase", 2 * DAY_S),
    ("u1", "y", "purchase", 6 * DAY_S),
    ("u3", "x", "purchase", 6 * DAY_S),
    ("u3", "z", "purchase", 5 * DAY_S),
    ("u3", "b", "purchase", 7 * DAY_S),
]


def test_vocabulary_is_stable_across_snapshots_and_appends_new_items(tmp_path):
    first = build_sequences(events_table(SNAPSHOT_1), loose_params(), EVENT_TYPES)
    # First build: order of first appearance (day 1: b and c, tie broken by id), then a.
    assert first.vocab["item_id"].to_pylist() == ["b", "c", "a"]
    assert first.vocab["index"].to_pylist() == [3, 4, 5]
    pq.write_table(first.vocab, tmp_path / "vocab.parquet")

    previous = read_vocab(resolve_vocab_path(tmp_path))
    second = build_sequences(events_table(SNAPSHOT_2), loose_params(), EVENT_TYPES, previous)
    index = dict(
        zip(second.vocab["item_id"].to_pylist(), second.vocab["index"].to_pylist(), strict=True)
    )
    assert {item: index[item] for item in ("b", "c", "a")} == {"b": 3, "c": 4, "a": 5}
    assert [index[item] for item in ("z", "x", "y")] == [6, 7, 8]
    assert second.meta["vocab_size"] == 9 and second.meta["n_items"] == 6
    assert second.stats["new_items"] == 3
    assert second.meta["oov_share"] == pytest.approx(3 / 5)
    # Tokens in the tables go through the same vocabulary.
    assert user_items(second.tables["test"], second.vocab, "u3", "target_item") == "b"
    assert user_items(second.tables["test"], second.vocab, "u3", "history_items") == ["z", "x"]


def test_rebuild_without_previous_vocab_is_deterministic():
    one = build_sequences(events_table(SNAPSHOT_2), loose_params(), EVENT_TYPES)
    shuffled = events_table(SNAPSHOT_2, order=[4, 2, 0, 3, 1])
    two = build_sequences(shuffled, loose_params(), EVENT_TYPES)
    assert one.vocab.equals(two.vocab)
    assert all(one.tables[s].equals(two.tables[s]) for s in one.tables)


def test_bad_previous_vocab_is_an_input_error(tmp_path):
    path = tmp_path / "vocab.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "index": pa.array([3, 3], pa.int32())}), path)
    with pytest.raises(InputError, match="duplicate index"):
        read_vocab(path)
    pq.write_table(pa.table({"item_id": ["a"], "index": pa.array([1], pa.int32())}), path)
    with pytest.raises(InputError, match="reserved"):
        read_vocab(path)
    with pytest.raises(InputError, match="not found"):
        resolve_vocab_path(tmp_path / "missing.parquet")
    (tmp_path / "empty").mkdir()
    assert resolve_vocab_path(tmp_path / "empty") is None


def test_oov_share_above_the_threshold_stops_the_stage(tmp_path):
    first = build_sequences(events_table(SNAPSHOT_1), loose_params(), EVENT_TYPES)
    build = build_sequences(
        events_table(SNAPSHOT_2), loose_params(max_oov_share=0.5), EVENT_TYPES, first.vocab
    )
    with pytest.raises(
        BatchValidationError, match=r"rule oov_share failed: observed oov_share=0\.6"
    ):
        check_sequences(build.tables, build.meta)


# Temporal: data ends on day 10; test window = day 10, val window = day 9 (1 day each).
TEMPORAL_ROWS = [
    ("u1", "a", "view", 1 * DAY_S),
    ("u1", "b", "cart", 5 * DAY_S),
    ("u1", "c", "view", 9 * DAY_S),
    ("u1", "d", "cart", 9 * DAY_S + 60),
    ("u1", "e", "purchase", 9 * DAY_S + 120),
    ("u1", "f", "purchase", 10 * DAY_S),
    ("u2", "a", "view", 2 * DAY_S),
    ("u2", "c", "purchase", 11 * DAY_S - 1),  # the newest event: the data ends with day 10
    ("u3", "b", "cart", 9 * DAY_S),  # first event of u3: no history, dropped
]


def temporal_params(**overrides):
    return loose_params(split="temporal", val_days=1, test_days=1, **overrides)


def test_temporal_split_windows_histories_and_no_leak():
    build = build_sequences(events_table(TEMPORAL_ROWS), temporal_params(), EVENT_TYPES)
    cut = build.meta["cutoffs"]
    assert cut == {"val_cutoff": 9 * DAY_S, "test_cutoff": 10 * DAY_S, "end": 11 * DAY_S}
    train, val, test = (build.tables[s] for s in ("train", "val", "test"))
    assert pc.max(pc.list_flatten(train["ts"])).as_py() < cut["val_cutoff"]
    assert user_items(train, build.vocab, "u1", "items") == ["a", "b"]  # c is at the cut-off
    # val: d and e (targets in the window); e's history includes the earlier val event d.
    assert items_of(val, build.vocab, "target_item") == ["d", "e"]
    assert val["history_items"].to_pylist()[1][-1] == val["target_item"].to_pylist()[0]
    assert items_of(test, build.vocab, "target_item") == ["f", "c"]
    assert user_items(test, build.vocab, "u2", "history_items") == ["a"]
    assert build.stats["dropped_no_history"] == {"val": 1, "test": 0}
    assert check_sequences(build.tables, build.meta)["train_before_val_cutoff"]


def test_temporal_cap_keeps_the_first_examples_per_user():
    build = build_sequences(
        events_table(TEMPORAL_ROWS), temporal_params(max_examples_per_user=1), EVENT_TYPES
    )
    assert items_of(build.tables["val"], build.vocab, "target_item") == ["d"]
    assert build.stats["capped_examples"] == {"val": 1, "test": 0}


def test_leaking_temporal_split_is_caught_by_the_suite():
    build = build_sequences(events_table(TEMPORAL_ROWS), temporal_params(), EVENT_TYPES)
    train = build.tables["train"]
    leaked_ts = build.meta["cutoffs"]["val_cutoff"] + 30  # a val-window event in train
    ts = train["ts"].to_pylist()
    ts[0][-1] = leaked_ts
    leaking = train.set_column(
        train.schema.get_field_index("ts"), "ts", pa.array(ts, pa.list_(pa.int64()))
    )
    tables = {**build.tables, "train": leaking}
    with pytest.raises(
        BatchValidationError,
        match=rf"rule train_before_val_cutoff failed: observed train_max_ts={leaked_ts}",
    ):
        check_sequences(tables, build.meta)


def test_suite_catches_overlong_histories_and_future_history():
    build = build_sequences(events_table(TEMPORAL_ROWS), temporal_params(max_len=3), EVENT_TYPES)
    meta = {**build.meta, "max_len": 1}
    with pytest.raises(BatchValidationError, match="rule length_within_max_len failed"):
        check_sequences(build.tables, meta)
    test = build.tables["test"]
    early = pa.array([0] * test.num_rows, pa.int64())
    bad = test.set_column(test.schema.get_field_index("target_ts"), "target_ts", early)
    with pytest.raises(BatchValidationError, match="rule history_before_target failed"):
        check_sequences({**build.tables, "test": bad}, build.meta)


def _write_project(tmp_path, rows, **sequences):
    (tmp_path / "validated").mkdir()
    pq.write_table(events_table(rows), tmp_path / "validated" / "events.parquet")
    params = {"sequences": {"min_user_events": 1, "min_item_events": 1, **sequences}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_cli_writes_every_output_in_the_contract_layout(tmp_path):
    _write_project(tmp_path, TEMPORAL_ROWS + [("u2", "b", "cart", 3 * DAY_S)])
    run_cli(
        "build-sequences",
        "--events",
        "validated",
        "--out",
        "sequences",
        "--metrics",
        "metrics/sequences.json",
        cwd=tmp_path,
    )
    out = tmp_path / "sequences"
    assert sorted(p.name for p in out.iterdir()) == [
        "data_profile.parquet",
        "meta.json",
        "stats.json",
        "test.parquet",
        "train.parquet",
        "val.parquet",
        "vocab.parquet",
    ]
    lists = {
        "int32": pa.list_(pa.int32()),
        "int8": pa.list_(pa.int8()),
        "int64": pa.list_(pa.int64()),
    }
    train = pq.read_table(out / "train.parquet")
    assert train.schema.field("items").type == lists["int32"]
    assert train.schema.field("types").type == lists["int8"]
    assert train.schema.field("ts").type == lists["int64"]
    test = pq.read_table(out / "test.parquet")
    for column, kind in [
        ("history_items", "int32"),
        ("history_types", "int8"),
        ("history_ts", "int64"),
    ]:
        assert test.schema.field(column).type == lists[kind]
    assert (
        test.schema.field("target_item").type,
        test.schema.field("target_type").type,
        test.schema.field("target_ts").type,
    ) == (pa.int32(), pa.int8(), pa.int64())
    vocab = pq.read_table(out / "vocab.parquet")
    assert vocab.schema == pa.schema([("item_id", pa.string()), ("index", pa.int32())])
    assert min(vocab["index"].to_pylist()) == FIRST_ITEM_TOKEN
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab_size"] == max(vocab["index"].to_pylist()) + 1
    assert meta["split"] == "leave_one_out" and meta["target_event_types"] == ["cart", "purchase"]
    stats = json.loads((out / "stats.json").read_text())
    headline = json.loads((tmp_path / "metrics" / "sequences.json").read_text())
    assert headline == {k: stats[k] for k in ("users", "items")}
    assert stats["users"] == 3 and stats["test_examples"] == test.num_rows == 2
    assert all(stats["checks"].values())
    assert row_of(train, "u2")["types"] == [1]


def test_cli_previous_vocab_keeps_indices_and_is_recorded(tmp_path):
    _write_project(tmp_path, SNAPSHOT_1)
    first = tmp_path / "first_vocab.parquet"
    build = build_sequences(events_table(SNAPSHOT_2), loose_params(), EVENT_TYPES)
    pq.write_table(build.vocab, first)  # knows a, b, x, y, z; snapshot 1 adds c
    run_cli(
        "build-sequences",
        "--events",
        "validated",
        "--out",
        "sequences",
        "--previous-vocab",
        str(first),
        cwd=tmp_path,
    )
    vocab = pq.read_table(tmp_path / "sequences" / "vocab.parquet")
    n_first = build.vocab.num_rows
    assert vocab.slice(0, n_first).equals(build.vocab)
    assert vocab["item_id"].to_pylist()[n_first:] == ["c"]  # the only item new to it
    meta = json.loads((tmp_path / "sequences" / "meta.json").read_text())
    assert meta["previous_vocab"] == str(first) and meta["previous_vocab_items"] == n_first


def test_cli_bad_input_is_one_line_error(tmp_path):
    _write_project(tmp_path, [("u", "a", "click", 0)])
    proc = run_cli(
        "build-sequences", "--events", "validated", "--out", "sequences", cwd=tmp_path, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "event_type 'click'" in proc.stderr and "events.parquet" in proc.stderr
    assert not (tmp_path / "sequences").exists()

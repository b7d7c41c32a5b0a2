"""The ingest stage: the broken-file corpus, row accounting, csv == parquet, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.ingest.stage import ingest, write_outputs
from pipeline.params import parse_params
from tests.conftest import run_cli
from tests.ingest.fixtures.broken.make_corpus import CORPUS as CORPUS_BYTES
from tests.ingest.fixtures.broken.make_corpus import NOT_COMMITTED

CORPUS = Path(__file__).parent / "fixtures" / "broken"
CANONICAL = ["user_id", "item_id", "event_type", "timestamp", "session_id"]


def params_for(path: Path | str, **data):
    return parse_params({"data": {"source": "csv", "path": str(path), **data}})


def run_ingest(path: Path | str, **data):
    params = params_for(path, **data)
    return ingest(params.data, params.synthetic)


# file, extra data params, (message pieces) -- each must be a one-line InputError.
ERROR_CASES = [
    ("empty.csv", {}, ["empty.csv", "line 1", "rule empty_file"]),
    ("whitespace_only.csv", {}, ["whitespace_only.csv", "line 1", "rule empty_file"]),
    ("header_only.csv", {}, ["header_only.csv", "line 2", "rule no_data_rows"]),
    ("missing_column.csv", {}, ["missing_column.csv", "line 1", "'timestamp'", "missing_column"]),
    ("duplicate_header.csv", {}, ["duplicate_header.csv", "line 1", "rule bad_header"]),
    ("binary.csv", {}, ["binary.csv", "line 1", "byte 0x00", "rule binary_file"]),
    ("corrupt.csv.gz", {}, ["corrupt.csv.gz", "corrupt gzip", "rule unreadable_file"]),
    ("epoch_without_unit.csv", {}, ["epoch_without_unit.csv", "timestamp_unit_missing"]),
    ("parquet_junk.parquet", {"source": "parquet"}, ["parquet_junk.parquet", "unreadable_file"]),
    ("parquet_junk.parquet", {}, ["parquet_junk.parquet", "line 1", "use data.source: parquet"]),
    (
        "header_only.csv",
        {"columns": {"visitor": "user_id"}},
        ["header_only.csv", "line 2", "no_data_rows"],
    ),
    ("missing.csv", {}, ["missing.csv", "no such file", "rule missing_input"]),
]


def corpus_file(name: str, tmp_path: Path) -> Path:
    """The committed corpus file, or one the corpus script keeps out of git, written here."""
    if name in NOT_COMMITTED:
        (tmp_path / name).write_bytes(CORPUS_BYTES[name])
        return tmp_path / name
    return CORPUS / name


@pytest.mark.parametrize(("name", "data", "pieces"), ERROR_CASES)
def test_unreadable_files_raise_one_line_input_error(name, data, pieces, tmp_path):
    with pytest.raises(InputError) as caught:
        run_ingest(corpus_file(name, tmp_path), **data)
    message = str(caught.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, message


def test_mapped_column_missing_from_file_names_the_mapping():
    with pytest.raises(InputError, match=r"data.columns maps \['visitor'\].*missing_column"):
        run_ingest(CORPUS / "bom_crlf.csv", columns={"visitor": "user_id"})


# file, extra data params, rows_in, {source_row: rule} quarantined, raw text of one of them.
QUARANTINE_CASES = [
    ("too_many_fields.csv", {}, 4, {1: "wrong_field_count"}, ",extra"),
    ("too_few_fields.csv", {}, 4, {1: "wrong_field_count"}, "u3,i3,view"),
    ("broken_quoting.csv", {}, 4, {1: "bad_quoting"}, 'u3,"i3,view'),
    ("not_utf8.csv", {}, 4, {1: "not_utf8"}, "caf\\xe9"),
    ("control_chars.csv", {}, 4, {1: "control_chars"}, "i\x01\x02\x07"),
    ("long_field.csv", {}, 4, {1: "field_too_long"}, "x" * 600),
    (
        "formula.csv",
        {},
        5,
        {1: "spreadsheet_formula", 2: "spreadsheet_formula", 3: "spreadsheet_formula"},
        "=HYPERLINK",
    ),
    (
        "bad_timestamp.csv",
        {},
        5,
        {1: "timestamp_unparseable", 2: "timestamp_unparseable"},
        "yesterday",
    ),
    ("bad_epoch.csv", {"timestamp_unit": "s"}, 3, {1: "timestamp_unparseable"}, "17092x87200"),
    ("cut_last_line.csv", {}, 4, {3: "wrong_field_count"}, "u9,i9,vi"),
    ("blank_lines.csv", {}, 3, {}, None),
    ("bom_crlf.csv", {}, 3, {}, None),
    ("semicolons.csv", {}, 3, {}, None),
    ("gzipped.csv.gz", {}, 3, {}, None),
]


@pytest.mark.parametrize(("name", "data", "rows_in", "rejected", "raw_piece"), QUARANTINE_CASES)
def test_broken_rows_are_quarantined_and_every_row_is_counted(
    name, data, rows_in, rejected, raw_piece
):
    result = run_ingest(CORPUS / name, **data)
    counts = result.summary["files"][name]
    assert counts["rows_in"] == rows_in
    assert counts["rows_in"] == counts["rows_parsed"] + counts["rows_quarantined"]
    assert result.summary["rows_in"] == len(result.events) + len(result.quarantine)
    quarantined = dict(zip(result.quarantine["source_row"], result.quarantine["rule"], strict=True))
    assert quarantined == rejected
    assert (result.quarantine["detail"].str.len() > 0).all()
    if raw_piece is not None:
        assert result.quarantine["raw"].str.contains(raw_piece, regex=False).any()
    assert "u1" in set(result.events["user_id"])  # the good rows around it survive
    assert not set(result.events["source_row"]) & set(rejected)


def test_good_rows_keep_their_line_based_source_row():
    result = run_ingest(CORPUS / "blank_lines.csv")
    # data lines 0, 2 and 4: the blank lines between them are not rows but keep positions.
    assert result.events["source_row"].tolist() == [0, 2, 4]
    assert result.events["event_type"].tolist() == ["view", "cart", "purchase"]


def test_formula_rule_spares_negative_and_signed_numbers():
    result = run_ingest(CORPUS / "formula.csv")
    assert result.events["price"].tolist() == [-5.0, 1500.0]
    details = " ".join(result.quarantine["detail"])
    assert "'item_id'" in details and "'user_id'" in details and "'price'" in details


def test_fractional_epochs_are_exact_to_the_millisecond():
    result = run_ingest(CORPUS / "bad_epoch.csv", timestamp_unit="s")
    stamps = result.events["timestamp"].tolist()
    assert stamps == [
        pd.Timestamp(1709287200, unit="s", tz="UTC"),
        pd.Timestamp(1709287260500, unit="ms", tz="UTC"),
    ]


def test_max_field_chars_is_a_param():
    assert len(run_ingest(CORPUS / "long_field.csv", max_field_chars=1000).quarantine) == 0


def _shop_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u3"],
            "item_id": ["10", "11", "10", "12"],
            "event_type": ["view", "cart", "view", "purchase"],
            "timestamp": pd.to_datetime(
                [
                    "2024-03-01 10:00:00",
                    "2024-03-01 10:00:30.250",
                    "2024-03-02 08:00",
                    "2024-03-02 09:15",
                ],
                format="ISO8601",
                utc=True,
            ),
            "session_id": ["a", "a", "b", None],
            "price": [9.5, 9.5, 9.5, 20.0],
        }
    )


def test_csv_with_other_names_and_parquet_give_the_same_canonical_table(tmp_path):
    shop = _shop_events()
    shop.to_parquet(tmp_path / "shop.parquet", index=False)
    exported = pd.DataFrame(
        {
            "visitor": shop["user_id"],
            "sku": shop["item_id"],
            "action": shop["event_type"].map({"view": "pv", "cart": "basket", "purchase": "buy"}),
            "epoch_ms": shop["timestamp"].dt.as_unit("ms").astype("int64"),
            "visit": shop["session_id"],
            "price": shop["price"],
        }
    )
    exported.to_csv(tmp_path / "shop.csv", sep=";", index=False)
    from_parquet = run_ingest(tmp_path / "shop.parquet", source="parquet")
    from_csv = run_ingest(
        tmp_path / "shop.csv",
        columns={
            "visitor": "user_id",
            "sku": "item_id",
            "action": "event_type",
            "epoch_ms": "timestamp",
            "visit": "session_id",
        },
        timestamp_unit="ms",
        event_type_map={"pv": "view", "basket": "cart", "buy": "purchase"},
    )
    columns = [*CANONICAL, "source_row", "price"]
    pd.testing.assert_frame_equal(from_csv.events[columns], from_parquet.events[columns])
    assert from_csv.events["user_id"].tolist() == shop["user_id"].tolist()
    assert from_csv.events["timestamp"].tolist() == shop["timestamp"].tolist()


def test_a_folder_reads_every_file_sorted_and_names_each(tmp_path):
    for name in ("b.csv", "a.csv"):
        (tmp_path / name).write_bytes((CORPUS / "semicolons.csv").read_bytes())
    (tmp_path / "notes.md").write_text("not events")
    result = run_ingest(tmp_path)
    assert list(result.summary["files"]) == ["a.csv", "b.csv"]
    assert result.events["source_file"].tolist() == ["a.csv"] * 3 + ["b.csv"] * 3


def test_unknown_event_types_and_null_ids_are_kept_for_validate(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,event_type,timestamp\n,i1,click,2024-03-01\nu2,i2,,2024-03-01\n"
    )
    result = run_ingest(path)
    assert len(result.events) == 2 and len(result.quarantine) == 0
    assert result.events["user_id"].isna().tolist() == [True, False]
    assert result.events["event_type"].tolist()[0] == "click"
    assert pd.isna(result.events["event_type"].tolist()[1])


def test_default_event_type_fills_a_missing_event_column(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("customer,product,ordered_at\nc1,p1,01/03/2024 10:00\n")
    result = run_ingest(
        path,
        columns={"customer": "user_id", "product": "item_id", "ordered_at": "timestamp"},
        timestamp_format="%d/%m/%Y %H:%M",
    )
    row = result.events.iloc[0]
    assert row["event_type"] == "purchase"
    assert row["timestamp"] == pd.Timestamp("2024-03-01 10:00", tz="UTC")


def test_written_files_follow_the_contract(tmp_path):
    result = run_ingest(CORPUS / "formula.csv")
    write_outputs(result, tmp_path)
    schema = pq.read_schema(tmp_path / "events.parquet")
    assert [str(schema.field(n).type) for n in (*CANONICAL, "source_file", "source_row")] == [
        "string",
        "string",
        "string",
        "timestamp[ns, tz=UTC]",
        "string",
        "string",
        "int64",
    ]
    quarantine = pq.read_table(tmp_path / "quarantine.parquet")
    assert quarantine.column_names == ["source_file", "source_row", "raw", "rule", "detail"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows_in"] == 5 and summary["by_rule"] == {"spreadsheet_formula": 3}
    assert not (tmp_path / "catalog.parquet").exists()


def test_cli_writes_outputs_and_reports_bad_input_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text(
        f"data:\n  source: csv\n  path: {CORPUS / 'cut_last_line.csv'}\n"
    )
    run_cli("ingest", "--out", "interim", cwd=tmp_path)
    summary = json.loads((tmp_path / "interim" / "summary.json").read_text())
    assert summary["by_rule"] == {"wrong_field_count": 1} and summary["rows_parsed"] == 3
    (tmp_path / "params.yaml").write_text(
        f"data:\n  source: csv\n  path: {CORPUS / 'binary.csv'}\n"
    )
    proc = run_cli("ingest", "--out", "interim", cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and proc.stderr.strip().count("\n") == 0
    assert "binary.csv" in proc.stderr and "rule binary_file" in proc.stderr


def test_synthetic_source_writes_events_and_catalog(tmp_path):
    pytest.importorskip("pipeline.ingest.synthetic")
    (tmp_path / "params.yaml").write_text("synthetic:\n  n_users: 30\n  n_items: 40\n  days: 5\n")
    run_cli("ingest", "--out", "interim", cwd=tmp_path)
    events = pd.read_parquet(tmp_path / "interim" / "events.parquet")
    summary = json.loads((tmp_path / "interim" / "summary.json").read_text())
    assert len(events) == summary["rows_in"] == summary["rows_parsed"] > 0
    assert (events["source_file"] == "synthetic").all()
    assert set(events["event_type"]) <= {"view", "cart", "purchase"}
    catalog = pd.read_parquet(tmp_path / "interim" / "catalog.parquet")
    assert set(events["item_id"]) <= set(catalog["item_id"])

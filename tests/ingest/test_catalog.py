"""The item catalogue: files, the S3-Rec json layout, item columns of events, and validation."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.ingest.catalog import build_catalog, catalog_file, read_catalog_file
from pipeline.params import DataParams
from pipeline.validation.catalog import validate_catalog

EVENTS = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"],
                       "category_id": ["7", "8", "9"]})


def test_s3rec_json_layout_is_one_list_column(tmp_path):
    path = tmp_path / "item2attributes.json"
    path.write_text(json.dumps({"1": [3, 17], "2": [3]}))
    frame = read_catalog_file(path)
    assert frame["item_id"].tolist() == ["1", "2"]
    assert frame["attributes"].tolist() == [["3", "17"], ["3"]]


def test_a_folder_stands_for_its_one_catalogue_and_an_empty_one_for_none(tmp_path):
    folder = tmp_path / "catalog"
    folder.mkdir()
    (folder / "README.md").write_text("no catalogue yet")
    assert catalog_file(str(folder)) is None
    (folder / "items.csv").write_text("item_id,brand\na,Korex\n")
    assert catalog_file(str(folder)) == folder / "items.csv"
    (folder / "more.parquet").write_bytes(b"")
    with pytest.raises(InputError, match="2 catalogue files .* keep one"):
        catalog_file(str(folder))
    with pytest.raises(InputError, match="does not exist"):
        catalog_file(str(tmp_path / "nope"))


def test_catalogue_file_and_event_columns_merge_on_item_id(tmp_path):
    (tmp_path / "items.csv").write_text("item_id;brand;price\na;Korex;9.5\nc;Astra;1\n")
    data = DataParams(source="csv", catalog_path=str(tmp_path / "items.csv"),
                      item_columns=["category_id"])
    catalog = build_catalog(data, EVENTS).sort_values("item_id")
    assert catalog["item_id"].tolist() == ["a", "b", "c"]
    assert catalog["category_id"].tolist()[:2] == ["7", "8"]  # a's first event says 7
    assert catalog["brand"].tolist()[0] == "Korex"


def test_catalogue_without_item_id_or_unknown_event_column_is_named(tmp_path):
    (tmp_path / "items.csv").write_text("sku,brand\na,Korex\n")
    with pytest.raises(InputError, match=r"items.csv: catalogue has no item_id column"):
        read_catalog_file(tmp_path / "items.csv")
    with pytest.raises(InputError, match=r"item_columns \['colour'\] are not event columns"):
        build_catalog(DataParams(source="csv", item_columns=["colour"]), EVENTS)


def test_validation_quarantines_null_and_duplicate_items_and_counts_them(tmp_path):
    interim, validated, quarantine = tmp_path / "i", tmp_path / "v", tmp_path / "q"
    interim.mkdir()
    pq.write_table(pa.table({"item_id": ["a", None, "b", "a", " "], "brand": list("KLMNO")}),
                   interim / "catalog.parquet")
    counts = validate_catalog(interim, validated, quarantine)
    assert counts == {"rows_in": 5, "rows_valid": 2, "rows_quarantined": 3,
                      "by_rule": {"catalog_duplicate_item": 1, "catalog_null_item_id": 2}}
    assert pq.read_table(validated / "catalog.parquet")["brand"].to_pylist() == ["K", "M"]
    rows = pq.read_table(quarantine / "catalog_rows.parquet").to_pydict()
    assert rows["source_row"] == [1, 3, 4] and "'brand': 'N'" in rows["raw"][1]
    (interim / "catalog.parquet").unlink()  # the next snapshot has no catalogue
    assert validate_catalog(interim, validated, quarantine) is None
    assert not (validated / "catalog.parquet").exists()

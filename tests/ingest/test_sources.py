"""Named public formats: small fixtures always, the real shared files when present."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.errors import InputError
from pipeline.ingest.stage import ingest
from pipeline.params import parse_params
from tests.conftest import REPO_ROOT

FIXTURES = REPO_ROOT / "tests" / "ingest" / "fixtures" / "sources"


def run(source: str, path, **data):
    params = parse_params({"data": {"source": source, "path": str(path), **data}})
    result = ingest(params.data, params.synthetic)
    summary = result.summary
    assert summary["rows_in"] == summary["rows_parsed"] + summary["rows_quarantined"]
    for counts in summary["files"].values():
        assert counts["rows_in"] == counts["rows_parsed"] + counts["rows_quarantined"]
    return result


def test_sasrec_without_times_keeps_file_order_with_increasing_times():
    result = run("sasrec", FIXTURES / "sasrec.txt")
    events = result.events
    assert events["source_row"].tolist() == list(range(11))
    assert events.groupby("user_id", sort=False)["item_id"].agg(list).to_dict() == {
        "1": ["10", "11", "12"],
        "2": ["11", "13"],
        "3": ["12", "10", "14", "11"],
        "4": ["10", "11"],
    }
    for _, times in events.groupby("user_id")["timestamp"]:
        assert times.is_monotonic_increasing and times.is_unique
    assert set(events["event_type"]) == {"purchase"}  # data.default_event_type
    assert result.quarantine[["rule", "raw"]].values.tolist() == [["empty_sequence", "u1"]]
    assert result.summary["rows_in"] == 12


def test_sasrec_with_aligned_times_quarantines_misaligned_users():
    result = run(
        "sasrec", FIXTURES / "sasrec.txt", timestamps_path=str(FIXTURES / "sasrec_times.txt")
    )
    events = result.events
    assert events["user_id"].tolist() == ["1", "1", "1", "2", "2"]
    assert events["timestamp"].iloc[1] == pd.Timestamp(1600000100, unit="s", tz="UTC")
    rules = result.quarantine["rule"].value_counts().to_dict()
    assert rules == {"misaligned_timestamps": 6, "empty_sequence": 1}


def test_taobao_maps_behaviours_and_quarantines_the_cut_last_line():
    result = run("taobao", FIXTURES / "taobao.csv")
    assert result.events["event_type"].tolist() == ["view", "cart", "cart", "purchase", "view"]
    assert result.events["category_id"].tolist()[0] == 2520377
    assert result.quarantine[["source_row", "rule", "raw"]].values.tolist() == [
        [5, "wrong_field_count", "3,4365"]
    ]


def test_taobao_fav_mapping_can_be_overridden():
    result = run("taobao", FIXTURES / "taobao.csv", event_type_map={"fav": "view"})
    assert result.events["event_type"].tolist()[1] == "view"


def test_retailrocket_reads_only_events_files_in_ms():
    result = run("retailrocket", FIXTURES / "retailrocket")
    assert list(result.summary["files"]) == ["events.csv"]
    events = result.events
    assert events["event_type"].tolist() == ["view", "view", "cart", "purchase"]
    assert events["timestamp"].iloc[0] == pd.Timestamp(1433221332117, unit="ms", tz="UTC")
    assert events["user_id"].iloc[2] == "111016"
    assert events["transactionid"].iloc[3] == 4000


def test_amazon_reviews_json_lines_become_purchases_and_bad_json_is_quarantined():
    result = run("amazon_reviews", FIXTURES / "amazon_reviews.json")
    events = result.events
    assert events[["user_id", "item_id"]].values.tolist() == [
        ["A1", "B001"],
        ["A2", "B002"],
        ["A1", "B003"],
    ]
    assert set(events["event_type"]) == {"purchase"}
    assert events["rating"].tolist() == [5.0, 3.0, 4.0]
    assert "reviewText" not in events.columns
    assert result.quarantine[["source_row", "rule"]].values.tolist() == [[2, "bad_json"]]


def test_amazon_ratings_csv_without_header():
    result = run("amazon_reviews", FIXTURES / "amazon_ratings.csv")
    assert result.events["item_id"].tolist() == ["B001", "B002"]
    assert result.events["timestamp"].iloc[0] == pd.Timestamp("2014-01-26", tz="UTC")


def test_diginetica_uses_session_as_user_and_adds_timeframe():
    result = run("diginetica", FIXTURES / "diginetica.csv")
    events = result.events
    assert events["user_id"].tolist() == ["session-1", "session-1", "278"]
    assert events["session_id"].tolist() == ["1", "1", "2"]
    assert events["timestamp"].iloc[0] == pd.Timestamp("2016-05-09 00:08:46.309", tz="UTC")
    assert set(events["event_type"]) == {"view"}
    assert result.quarantine[["source_row", "rule"]].values.tolist() == [
        [3, "timestamp_unparseable"]
    ]


@pytest.mark.parametrize("name", ["yoochoose.tsv", "yoochoose-clicks.dat"])
def test_yoochoose_prepared_and_raw_formats(name):
    result = run("yoochoose", FIXTURES / name)
    events = result.events
    assert events["user_id"].tolist() == events["session_id"].tolist() == ["1", "1", "2"]
    assert set(events["event_type"]) == {"view"}
    assert events["timestamp"].iloc[0] == pd.Timestamp("2014-04-07 08:51:09.277", tz="UTC") or (
        events["timestamp"].iloc[0] == pd.Timestamp("2014-04-07 10:51:09.277", tz="UTC")
    )


def test_sasrec_timestamps_need_a_single_file():
    with pytest.raises(InputError, match="timestamps_path"):
        run("sasrec", FIXTURES, timestamps_path=str(FIXTURES / "sasrec_times.txt"))


# The real files in ../shared/data (skipped when absent).


def test_shared_amazon_toys_counts(shared_data):
    result = run("sasrec", shared_data / "amazon" / "Toys_and_Games.txt")
    events = result.events
    assert (events["user_id"].nunique(), events["item_id"].nunique(), len(events)) == (
        19_412,
        11_924,
        167_597,
    )
    assert len(result.quarantine) == 0
    assert events["source_row"].is_monotonic_increasing


def test_shared_amazon_sports_with_times(shared_data):
    folder = shared_data / "amazon_time"
    result = run(
        "sasrec",
        folder / "Sports_item_org_rank.txt",
        timestamps_path=str(folder / "Sports_time_org_rank.txt"),
    )
    events = result.events
    assert (events["user_id"].nunique(), events["item_id"].nunique(), len(events)) == (
        35_598,
        18_357,
        296_337,
    )
    assert events.groupby("user_id")["timestamp"].is_monotonic_increasing.all()


def test_shared_taobao_cut_line_is_quarantined(shared_data):
    result = run("taobao", shared_data / "taobao")
    events = result.events
    assert (events["user_id"].nunique(), events["item_id"].nunique(), len(events)) == (
        815,
        55_368,
        84_475,
    )
    assert result.quarantine["rule"].tolist() == ["wrong_field_count"]
    assert result.quarantine["raw"].iloc[0] == "100370,1968385,1875258,pv"
    assert events["event_type"].value_counts().to_dict() == {
        "view": 75_872,
        "cart": 4_497 + 2_356,
        "purchase": 1_750,
    }


def test_shared_diginetica_and_yoochoose(shared_data):
    digi = run("diginetica", shared_data / "diginetica").events
    assert (digi["session_id"].nunique(), digi["item_id"].nunique(), len(digi)) == (
        2_986,
        7_139,
        12_391,
    )
    yoo = run("yoochoose", shared_data / "yoochoose")
    assert yoo.summary["rows_parsed"] == 70_278 + 13_568 and yoo.summary["rows_quarantined"] == 0

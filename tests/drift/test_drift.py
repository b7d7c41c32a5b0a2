"""Drift report: quiet on a resample of the same shop, trips on each crafted shift."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.drift.profile import PROFILE_FILE, with_categories
from pipeline.drift.report import drift_report, js_divergence
from pipeline.ingest.synthetic import generate_events
from pipeline.params import parse_params
from pipeline.sequences.build import build_sequences

PARAMS = parse_params({"synthetic": {"n_users": 800, "n_items": 300, "n_categories": 8,
                                     "n_brands": 10, "days": 20}})


@pytest.fixture(scope="module")
def shop():
    events, catalog = generate_events(PARAMS.synthetic, PARAMS.data.event_types)
    return events, pa.Table.from_pandas(catalog, preserve_index=False)


def snapshot(folder, events, catalog):
    """What build_sequences leaves for the drift stage: the profile and the vocabulary."""
    build = build_sequences(events, PARAMS.sequences, PARAMS.data.event_types)
    folder.mkdir()
    pq.write_table(with_categories(build.profile, catalog), folder / PROFILE_FILE)
    pq.write_table(build.vocab, folder / "vocab.parquet")
    return folder


@pytest.fixture(scope="module")
def champion(shop, tmp_path_factory):
    events, catalog = shop
    return snapshot(tmp_path_factory.mktemp("d") / "champion",
                    events.sample(frac=0.7, random_state=1), catalog)


def renamed(ids, share, prefix, rng):
    """Give a random `share` of the distinct ids new names."""
    distinct = ids.unique()
    chosen = set(rng.choice(distinct, int(share * len(distinct)), replace=False))
    return ids.map(lambda x: f"{prefix}{x}" if x in chosen else x)


def shifted(events, kind):
    rng = np.random.default_rng(3)
    if kind == "new_catalogue":  # 40% of the items replaced by new ones
        return events.assign(item_id=renamed(events.item_id, 0.4, "new-", rng))
    if kind == "tastes":  # the same items, popularity reshuffled
        items = events.item_id.unique()
        return events.assign(item_id=events.item_id.map(dict(zip(items, rng.permutation(items),
                                                                 strict=True))))
    if kind == "event_mix":  # 60% of the views lost (a tracking bug)
        return events[(events.event_type != "view") | (rng.random(len(events)) < 0.4)]
    if kind == "volume":  # a fifth of the shoppers
        users = events.user_id.unique()
        return events[events.user_id.isin(rng.choice(users, len(users) // 5, replace=False))]
    return events.assign(user_id="new-" + events.user_id)  # nobody the champion saw


@pytest.mark.parametrize("kind, measure", [
    ("new_catalogue", "unseen_item_share"), ("tastes", "item_js"), ("tastes", "category_js"),
    ("event_mix", "event_type_js"), ("volume", "volume_ratio"),
    ("new_shoppers", "returning_user_share"),
])
def test_a_crafted_shift_trips_its_bound(shop, champion, tmp_path, kind, measure):
    events, catalog = shop
    report = drift_report(snapshot(tmp_path / "new", shifted(events, kind), catalog), champion,
                          PARAMS.drift)
    assert report["drifted"], report
    assert any(reason.startswith(f"{measure} ") for reason in report["reasons"]), report


def test_a_resample_of_the_same_shop_stays_quiet(shop, champion, tmp_path):
    events, catalog = shop
    resample = snapshot(tmp_path / "new", events.sample(frac=0.7, random_state=2), catalog)
    params = tmp_path / "params.yaml"
    params.write_text("{}")
    assert main(["--params", str(params), "drift", "--sequences", str(resample), "--reference",
                 str(champion), "--out", str(tmp_path / "drift.json"), "--metrics",
                 str(tmp_path / "headline.json")]) == 0
    report = json.loads((tmp_path / "drift.json").read_text())
    assert json.loads((tmp_path / "headline.json").read_text()) == {"drifted": False}
    assert report["drifted"] is False and report["reasons"] == []
    assert report["reference"] == str(champion)
    assert report["item_js"] < PARAMS.drift.max_item_js / 10
    assert 0.9 < report["volume_ratio"] < 1.1 and report["returning_user_share"] > 0.9


def test_no_champion_profile_means_no_drift_and_js_is_bounded(shop, tmp_path):
    events, catalog = shop
    current = snapshot(tmp_path / "new", events, catalog)
    (tmp_path / "empty").mkdir()
    report = drift_report(current, tmp_path / "empty", PARAMS.drift)
    assert report["reference"] is None and report["drifted"] is False
    assert js_divergence({"a": 5}, {"a": 1}) == 0.0
    assert js_divergence({"a": 1}, {"b": 1}) == 1.0


def test_the_evaluation_report_shows_each_measure_and_what_crossed(shop, champion, tmp_path):
    from pipeline.evaluation.report import drift_table

    events, catalog = shop
    report = drift_report(snapshot(tmp_path / "new", shifted(events, "event_mix"), catalog),
                          champion, PARAMS.drift)
    table = drift_table(report)
    rows = {row[0]: row for row in table.rows}
    assert rows["event_type_js"][3] == "**drifted**" and rows["item_js"][3] == "ok"
    assert rows["event_type_js"][2] == "0.0100" and "event_type_js" in table.note


def test_the_profile_window_counts_only_the_newest_days(shop):
    from pipeline.drift.profile import counts_of

    events, _ = shop
    def total(window):
        profile = build_sequences(events, PARAMS.sequences, PARAMS.data.event_types,
                                  profile_window_days=window).profile
        return sum(counts_of(profile, "event_type").values())

    whole, week = total(None), total(7.0)
    assert total(1000.0) == whole and 0 < week < whole * 0.5  # 7 of the shop's 20 days

"""`python -m bench backtest` on a tiny shop: the result layout and what each policy does."""

import json

import pandas as pd

from bench.backtest import main
from bench.backtest_shop import drifting_shop


def test_the_shop_renews_items_for_good_and_keeps_its_catalogue_whole():
    shop = drifting_shop(n_users=200, n_items=60, weeks=3, seed=1, new_share=0.2,
                         swap_share=0.2)
    events = shop.events
    week = sum((events["timestamp"] >= end).astype(int) for end in shop.week_ends)  # 0, 1, ...
    first, last = week.groupby(events["item_id"]).min(), week.groupby(events["item_id"]).max()
    successors = [i for i in first.index if "w" in i]
    assert successors and all(first[i] >= int(i.split("w")[1]) for i in successors)
    assert (last < week.max()).any()  # some ids stop selling: retired
    assert set(events["item_id"]) <= set(shop.catalog["item_id"])
    assert shop.catalog["item_id"].is_unique


def test_backtest_writes_every_policy_and_week(tmp_path):
    out, plot = tmp_path / "backtest.json", tmp_path / "backtest.png"
    assert main(["--weeks", "2", "--users", "300", "--items", "80", "--pretrain-epochs", "1",
                 "--out", str(out), "--plot", str(plot)]) == 0
    result = json.loads(out.read_text())
    assert result["weeks"] == [1, 2] and plot.stat().st_size > 0
    policies = result["policies"]
    assert set(policies) == {"never", "full_weekly", "warm_weekly", "warm_rebuild_on_drift"}
    for rows in policies.values():
        assert [r["week"] for r in rows] == [1, 2]
        assert all(0 <= r["ndcg@10"] <= 1 and r["train_seconds"] >= 0 for r in rows)
    first_week = {rows[0]["ndcg@10"] for rows in policies.values()}
    assert len(first_week) == 1  # the same rebuild everywhere (same seed)
    assert policies["never"][1] | {"ndcg@10": 0} == {"week": 2, "ndcg@10": 0,
                                                     "train_seconds": 0.0, "mode": "kept"}
    assert policies["full_weekly"][1]["mode"] == "rebuild"
    assert policies["warm_weekly"][1]["mode"] == "warm"
    assert pd.Series([r["train_seconds"] for r in policies["full_weekly"]]).gt(0).all()

"""The retrain DAG's choice between warm re-fine-tuning and a full rebuild."""

import pytest

from pipeline.orchestration.freshness import choose
from pipeline.params import parse_params

QUIET = {"drifted": False, "reasons": []}
DRIFTED = {"drifted": True, "reasons": ["item_js 0.2 > 0.1 (drift.max_item_js)"]}


def retrain(**values):
    return parse_params({"retrain": values}).retrain


@pytest.mark.parametrize("section, seeded, warm_runs, drift, mode, reason", [
    ({}, "3", 0, QUIET, "warm", "warm start from @champion version 3"),
    ({}, "3", 2, None, "warm", "warm run 3 of at most 4"),
    ({}, None, 0, None, "rebuild", "no @champion"),
    ({}, "3", 0, DRIFTED, "rebuild", "drift: item_js 0.2 > 0.1"),
    ({}, "3", 4, QUIET, "rebuild", "4 warm runs in a row"),
    ({"rebuild_every_n_runs": None}, "3", 40, QUIET, "warm", "unlimited"),
    ({"dag_init": "pretrained"}, "3", 0, QUIET, "rebuild", "retrain.dag_init is pretrained"),
])
def test_the_choice_and_its_reason(section, seeded, warm_runs, drift, mode, reason):
    decision = choose(retrain(**section), seeded, warm_runs, drift)
    assert decision["mode"] == mode and reason in decision["reason"]
    assert decision["warm_runs"] == (warm_runs + 1 if mode == "warm" else 0)

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


def test_a_champion_of_another_architecture_is_rebuilt_not_warm_started(tmp_path):
    """A champion saved before a default changed (positions, transition prior) or with
    another width cannot lend its weights: the DAG rebuilds and says which fields moved."""
    import json

    from pipeline.orchestration.freshness import architecture_changes

    params = parse_params({"model": {"transition_top_k": 20}})  # as params.yaml
    m = params.model
    same = {"vocab_size": 50, "max_len": params.sequences.max_len, "event_types": ["view"],
            "hidden_dim": m.hidden_dim, "n_layers": m.n_layers, "n_heads": m.n_heads,
            "ffn_dim": m.ffn_dim or m.hidden_dim, "time_gap_buckets": m.time_gap_buckets,
            "repeat_head": m.repeat_head, "positions": m.positions,
            "transition_top_k": m.transition_top_k}
    (tmp_path / "config.json").write_text(json.dumps(same))
    assert architecture_changes(params, tmp_path) == []
    old = {k: v for k, v in same.items() if k not in ("positions", "transition_top_k")}
    (tmp_path / "config.json").write_text(json.dumps({**old, "hidden_dim": 32}))
    changed = architecture_changes(params, tmp_path)
    assert changed == [f"hidden_dim 32 -> {m.hidden_dim}", "positions from_end -> from_start",
                       "transition_top_k 0 -> 20"]
    decision = choose(params.retrain, "3", 0, QUIET, changed)
    assert decision["mode"] == "rebuild" and "hidden_dim 32" in decision["reason"]
    assert architecture_changes(params, tmp_path / "none") == []

"""The promotion gate: a pure function of the metrics, the champion's and the gate params."""

import json

import pytest

from pipeline.orchestration.gate import GateError, decide, read_json, validation_check
from pipeline.params import GateParams

VALID = {"rows_in": 100, "rows_valid": 98, "rows_quarantined": 2, "by_rule": {"future": 2}}


def evaluation(ndcg: float, hr: float, baselines: dict | None = None) -> dict:
    return {
        "model": {"ndcg@10": ndcg, "hr@10": hr, "mrr@10": ndcg / 2},
        "baselines": baselines
        if baselines is not None
        else {"popularity": {"ndcg@10": 0.05, "hr@10": 0.10}, "markov": {"ndcg@10": 0.08}},
        "slices": {},
    }


def gate(**overrides) -> GateParams:
    base = {"primary_metric": "ndcg@10", "min_improvement": 0.01,
            "guard_tolerances": {"hr@10": 0.02}, "baseline_margin": 0.005}
    return GateParams(**{**base, **overrides})


def test_challenger_that_beats_champion_passes_with_numbers():
    report = decide(evaluation(0.30, 0.50), evaluation(0.25, 0.50), VALID, gate())
    assert report.passed, report.reasons
    primary = next(c for c in report.checks if c.name == "primary:ndcg@10")
    assert primary.value == pytest.approx(0.30)
    assert primary.reference == pytest.approx(0.25)
    assert "+0.0500" in primary.detail
    assert report.champion["ndcg@10"] == pytest.approx(0.25)
    assert report.best_baseline is None


def test_gain_below_min_improvement_fails():
    report = decide(evaluation(0.255, 0.50), evaluation(0.25, 0.50), VALID, gate())
    assert not report.passed
    assert any("vs champion 0.2500: delta +0.0050 misses" in r for r in report.reasons)


def test_margin_is_inclusive_and_may_be_negative():
    tie = decide(evaluation(0.25, 0.5), evaluation(0.25, 0.5), VALID, gate(min_improvement=0))
    assert tie.passed
    drop = decide(evaluation(0.24, 0.5), evaluation(0.25, 0.5), VALID, gate(min_improvement=-0.02))
    assert drop.passed
    assert not decide(evaluation(0.22, 0.5), evaluation(0.25, 0.5), VALID,
                      gate(min_improvement=-0.02)).passed


def test_guard_metric_regression_beyond_tolerance_fails():
    report = decide(evaluation(0.30, 0.40), evaluation(0.25, 0.45), VALID, gate())
    assert not report.passed
    assert [c.name for c in report.checks if not c.passed] == ["guard:hr@10"]
    assert "regresses beyond tolerance 0.0200" in report.reasons[0]


def test_guard_regression_within_tolerance_passes():
    report = decide(evaluation(0.30, 0.44), evaluation(0.25, 0.45), VALID, gate())
    assert report.passed, report.reasons


def test_failed_validation_fails_the_gate_even_for_a_better_model():
    failed = {**VALID, "batch_passed": 0, "failed_rules": 1}
    report = decide(evaluation(0.40, 0.60), evaluation(0.25, 0.45), failed, gate())
    assert not report.passed
    assert report.reasons == ["validation failed: batch_passed=0"]
    assert decide(evaluation(0.40, 0.60), evaluation(0.25, 0.45), {**VALID, "batch_passed": 1},
                  gate()).passed


def test_validation_rows_must_add_up_and_batch_rules_pass():
    assert not validation_check({**VALID, "rows_valid": 90}).passed
    rules = {"batch_rules": [{"rule": "min_rows", "success": True},
                             {"rule": "max_volume_change", "success": False}]}
    check = validation_check({**VALID, **rules})
    assert not check.passed and "max_volume_change" in check.detail
    assert not validation_check(None).passed
    assert validation_check(VALID).passed


def test_first_run_must_beat_best_baseline_by_margin():
    ok = decide(evaluation(0.09, 0.2), None, VALID, gate())
    assert ok.passed and ok.best_baseline == "markov"
    short = decide(evaluation(0.083, 0.2), None, VALID, gate())
    assert not short.passed
    assert "vs best baseline markov" in short.reasons[0]
    # guards only apply against a champion
    assert [c.name for c in ok.checks] == ["validation", "primary:ndcg@10"]


def test_first_run_compares_only_the_configured_baselines():
    report = decide(evaluation(0.07, 0.2), None, VALID, gate(baselines=["popularity"]))
    assert report.passed and report.best_baseline == "popularity"


def test_missing_metric_is_a_one_line_error_naming_file_and_metric(tmp_path):
    with pytest.raises(GateError, match=r"eval.json: model: metric 'ndcg@10' missing"):
        decide({"model": {"hr@10": 0.1}}, None, VALID, gate(), where="eval.json")
    with pytest.raises(GateError, match="no baselines"):
        decide(evaluation(0.1, 0.1, baselines={}), None, VALID, gate())
    bad = tmp_path / "eval.json"
    bad.write_text("{not json")
    with pytest.raises(GateError, match="eval.json: not valid JSON"):
        read_json(bad)


def test_report_is_json_serialisable_with_params_and_reasons():
    report = decide(evaluation(0.2, 0.5), evaluation(0.25, 0.5), VALID, gate()).to_dict()
    text = json.dumps(report)
    assert json.loads(text)["decision"] == "fail"
    assert report["passed"] is False  # the registry reads this flag
    assert report["params"]["min_improvement"] == 0.01
    assert report["checks"][1]["threshold"] == 0.01

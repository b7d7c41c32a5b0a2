"""`dag.test()` against a real MLflow server: a warm retrain from the champion, then a
crafted drift that makes the DAG rebuild (docs/retraining.md).

Three runs on a tiny synthetic shop, auto-promoted (approval is tested elsewhere):
1. no champion: a rebuild, registered and promoted as v1;
2. the same shop ten days later: no drift, so a warm start from v1 (`models:/seqrec/1`);
3. a third of the catalogue renamed (new items): drift, so a rebuild.
"""

from __future__ import annotations

import pytest

from tests.orchestration.airflow_harness import (
    airflow_env,
    dag_test,
    land_synthetic_events,
    make_project,
    migrate,
    mlflow_server,
)
from tests.orchestration.test_retrain_e2e import aliases, gate_report, needs_pipeline, version_tags

pytestmark = pytest.mark.slow
AUTO = {"gate": {"require_approval": False, "baseline_margin": -1.0, "min_improvement": -1.0,
                 "guard_tolerances": {"hr@10": 1.0}}}


@needs_pipeline
def test_second_run_warm_starts_from_the_champion_and_drift_forces_a_rebuild(tmp_path):
    project = make_project(tmp_path / "project", AUTO)
    with mlflow_server(tmp_path) as uri:
        env = airflow_env(tmp_path / "airflow_home", project, uri)
        migrate(env)

        land_synthetic_events(project, "week1", seed=1)
        first = dag_test(project, env, tmp_path / "run1.log")
        assert first["state"] == "success", first
        v1 = aliases(uri)["champion"]
        assert version_tags(uri, v1)["seqrec.retrain_mode"] == "rebuild"
        assert version_tags(uri, v1)["seqrec.init_from"] == "none"

        land_synthetic_events(project, "week2", seed=1, synthetic={"end_date": "2026-11-11"})
        second = dag_test(project, env, tmp_path / "run2.log")
        assert second["state"] == "success", second
        decision = gate_report(project, "retrain.json")
        assert decision["mode"] == "warm", decision
        assert decision["drift"]["drifted"] is False
        v2 = aliases(uri)["champion"]
        tags = version_tags(uri, v2)
        assert v2 != v1 and tags["seqrec.retrain_mode"] == "warm"
        assert tags["seqrec.init_from"] == f"models:/seqrec/{v1}"
        assert tags["seqrec.warm_runs"] == "1"
        assert gate_report(project)["retrain"]["mode"] == "warm"
        assert "retrain: warm" in (tmp_path / "run2.log").read_text()

        land_synthetic_events(project, "week3", seed=1, synthetic={"end_date": "2026-11-21"},
                              new_item_every=3)
        third = dag_test(project, env, tmp_path / "run3.log")
        assert third["state"] == "success", third
        decision = gate_report(project, "retrain.json")
        assert decision["mode"] == "rebuild" and "unseen_item_share" in decision["reason"]
        v3 = aliases(uri)["champion"]
        assert version_tags(uri, v3)["seqrec.retrain_reason"].startswith("drift: ")
        assert version_tags(uri, v3)["seqrec.init_from"] == "none"

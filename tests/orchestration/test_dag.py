"""The retrain DAG parses fast, without errors or heavy imports, into the expected graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

# Airflow reads its config on first import: a throw-away home, no examples, no DB needed.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="seqrec-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

DAGS = REPO_ROOT / "dags"
DAG_ID = "seqrec_retrain"
MAX_PARSE_S = 2.0
HEAVY_MODULES = ("torch", "pandas", "mlflow", "pyarrow", "lightning", "great_expectations", "dvc")


def load_dag(monkeypatch, tmp_path: Path | None = None, **params_overrides):
    """Parse dags/ with a DagBag; with overrides, against a project whose params differ."""
    from airflow.dag_processing.dagbag import DagBag

    if params_overrides:
        raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
        for section, values in params_overrides.items():
            raw[section].update(values)
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("SEQREC_PROJECT_DIR", str(tmp_path))
    else:
        monkeypatch.delenv("SEQREC_PROJECT_DIR", raising=False)
    bag = DagBag(dag_folder=DAGS)
    assert bag.import_errors == {}, bag.import_errors
    return bag, bag.dags[DAG_ID]


def edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def test_dagbag_imports_the_dag_without_errors_within_parse_budget(monkeypatch):
    bag, dag = load_dag(monkeypatch)
    (stat,) = [s for s in bag.dagbag_stats if s.file.endswith("seqrec_retrain.py")]
    parse_s = stat.duration.total_seconds()
    print(f"DagBag parse of seqrec_retrain.py: {parse_s:.3f} s")
    assert parse_s <= MAX_PARSE_S
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert "seqrec" in dag.tags


def test_default_graph_waits_for_approval_in_mlflow(monkeypatch):
    _, dag = load_dag(monkeypatch)
    assert set(dag.task_ids) == {
        "snapshot_data", "run_pipeline", "score_champion", "gate", "register_challenger",
        "record_gate_failure", "wait_for_approval", "conclude",
    }
    expected = {
        ("snapshot_data", "run_pipeline"), ("run_pipeline", "score_champion"),
        ("score_champion", "gate"), ("gate", "register_challenger"),
        ("gate", "record_gate_failure"), ("register_challenger", "wait_for_approval"),
        ("wait_for_approval", "conclude"),
    }
    assert expected <= edges(dag)
    # Nothing reaches the registry without passing through the gate.
    assert dag.get_task("register_challenger").upstream_task_ids >= {"gate"}
    sensor = dag.get_task("wait_for_approval")
    assert sensor.mode == "reschedule"
    assert sensor.poke_interval == 60.0
    assert sensor.timeout >= 72 * 3600


def test_schedule_is_weekly_and_env_overrides_it(monkeypatch):
    _, dag = load_dag(monkeypatch)
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.expression == "0 0 * * 0"
    monkeypatch.setenv("SEQREC_SCHEDULE", "30 2 * * 1")
    _, dag = load_dag(monkeypatch)
    assert dag.timetable.expression == "30 2 * * 1"
    monkeypatch.setenv("SEQREC_SCHEDULE", "none")
    _, dag = load_dag(monkeypatch)
    assert type(dag.timetable).__name__ == "NullTimetable"


def test_unpausing_starts_no_run_for_the_cron_time_just_past(monkeypatch):
    """What the scheduler asks the timetable when the DAG is first unpaused (no runs yet).

    With a start date in the past, catchup=False still answers "the latest cron time", so
    `make airflow` + unpause started a surprise run and the manual trigger queued behind it.
    """
    import pendulum
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    _, dag = load_dag(monkeypatch)
    timetable = coerce_to_core_timetable(dag.timetable)
    restriction = TimeRestriction(earliest=dag.start_date, latest=None, catchup=dag.catchup)
    now = pendulum.now("UTC")
    first = timetable.next_dagrun_info(last_automated_data_interval=None,
                                       restriction=restriction)
    assert first.run_after > now  # the next Sunday 00:00 UTC, not the last one
    assert first.run_after - now <= pendulum.duration(days=7)


def test_asset_trigger_adds_the_landing_asset(monkeypatch, tmp_path):
    _, dag = load_dag(monkeypatch, tmp_path, airflow={"trigger_on_asset": True})
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert dag.timetable.asset_condition.uri == (tmp_path / "data" / "landing").as_uri()
    assert dag.timetable.timetable.expression == "0 0 * * 0"


def test_retries_backoff_and_timeouts_come_from_params(monkeypatch, tmp_path):
    _, dag = load_dag(monkeypatch, tmp_path, airflow={
        "retries": 4, "retry_delay_minutes": 1.5, "pipeline_timeout_minutes": 90.0,
        "task_timeout_minutes": 7.0,
    })
    for task in dag.tasks:
        assert task.retries == 4
        assert task.retry_exponential_backoff == 2.0
        assert task.retry_delay.total_seconds() == 90
        assert task.max_retry_delay.total_seconds() == 3600
    assert dag.get_task("run_pipeline").execution_timeout.total_seconds() == 90 * 60
    assert dag.get_task("gate").execution_timeout.total_seconds() == 7 * 60


def test_auto_promotion_has_no_approval_step(monkeypatch, tmp_path):
    _, dag = load_dag(monkeypatch, tmp_path, gate={"require_approval": False})
    assert "wait_for_approval" not in dag.task_ids
    assert ("register_challenger", "conclude") in edges(dag)


def test_approval_via_airflow_uses_the_approval_operator(monkeypatch, tmp_path):
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    _, dag = load_dag(monkeypatch, tmp_path, gate={"approval_via": "airflow",
                                                   "approval_timeout_hours": 2.0})
    approval = dag.get_task("approve_in_airflow")
    assert isinstance(approval, ApprovalOperator)
    assert approval.response_timeout.total_seconds() == 2 * 3600
    assert approval.defaults == ["Reject"]
    assert {("register_challenger", "approve_in_airflow"),
            ("approve_in_airflow", "approval_answered"),
            ("approval_answered", "conclude")} <= edges(dag)
    # A "Reject" skips only `approval_answered`; conclude must still run to record it.
    assert "approve_in_airflow" not in dag.get_task("conclude").upstream_task_ids
    assert dag.get_task("conclude").trigger_rule == "none_failed_min_one_success"


def test_parse_in_a_fresh_process_imports_nothing_heavy():
    code = (
        "import json, sys, time\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "t = time.perf_counter(); bag = DagBag(dag_folder=sys.argv[1])\n"
        "print(json.dumps({'s': time.perf_counter() - t, 'errors': bag.import_errors,\n"
        f"  'heavy': [m for m in {HEAVY_MODULES!r} if m in sys.modules]}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(DAGS)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          timeout=120, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"DagBag fill in a fresh process (airflow already imported): {result['s']:.3f} s")
    assert result["errors"] == {}
    assert result["heavy"] == []
    assert result["s"] <= MAX_PARSE_S

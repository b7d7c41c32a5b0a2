"""`seqrec_retrain` to promotion on Airflow 3 with a Postgres metadata DB and LocalExecutor.

Scheduler, dag-processor and API server run as separate processes; the tasks log into the
authenticated MLflow server as the `pipeline` service account; a person with the `approver`
account approves the challenger while the sensor waits; the DAG promotes it.
"""

from __future__ import annotations

import sys
import time

import pytest

from pipeline.orchestration.runtime import PROMOTER
from tests.conftest import wait_for
from tests.orchestration.airflow_harness import land_synthetic_events, make_project
from tests.production.airflow_services import (
    airflow,
    airflow_env,
    airflow_services,
    run_state,
)
from tests.production.conftest import run
from tests.production.services import credentials

pytestmark = pytest.mark.production
DAG_ID, MODEL = "seqrec_retrain", "seqrec_airflow"
RUN_TIMEOUT_S = 1800
EXPECTED_TASKS = {"snapshot_data": "success", "run_pipeline": "success",
                  "score_champion": "success", "gate": "success",
                  "register_challenger": "success", "wait_for_approval": "success",
                  "conclude": "success", "record_gate_failure": "skipped"}


def challenger(stack) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    with credentials(*stack.users["reader"]):
        client = MlflowClient(tracking_uri=stack.mlflow.uri, registry_uri=stack.mlflow.uri)
        try:
            return client.get_model_version_by_alias(MODEL, "challenger").version
        except MlflowException:
            return None


def test_retrain_dag_runs_to_promotion_on_postgres_with_local_executor(stack, tmp_path):
    project = make_project(tmp_path / "project", {
        "registry": {"model_name": MODEL},
        "gate": {"baseline_margin": -1.0, "approval_poke_interval_s": 10.0},
        # Task retries as in production (params.yaml: 2), with a short delay. Airflow 3.3 can
        # fail a reschedule-mode sensor when the executor's report of one poke arrives after
        # the next poke started (apache/airflow#71172); the retry is the deployment's
        # answer to that, and this test runs with it.
        "airflow": {"retries": 2, "retry_delay_minutes": 0.1},
    })
    land_synthetic_events(project, "week1", seed=1)
    stack.pg.create_database("airflow")
    env = airflow_env(tmp_path / "airflow_home", project, stack.pg,
                      stack.env("pipeline", SEQREC_HOME=str(project)))

    def logs():
        return sorted(tmp_path.glob("airflow-*.log"))

    with airflow_services(env, tmp_path):
        wait_for("the DAG to be parsed",
                 lambda: DAG_ID in airflow(env, "dags", "list", check=False).stdout, 300,
                 logs, every_s=5.0)
        airflow(env, "dags", "unpause", DAG_ID)
        run_id = f"manual__production_{int(time.time())}"
        airflow(env, "dags", "trigger", DAG_ID, "--run-id", run_id)

        approved: list[str] = []

        def finished_or_approve() -> str | None:
            """A person on the version page: approves the challenger once it appears."""
            version = challenger(stack) if not approved else None
            if version is not None:
                run([sys.executable, "-m", "pipeline", "registry", "approve", "--version",
                     version], project, stack.env("approver", SEQREC_HOME=str(project)))
                approved.append(version)
            return run_state(env, DAG_ID, run_id)

        state = wait_for("the DAG run to finish", finished_or_approve, RUN_TIMEOUT_S, logs,
                         every_s=5.0)

    tasks = dict(stack.pg.query("airflow", "SELECT task_id, state FROM task_instance "
                                "WHERE run_id = %s", (run_id,)))
    assert state == "success", tasks
    assert tasks == EXPECTED_TASKS
    # The metadata lives in Postgres (read above), and every task ran on the LocalExecutor
    # (the scheduler's record of each finished task instance names it).
    finished = [ln for ln in (tmp_path / "airflow-scheduler.log").read_text().splitlines()
                if "TaskInstance Finished" in ln and run_id in ln]
    ran = {task for task, state in EXPECTED_TASKS.items() if state == "success"}
    assert {t for t in ran if any(f"task_id={t}," in ln for ln in finished)} == ran
    assert all("executor=LocalExecutor(" in ln for ln in finished), finished[:2]
    from mlflow import MlflowClient

    with credentials(*stack.users["reader"]):
        client = MlflowClient(tracking_uri=stack.mlflow.uri, registry_uri=stack.mlflow.uri)
        champion = client.get_model_version_by_alias(MODEL, "champion")
    assert approved and champion.version == approved[0]
    assert champion.tags["approved_by_account"] == "approver"
    assert champion.tags["promoted_by"] == PROMOTER
    assert champion.tags["seqrec.airflow_run_id"] == run_id

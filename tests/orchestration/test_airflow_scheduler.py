"""The DAG under the real scheduler: `scripts/airflow_local.sh` (airflow standalone + MLflow).

Non-default API and log-server ports on purpose: the execution API URL must follow the API
port, or every task fails with "connection refused" while `dags test` still passes.
Triggered through the CLI, like an operator would; waits for the run to succeed.
With the whole pipeline merged, the run retrains on landed data and auto-promotes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.orchestration.airflow_harness import (
    free_port,
    land_synthetic_events,
    make_project,
    missing_pipeline_modules,
)

pytestmark = pytest.mark.slow
DAG_ID = "seqrec_retrain"
RUN_TIMEOUT_S = 1800


def airflow(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True,
                          text=True, timeout=300, check=check)


def wait_for(what: str, probe, timeout_s: float, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(3)
    raise AssertionError(f"timed out waiting for {what}; log tail:\n{log.read_text()[-4000:]}")


def run_state(env: dict[str, str], run_id: str) -> str | None:
    proc = airflow(env, "dags", "list-runs", DAG_ID, "-o", "json", check=False)
    tables = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]  # skip warnings
    runs = json.loads(tables[-1]) if tables else []
    states = {r["run_id"]: r["state"] for r in runs}
    state = states.get(run_id)
    return state if state in ("success", "failed") else None


def test_dag_runs_under_the_real_scheduler(tmp_path):
    full = not missing_pipeline_modules()
    overrides = {"gate": {"require_approval": False, "baseline_margin": -1.0}} if full else {}
    project = make_project(tmp_path / "project", overrides)
    if full:
        land_synthetic_events(project, "week1", seed=1)
    home = tmp_path / "airflow_home"
    api_port, mlflow_port = free_port(), free_port()
    env = cli_env(
        AIRFLOW_HOME=str(home), AIRFLOW_API_PORT=str(api_port), MLFLOW_PORT=str(mlflow_port),
        AIRFLOW_WORKER_LOG_PORT=str(free_port()), AIRFLOW_TRIGGERER_LOG_PORT=str(free_port()),
        SEQREC_BIN=str(Path(sys.executable).parent), PYTHONPATH=str(project),
        SEQREC_SCHEDULE="none",  # only the run triggered here
    )
    log = tmp_path / "airflow_local.log"
    with log.open("w") as out:
        server = subprocess.Popen(["bash", str(project / "scripts" / "airflow_local.sh")],
                                  env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        env_sh = home / "env.sh"
        wait_for("airflow_local.sh to write env.sh", env_sh.exists, 120, log)
        cli = {**env, **dict(
            line.removeprefix("declare -x ").replace('"', "").split("=", 1)
            for line in env_sh.read_text().splitlines()
        )}
        secrets = (home / "secrets.env").read_text()
        assert oct((home / "secrets.env").stat().st_mode)[-3:] == "600"
        assert "AIRFLOW__API__SECRET_KEY=" in secrets and "JWT_SECRET=" in secrets
        wait_for("Airflow and MLflow", lambda: "seqrec: Airflow API and MLflow ready"
                 in log.read_text(), 900, log)
        wait_for("the DAG to be parsed",
                 lambda: DAG_ID in airflow(cli, "dags", "list", check=False).stdout, 300, log)
        airflow(cli, "dags", "unpause", DAG_ID)
        run_id = f"manual__scheduler_test_{int(time.time())}"
        airflow(cli, "dags", "trigger", DAG_ID, "--run-id", run_id)
        state = wait_for("the DAG run to finish", lambda: run_state(cli, run_id),
                         RUN_TIMEOUT_S, log)
        assert state == "success", log.read_text()[-4000:]
        # Tasks really ran through the execution API: the snapshot task wrote its log.
        task_logs = [p for p in (home / "logs").rglob("*.log")
                     if run_id in str(p) and "task_id=snapshot_data" in str(p)]
        assert task_logs, sorted(str(p) for p in (home / "logs").rglob("*"))[:20]
        assert "nothing to retrain" in task_logs[0].read_text() or full
        if full:
            from mlflow import MlflowClient

            uri = f"http://127.0.0.1:{mlflow_port}"
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            assert client.get_model_version_by_alias("seqrec", "champion").version == "1"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)

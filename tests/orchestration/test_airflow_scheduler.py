"""Auto-promotion (`gate.require_approval: false`) under the real scheduler (slow).

`scripts/airflow_local.sh` through the journeys' LocalStack (tests/journeys/stack.py), on
non-default API and log-server ports on purpose: the execution API URL must follow the API
port, or every task fails with "connection refused" while `dags test` still passes.
Triggered through the CLI like an operator would; the run retrains on the landed data and
promotes without anyone approving. The approval journeys are tests/journeys/ (in CI).
"""

from __future__ import annotations

import pytest

from tests.journeys.stack import MODEL, running_stack
from tests.orchestration.airflow_harness import land_synthetic_events

pytestmark = pytest.mark.slow
RUN_TIMEOUT_S = 1800


def test_dag_runs_under_the_real_scheduler_and_auto_promotes(tmp_path):
    overrides = {"gate": {"require_approval": False, "baseline_margin": -1.0}}
    with running_stack(tmp_path / "stack", overrides) as stack:
        secrets = stack.home / "secrets.env"
        assert oct(secrets.stat().st_mode)[-3:] == "600"
        assert "AIRFLOW__API__SECRET_KEY=" in secrets.read_text()
        assert "JWT_SECRET=" in secrets.read_text()
        land_synthetic_events(stack.project, "week1", seed=1)
        run_id = stack.trigger("manual__scheduler_test")
        assert stack.wait_for_run(run_id, RUN_TIMEOUT_S) == "success"
        # Tasks really ran through the execution API: the snapshot task wrote its log.
        assert "snapshot of" in stack.task_log(run_id, "snapshot_data")
        champion = stack.mlflow_client().get_model_version_by_alias(MODEL, "champion")
        assert champion.version == "1"
        assert champion.tags["approved_by"] == "airflow:seqrec_retrain"

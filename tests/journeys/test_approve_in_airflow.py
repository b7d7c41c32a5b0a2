"""The approval answered in Airflow's own UI (`gate.approval_via: airflow`), for real.

`scripts/airflow_local.sh` under its real scheduler with the DAG built around Airflow 3's
human-in-the-loop ApprovalOperator: the first trigger trains and registers v1; in Chromium a
person signs into the Airflow UI as `admin` (the password standalone generated), opens
*Required Actions*, reads the question (with a link to the MLflow version page) and clicks
Approve; the DAG records the approval with the Airflow user's name and promotes v1.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.journeys.browser import browser_page, screenshot_dir
from tests.journeys.stack import MODEL, running_stack

pytestmark = pytest.mark.journey
PARAMS = {"gate": {"baseline_margin": -1.0, "approval_via": "airflow"}}
TRAIN_TIMEOUT_S = 1200
DECIDE_TIMEOUT_S = 300


def test_approval_answered_in_the_airflow_ui_promotes_and_names_the_user(tmp_path):
    with running_stack(tmp_path / "stack", PARAMS) as stack:
        run_id = stack.trigger("manual__journey_hitl")
        stack.wait_for_task(run_id, "approve_in_airflow", {"awaiting_input"}, TRAIN_TIMEOUT_S)
        client = stack.mlflow_client()
        assert client.get_model_version(MODEL, "1").tags["approval"] == "pending"
        assert "Required Actions" in client.get_model_version(MODEL, "1").description

        with browser_page(tmp_path) as page:
            page.goto(stack.api_url)  # -> the sign-in page
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(stack.password())
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Required Actions").click()
            drawer = page.get_by_role("dialog")
            expect(drawer).to_contain_text(f"Promote {MODEL} version 1?")
            expect(drawer).to_contain_text(f"{stack.mlflow_url}/#/models/{MODEL}/versions/1")
            page.screenshot(path=screenshot_dir(tmp_path) / "approve_airflow.png")
            drawer.get_by_role("button", name="Approve").click()
            expect(drawer).to_contain_text("Pending required actions (0)")

        assert stack.wait_for_run(run_id, DECIDE_TIMEOUT_S) == "success"
        assert dict(client.get_registered_model(MODEL).aliases) == {"champion": "1"}
        tags = client.get_model_version(MODEL, "1").tags
        assert tags["approval"] == "approved" and tags["approved_by"] == "admin"
        assert "version 1: promoted; decided by admin" in stack.task_log(run_id, "conclude")
        assert "champion:          v1 (approved by admin)" in stack.registry_cli("status").stdout

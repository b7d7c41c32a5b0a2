"""The README's journey, for real: `make airflow`, trigger, approve in the MLflow UI.

One `scripts/airflow_local.sh` (airflow standalone under its real scheduler + MLflow server,
127.0.0.1, free ports, its own AIRFLOW_HOME) for the whole module, in a copy of the project
with tiny params; the tests run in order, each a chapter of the same story:

1. fresh install: no run starts on its own; the first manual trigger trains on the seeded
   synthetic shop, registers v1 `@challenger` (`approval=pending`) and waits; in Chromium a
   person opens the version page, reads the model card and the gate report, edits the
   `approval` row to `approved` and saves; the DAG promotes v1 to `@champion`; `registry
   status` says who approved: nobody named, so "unknown (set in the MLflow UI)";
2. new data lands; the MLflow server is killed while `register_challenger` runs and comes
   back: the task retries and exactly one new version exists; the person rejects it in the
   UI and adds `approved_by`; `@champion` stays v1, and the DAG log names the reviewer;
3. a trigger with no new data: every task skipped, the log says why, nothing registered.
"""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.conftest import wait_for
from tests.journeys.browser import browser_page, screenshot_dir
from tests.journeys.mlflow_ui import (
    add_tag,
    close_assistant,
    edit_tag,
    open_challenger,
    screenshot_whole_page,
    tag_row,
)
from tests.journeys.stack import MODEL, running_stack
from tests.orchestration.airflow_harness import land_synthetic_events

pytestmark = pytest.mark.journey
UNKNOWN = "unknown (set in the MLflow UI)"
# Tiny params come from the harness; a first run gated on nothing but orchestration (the
# gate's rules have their own tests), a second run that passes the gate whatever it scores,
# retries quick enough for a test, and a sensor that looks every 2 s.
JOURNEY_PARAMS = {
    "gate": {"baseline_margin": -1.0, "min_improvement": -1.0,
             "guard_tolerances": {"hr@10": 1.0}, "approval_poke_interval_s": 2.0},
    # Retries after 30 s, 60 s, 60 s: a restarted MLflow answers within that on 2 busy cores.
    "airflow": {"retries": 3, "retry_delay_minutes": 0.5, "max_retry_delay_minutes": 1.0},
}
# MLflow's client retries a refused connection for minutes by default; with two quick
# retries a task attempt fails while the server is down, which is what Airflow retries.
QUICK_CLIENT = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
TRAIN_TIMEOUT_S = 1200
DECIDE_TIMEOUT_S = 300
WAITING = {"up_for_reschedule", "running"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("journey_mlflow"), JOURNEY_PARAMS,
                       QUICK_CLIENT) as running:
        yield running


def versions(stack) -> list[str]:
    return sorted(mv.version for mv in stack.mlflow_client().search_model_versions(
        f"name = '{MODEL}'"))


def aliases(stack) -> dict[str, str]:
    return dict(stack.mlflow_client().get_registered_model(MODEL).aliases)


def test_first_trigger_trains_and_an_approval_clicked_in_mlflow_promotes(stack, tmp_path):
    dag = stack.api("GET", "/api/v2/dags/seqrec_retrain")
    assert dag["is_paused"] is False  # `make airflow` leaves it ready to trigger
    time.sleep(10)  # a surprise run on a fresh install shows up within a scheduler loop
    assert stack.runs() == [], "a run started before anyone triggered one"

    run_id = stack.trigger("manual__journey_1")
    stack.wait_for_task(run_id, "wait_for_approval", WAITING, TRAIN_TIMEOUT_S)
    assert [r["dag_run_id"] for r in stack.runs()] == [run_id]  # the trigger is the run that trains
    assert stack.mlflow_client().get_model_version(MODEL, "1").tags["approval"] == "pending"

    with browser_page(tmp_path) as page:
        assert open_challenger(page, stack.mlflow_url, MODEL) == "1"
        card = page.get_by_test_id("note-editor-preview-content")
        expect(card.get_by_role("heading", name=f"{MODEL}: model card")).to_be_visible()
        expect(card.get_by_role("heading", name="Metrics vs champion")).to_be_visible()
        expect(card.get_by_role("heading", name="Gate report")).to_be_visible()
        expect(card).to_contain_text("click the pencil on the row approval (now pending)")
        expect(tag_row(page, "approval")).to_contain_text("pending")
        close_assistant(page)
        shots = screenshot_dir(tmp_path)
        screenshot_whole_page(page, shots / "approve.png")
        edit_tag(page, "approval", "approved", screenshot=shots / "approve_edit.png")

    assert stack.wait_for_run(run_id, DECIDE_TIMEOUT_S) == "success"
    assert aliases(stack) == {"champion": "1"}
    assert f"decided by {UNKNOWN}" in stack.task_log(run_id, "conclude")
    status = stack.registry_cli("status").stdout
    assert f"champion:          v1 (approved by {UNKNOWN})" in status


def test_mlflow_restart_during_registration_then_a_rejection_in_the_ui(stack, tmp_path):
    land_synthetic_events(stack.project, "week2", seed=2)
    run_id = stack.trigger("manual__journey_2")
    stack.wait_for_task(run_id, "register_challenger", {"running"}, TRAIN_TIMEOUT_S)
    stack.kill_mlflow()
    stack.wait_for_task(run_id, "register_challenger", {"up_for_retry"}, DECIDE_TIMEOUT_S)
    stack.restart_mlflow()
    stack.wait_for_task(run_id, "wait_for_approval", WAITING, DECIDE_TIMEOUT_S)
    register = stack.tasks(run_id)["register_challenger"]
    assert register["state"] == "success" and register["try_number"] >= 2
    assert "a server did not answer" in stack.task_log(run_id, "register_challenger")
    assert versions(stack) == ["1", "2"]  # the retry registered once
    assert aliases(stack) == {"champion": "1", "challenger": "2"}

    with browser_page(tmp_path) as page:
        assert open_challenger(page, stack.mlflow_url, MODEL) == "2"
        card = page.get_by_test_id("note-editor-preview-content")
        expect(card).to_contain_text("champion v1")  # scored against the champion, same data
        close_assistant(page)
        add_tag(page, "approved_by", "ana")  # the name first, as the card says
        edit_tag(page, "approval", "rejected")
        page.get_by_test_id("tags-section").screenshot(path=screenshot_dir(tmp_path) / "reject.png")

    assert stack.wait_for_run(run_id, DECIDE_TIMEOUT_S) == "success"
    assert aliases(stack) == {"champion": "1", "challenger": "2"}
    assert stack.tasks(run_id)["conclude"]["state"] == "success"
    assert "version 2: rejected; decided by ana" in stack.task_log(run_id, "conclude")
    status = stack.registry_cli("status").stdout
    assert "champion:          v1" in status and "challenger:        v2 (rejected by ana)" in status


def test_a_second_trigger_without_new_data_is_skipped_visibly(stack):
    run_id = stack.trigger("manual__journey_3")
    assert stack.wait_for_run(run_id, DECIDE_TIMEOUT_S) == "success"
    states = {task: ti["state"] for task, ti in stack.tasks(run_id).items()}
    assert set(states.values()) == {"skipped"}, states
    assert "nothing to retrain" in stack.task_log(run_id, "snapshot_data")
    assert versions(stack) == ["1", "2"]
    scheduled = [r for r in stack.runs() if r["run_type"] != "manual"]
    assert scheduled == [], "the weekly schedule started a run of its own"
    wait_for("nothing left running", lambda: all(
        r["state"] in ("success", "failed") for r in stack.runs()), 60)

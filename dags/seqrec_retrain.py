"""seqrec_retrain: retrain on newly landed data, gate against @champion, promote on approval.

    snapshot_data -> run_pipeline -> score_champion -> gate -+-> register_challenger
                                                             |     -> wait_for_approval -> conclude
                                                             +-> record_gate_failure

- `snapshot_data` skips the whole run when `airflow.landing_dir` holds nothing new.
- `run_pipeline` runs `airflow.pipeline_command` (default `dvc repro`) in a per-run workspace;
  a held DVC lock or a killed process is retried with exponential backoff, a pipeline error is not.
- `gate` (`pipeline/orchestration/gate.py`) branches to registration or to recording the
  failure.
- The approval step follows `gate.require_approval` / `gate.approval_via`: a reschedule-mode
  sensor polling the MLflow version tag `approval` (default), Airflow's ApprovalOperator
  (human-in-the-loop), or nothing (auto-promotion).

Parsing imports only airflow.sdk, yaml and pydantic (through `pipeline.params`); the task
code and MLflow are imported when a task runs. Environment: `SEQREC_PROJECT_DIR` (project
folder; default the folder above `dags/`), `SEQREC_SCHEDULE` (cron or preset, `none` for no
schedule; overrides `airflow.schedule`), `MLFLOW_TRACKING_URI`. See docs/airflow.md.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    PokeReturnValue,
    TriggerRule,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

PROJECT_DIR = Path(
    os.environ.get("SEQREC_PROJECT_DIR") or Path(__file__).resolve().parents[1]
).resolve()
if str(PROJECT_DIR) not in sys.path:  # the tasks import the project's own `pipeline` package
    sys.path.insert(0, str(PROJECT_DIR))

from pipeline.params import load_params  # noqa: E402  (light: yaml + pydantic)

PARAMS = load_params(PROJECT_DIR / "params.yaml")
BACKOFF_MULTIPLIER = 2.0
# Slack past the approval deadline so the sensor's own poke marks the version expired first.
SENSOR_TIMEOUT_SLACK_S = 600.0
LANDING_DIR = PROJECT_DIR / PARAMS.airflow.landing_dir
LANDING_ASSET = Asset(name="seqrec_landing", uri=LANDING_DIR.as_uri())


def _schedule():
    """The cron timetable (and/or the landing Asset), first run at the next cron time.

    No `start_date` and `run_immediately=False`: unpausing the DAG does not start a run for
    the cron time just past (with a start date, catchup=False still runs the latest
    interval at once, and a manual trigger queues behind it). Later, a scheduler that was
    down catches up one run, the latest missed.
    """
    cron = os.environ.get("SEQREC_SCHEDULE", PARAMS.airflow.schedule)
    if cron is not None and cron.strip().lower() in ("", "none", "null"):
        cron = None
    timetable = None
    if cron is not None:
        timetable = CronTriggerTimetable(cron, timezone="UTC", run_immediately=False)
    if PARAMS.airflow.trigger_on_asset:
        if timetable is None:
            return LANDING_ASSET
        return AssetOrTimeSchedule(timetable=timetable, assets=LANDING_ASSET)
    return timetable


@contextmanager
def _task_errors():
    """Errors of data, params or code fail at once; locks, kills and a server that did not
    answer (MLflow restarting) go through the retries."""
    from pipeline.errors import SeqrecError, ServiceUnavailableError
    from pipeline.orchestration.workspace import (
        PipelineKilledError,
        PipelineLockedError,
        PipelineUnavailableError,
    )

    try:
        yield
    except (PipelineLockedError, PipelineKilledError, PipelineUnavailableError,
            ServiceUnavailableError):
        raise
    except SeqrecError as exc:
        raise AirflowFailException(str(exc)) from exc


@dag(
    dag_id="seqrec_retrain",
    schedule=_schedule(),
    catchup=False,
    max_active_runs=1,
    tags=["seqrec", "mlops"],
    doc_md=__doc__,
    default_args={
        "owner": "seqrec",
        "retries": PARAMS.airflow.retries,
        "retry_delay": timedelta(minutes=PARAMS.airflow.retry_delay_minutes),
        "retry_exponential_backoff": BACKOFF_MULTIPLIER,
        "max_retry_delay": timedelta(minutes=PARAMS.airflow.max_retry_delay_minutes),
        "execution_timeout": timedelta(minutes=PARAMS.airflow.task_timeout_minutes),
    },
)
def seqrec_retrain():
    @task
    def snapshot_data() -> dict:
        from pipeline.orchestration import tasks as orchestration

        with _task_errors():
            info = orchestration.snapshot(PROJECT_DIR, get_current_context()["run_id"])
        if info is None:
            raise AirflowSkipException("no new data in the landing folder: nothing to retrain")
        return info

    @task(execution_timeout=timedelta(minutes=PARAMS.airflow.pipeline_timeout_minutes))
    def run_pipeline(info: dict) -> dict:
        from pipeline.orchestration import tasks as orchestration

        with _task_errors():
            return orchestration.run_pipeline(PROJECT_DIR, info)

    @task
    def score_champion(info: dict) -> dict:
        from pipeline.orchestration import tasks as orchestration

        with _task_errors():
            return orchestration.score_champion(PROJECT_DIR, info)

    @task.branch
    def gate(info: dict, champion: dict) -> str:
        from pipeline.orchestration import tasks as orchestration

        with _task_errors():
            result = orchestration.run_gate(PROJECT_DIR, info, champion)
        return "register_challenger" if result["passed"] else "record_gate_failure"

    @task
    def record_gate_failure(info: dict) -> dict:
        from pipeline.orchestration import tasks as orchestration
        from pipeline.orchestration.gate import read_json

        report = read_json(Path(info["workspace"]) / orchestration.GATE_REPORT)
        report["outcome"] = "gate_failed"
        orchestration.record(PROJECT_DIR, info, report, version=None)
        return {"outcome": "gate_failed", "reasons": report["reasons"]}

    @task
    def register_challenger(info: dict, champion: dict) -> str:
        from pipeline.orchestration import tasks as orchestration

        with _task_errors():
            return orchestration.register(PROJECT_DIR, info, champion)

    info = snapshot_data()
    pipeline_done = run_pipeline(info)
    champion = score_champion(info)
    pipeline_done >> champion
    branch = gate(info, champion)
    version = register_challenger(info, champion)
    branch >> [version, record_gate_failure(info)]
    _approval_and_conclusion(info, version)


def _approval_and_conclusion(info, version) -> None:
    """The approval step chosen by `gate.require_approval` and `gate.approval_via`."""
    gate_params = PARAMS.gate
    timeout = timedelta(hours=gate_params.approval_timeout_hours)

    @task
    def conclude(info: dict, version: str, approval: dict | None = None) -> dict:
        from pipeline.orchestration import tasks as orchestration

        if approval is None:  # ApprovalOperator's answer (its XCom), or auto-promotion
            approval = _airflow_approval() if gate_params.require_approval else {"decision": "auto"}
            approval["record_in_registry"] = True
        with _task_errors():
            return orchestration.conclude(PROJECT_DIR, info, version, approval)

    if not gate_params.require_approval:
        conclude(info, version)
        return
    if gate_params.approval_via == "mlflow":

        @task.sensor(
            poke_interval=gate_params.approval_poke_interval_s,
            timeout=timeout.total_seconds() + SENSOR_TIMEOUT_SLACK_S,
            mode="reschedule",
        )
        def wait_for_approval(info: dict, version: str) -> PokeReturnValue:
            from pipeline.orchestration import tasks as orchestration

            with _task_errors():
                decision = orchestration.poll_approval(PROJECT_DIR, info, version)
            return PokeReturnValue(is_done=decision is not None, xcom_value=decision)

        conclude(info, version, wait_for_approval(info, version))
        return

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    name = PARAMS.registry.model_name
    version_xcom = "{{ ti.xcom_pull(task_ids='register_challenger') }}"
    # A link the reviewer can open from the Airflow form (the tasks' MLflow, when a server).
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    version_page = (f"{tracking.rstrip('/')}/#/models/{name}/versions/{version_xcom}"
                    if tracking.startswith("http") else f"Models → {name} → version {version_xcom}")
    approval = ApprovalOperator(
        task_id="approve_in_airflow",
        subject=f"Promote {name} version {version_xcom}?",
        body=(
            "The challenger passed the gate. Read its model card and gate report on its MLflow "
            f"version page: {version_page}. Then approve or reject."
        ),
        defaults="Reject",  # on timeout; answered by nobody -> recorded as expired
        response_timeout=timeout,
    )
    # ApprovalOperator skips its direct downstream on "Reject": `answered` absorbs that skip,
    # and `conclude` (none failed, one success) still runs and records the rejection.
    answered = EmptyOperator(task_id="approval_answered")
    done = conclude.override(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)(info, version)
    version >> approval >> answered >> done


def _airflow_approval() -> dict:
    """The ApprovalOperator's answer as a decision; nobody answering means expired."""
    answer = get_current_context()["ti"].xcom_pull(task_ids="approve_in_airflow") or {}
    chosen = (answer.get("chosen_options") or [None])[0]
    by = answer.get("responded_by_user")
    if by is None:
        return {"decision": "expired", "by": None}
    by_name = by.get("name") if isinstance(by, dict) else str(by)
    return {"decision": "approved" if chosen == "Approve" else "rejected", "by": by_name,
            "via": "Airflow UI (Required Actions)"}


seqrec_retrain()

"""Task logic of the retrain DAG as plain functions (`dags/seqrec_retrain.py` only wires them).

Each function takes the project folder, the run's workspace or the facts an upstream task
returned (small JSON-able dicts passed as XCom) and works through the pipeline's CLIs as
subprocesses (`dvc repro`, `python -m pipeline evaluate|registry ...`), so the training
environment can differ from Airflow's. MLflow is read and tagged through its client, imported
lazily. Airflow is never imported here: the DAG maps outcomes to skips and retries.

Environment: `SEQREC_PROJECT_DIR` (the project), `MLFLOW_TRACKING_URI` (default: the project's
`mlflow.db`), `SEQREC_SCHEDULE` (read by the DAG).
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import Any

from pipeline.orchestration.approval import conclude, poll_approval
from pipeline.orchestration.champion import champion_version, score_champion, seed_from_champion
from pipeline.orchestration.freshness import RETRAIN_DECISION, decide_and_apply
from pipeline.orchestration.gate import decide, read_json
from pipeline.orchestration.runtime import (
    CHALLENGER,
    CHAMPION_METRICS,
    EVAL_METRICS,
    GATE_REPORT,
    VALIDATION_METRICS,
    ensure_experiment,
    mlflow_client,
    pipeline_cli,
    project_dir,
    record,
    task_env,
    workspace_params,
)
from pipeline.orchestration.workspace import (
    create_workspace,
    find_new_data,
    mark_used,
    run_command,
    safe_name,
)
from pipeline.params import load_params
from pipeline.registry.lineage import git_changes

# The DAG calls every task body through this module.
__all__ = ["champion_version", "conclude", "poll_approval", "project_dir", "record", "register",
           "run_gate", "run_pipeline", "score_champion", "seed_from_champion", "snapshot",
           "GATE_REPORT"]

log = logging.getLogger(__name__)


def snapshot(project: Path, run_id: str) -> dict[str, Any] | None:
    """New landed data -> a fresh workspace holding it; None when nothing new arrived."""
    params = load_params(project / "params.yaml")
    landing = project / params.airflow.landing_dir
    root = project / params.airflow.workspace_root
    found = find_new_data(landing, root, params.airflow.snapshot)
    if found is None:
        log.info("no new files in %s since the last used snapshot: nothing to retrain", landing)
        return None
    changes = git_changes(project)
    if changes:
        log.warning("%s has uncommitted changes (%s): registration will refuse this run's "
                    "model (a version must be rebuildable from its commit)",
                    project, "; ".join(changes[:3]))
    run_key = safe_name(run_id)
    workspace = root / run_key
    skip = (params.airflow.workspace_root, params.airflow.landing_dir)
    create_workspace(project, workspace, skip, found, landing, params.airflow.landing_source)
    log.info("snapshot of %d files (%d new: %s) in %s", len(found.files), len(found.new),
             found.new, workspace)
    info = {"workspace": str(workspace), "run_key": run_key, "run_id": run_id,
            "files": found.files, "new_files": found.new}
    info["seeded_from_champion"] = seed_from_champion(project, info)
    return info


def run_pipeline(project: Path, info: dict[str, Any]) -> dict[str, Any]:
    """`airflow.pipeline_command` in the workspace; marks the snapshot used on success.

    Raises PipelineLockedError / PipelineKilledError (retry) or PipelineFailedError (do not).
    """
    params = workspace_params(info)
    ensure_experiment(project, params.registry.experiment)
    decision = decide_and_apply(project, info)
    run_command(
        shlex.split(params.airflow.pipeline_command), Path(info["workspace"]),
        task_env(project, info), params.airflow.pipeline_timeout_minutes * 60, "pipeline",
    )
    mark_used(project / params.airflow.workspace_root, info["files"])
    return {"eval": str(Path(info["workspace"]) / EVAL_METRICS), "retrain": decision}


def run_gate(project: Path, info: dict[str, Any], champion: dict[str, Any]) -> dict[str, Any]:
    """Apply the gate, write `reports/gate.json`, record it in the log and MLflow."""
    params = workspace_params(info)
    workspace = Path(info["workspace"])
    validation_path = workspace / VALIDATION_METRICS
    report = decide(
        read_json(workspace / EVAL_METRICS),
        read_json(champion["metrics"]) if champion["metrics"] else None,
        read_json(validation_path) if validation_path.exists() else None,
        params.gate,
        where=str(workspace / EVAL_METRICS),
    ).to_dict()
    report.update(champion_version=champion["version"], airflow_run_id=info["run_id"],
                  snapshot_new_files=info["new_files"])
    retrain_path = workspace / RETRAIN_DECISION
    if retrain_path.is_file():  # warm or rebuild, and why: beside the checks it explains
        report["retrain"] = read_json(retrain_path)
        log.info("retrain: %s: %s", report["retrain"]["mode"], report["retrain"]["reason"])
    for check in report["checks"]:
        log.info("gate %s: %s", "PASS" if check["passed"] else "FAIL", check["detail"])
    log.info("gate decision: %s", report["decision"])
    record(project, info, report, version=None)
    return {"passed": report["decision"] == "pass", "report": str(workspace / GATE_REPORT)}


def register(project: Path, info: dict[str, Any], champion: dict[str, Any]) -> str:
    """Register the workspace's model as `@challenger` (idempotent in the registry CLI)."""
    params = workspace_params(info)
    # --push: data and models reach the DVC remote before the version exists, so every
    # version the DAG registers can be rebuilt (`python -m pipeline reproduce`).
    args = ["registry", "register", "--push", "--gate-report", GATE_REPORT,
            "--airflow-run-id", info["run_id"]]
    if champion["metrics"]:
        args += ["--champion-metrics", CHAMPION_METRICS]
    run_command(pipeline_cli(params, *args), Path(info["workspace"]), task_env(project, info),
                params.airflow.task_timeout_minutes * 60, "register")
    version = mlflow_client(project).get_model_version_by_alias(
        params.registry.model_name, CHALLENGER
    ).version
    log.info("registered %s version %s as @%s", params.registry.model_name, version, CHALLENGER)
    return version



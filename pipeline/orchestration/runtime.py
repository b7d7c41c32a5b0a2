"""What every retrain task shares: the project, its params and MLflow client, the workspace's
environment, the pipeline CLI, the file names tasks pass around, and the gate record.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.orchestration.workspace import command_env
from pipeline.params import Params, load_params
from pipeline.tracking import default_artifact_location, tracking_uri

EVAL_METRICS = "reports/eval.json"  # the full evaluation (metrics/eval.json is the headline)
VALIDATION_METRICS = "reports/validation/summary.json"
CHAMPION_METRICS = "reports/champion_eval.json"
GATE_REPORT = "reports/gate.json"
SEQUENCES_DIR = "data/sequences"
CHAMPION, CHALLENGER = "champion", "challenger"
APPROVAL_TAG = "approval"
APPROVAL_TAGS = (APPROVAL_TAG, "approved_by", "approved_at")  # written by `registry approve`
DECISION_TAG = "seqrec.decision"
SECONDS_PER_HOUR = 3600.0
PROMOTER = "airflow:seqrec_retrain"


def project_dir(default: Path | None = None) -> Path:
    """`SEQREC_PROJECT_DIR`, else `default` (the DAG passes the repo root next to `dags/`)."""
    return Path(os.environ.get("SEQREC_PROJECT_DIR") or default or Path.cwd()).resolve()


def mlflow_client(project: Path):
    from mlflow import MlflowClient

    uri = tracking_uri(project)
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI", uri))


def workspace_params(info: dict[str, Any]) -> Params:
    return load_params(Path(info["workspace"]) / "params.yaml")


def task_env(project: Path, info: dict[str, Any]) -> dict[str, str]:
    return command_env(
        Path(info["workspace"]),
        {"MLFLOW_TRACKING_URI": tracking_uri(project), "SEQREC_PIPELINE_RUN": info["run_key"]},
    )


def pipeline_cli(params: Params, *args: str) -> list[str]:
    prefix = params.airflow.cli_command
    base = shlex.split(prefix) if prefix else [sys.executable, "-m", "pipeline"]
    return [*base, "--params", "params.yaml", *args]


def ensure_experiment(project: Path, name: str) -> str:
    """Create the experiment with artifacts in the project (not in a throw-away workspace)."""
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=default_artifact_location(project))


def record(project: Path, info: dict[str, Any], report: dict[str, Any],
           version: str | None) -> None:
    """Write the report to the workspace and MLflow: the run (JSON, tags, metrics), the version."""
    path = Path(info["workspace"]) / GATE_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    params = workspace_params(info)
    client = mlflow_client(project)
    run_id = pipeline_run_id(project, params, info["run_key"])
    client.log_dict(run_id, report, "gate/gate.json")
    client.set_tag(run_id, "seqrec.gate.decision", report["decision"])
    if "outcome" in report:
        client.set_tag(run_id, DECISION_TAG, report["outcome"])
    for check in report["checks"]:
        if check["value"] is not None and check["reference"] is not None:
            key = "gate." + check["name"].replace("@", "_at_").replace(":", ".")
            client.log_metric(run_id, key + ".delta", check["value"] - check["reference"])
    if version is not None:
        name = params.registry.model_name
        client.set_model_version_tag(name, version, "seqrec.gate.decision", report["decision"])
        if "outcome" in report:
            client.set_model_version_tag(name, version, DECISION_TAG, report["outcome"])
            client.set_model_version_tag(name, version, "seqrec.decided_at", report["concluded_at"])


def pipeline_run_id(project: Path, params: Params, run_key: str) -> str:
    from pipeline.tracking import PIPELINE_KEY_TAG, STAGE_TAG, find_pipeline_run

    experiment_id = ensure_experiment(project, params.registry.experiment)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(project))
    run = find_pipeline_run(experiment_id, run_key)
    if run is not None:
        return run.info.run_id
    created = mlflow_client(project).create_run(
        experiment_id, run_name=f"pipeline {run_key}",
        tags={PIPELINE_KEY_TAG: run_key, STAGE_TAG: "pipeline"},
    )
    mlflow_client(project).set_terminated(created.info.run_id)
    return created.info.run_id



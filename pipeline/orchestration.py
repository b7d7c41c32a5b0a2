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

import json
import logging
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.gate import decide, read_json
from pipeline.params import Params, load_params
from pipeline.tracking import default_artifact_location, tracking_uri
from pipeline.workspace import (
    command_env,
    create_workspace,
    find_new_data,
    mark_used,
    run_command,
    safe_name,
)

log = logging.getLogger(__name__)

EVAL_METRICS = "metrics/eval.json"
VALIDATION_METRICS = "metrics/validation.json"
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


def _client(project: Path):
    from mlflow import MlflowClient

    uri = tracking_uri(project)
    return MlflowClient(tracking_uri=uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI", uri))


def _params(info: dict[str, Any]) -> Params:
    return load_params(Path(info["workspace"]) / "params.yaml")


def _env(project: Path, info: dict[str, Any]) -> dict[str, str]:
    return command_env(
        Path(info["workspace"]),
        {"MLFLOW_TRACKING_URI": tracking_uri(project), "SEQREC_PIPELINE_RUN": info["run_key"]},
    )


def _cli(params: Params, *args: str) -> list[str]:
    prefix = params.airflow.cli_command
    base = shlex.split(prefix) if prefix else [sys.executable, "-m", "pipeline"]
    return [*base, "--params", "params.yaml", *args]


def snapshot(project: Path, run_id: str) -> dict[str, Any] | None:
    """New landed data -> a fresh workspace holding it; None when nothing new arrived."""
    params = load_params(project / "params.yaml")
    landing = project / params.airflow.landing_dir
    root = project / params.airflow.workspace_root
    found = find_new_data(landing, root, params.airflow.snapshot)
    if found is None:
        log.info("no new files in %s since the last used snapshot: nothing to retrain", landing)
        return None
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


def seed_from_champion(project: Path, info: dict[str, Any]) -> str | None:
    """Give the workspace what `@champion` was trained on, as DVC dependencies.

    - its `vocab.parquet` -> `sequences.previous_vocab`: known items keep their token index
      in the new model (docs/sequences.md);
    - its validation summary (the `seqrec.validation` tag) -> `validate.previous_summary`:
      the `volume_change` rule compares this snapshot with the champion's data.

    Returns the champion's version, or None when there is none yet.
    """
    params = _params(info)
    name = params.registry.model_name
    version = champion_version(project, name)
    if version is None:
        return None
    workspace = Path(info["workspace"])
    if params.sequences.previous_vocab:
        _copy_champion_vocab(project, name, version, workspace / params.sequences.previous_vocab)
    if params.validate_.previous_summary:
        _write_champion_summary(project, name, version,
                                workspace / params.validate_.previous_summary)
    return str(version)


def _copy_champion_vocab(project: Path, name: str, version: str, target: Path) -> None:
    import shutil
    import tempfile

    from pipeline.model import VOCAB_FILE
    from pipeline.model_scorer import resolve_model_dir

    dest = target if target.suffix == ".parquet" else target / VOCAB_FILE
    with tempfile.TemporaryDirectory() as tmp:
        folder = resolve_model_dir(f"models:/{name}/{version}", Path(tmp), tracking_uri(project))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / VOCAB_FILE, dest)
    log.info("@%s (version %s) vocabulary -> %s", CHAMPION, version, dest)


def _write_champion_summary(project: Path, name: str, version: str, target: Path) -> None:
    from pipeline.lineage import TAG_VALIDATION
    from pipeline.validate import PREVIOUS_SUMMARY_FILE

    tag = _client(project).get_model_version(name, version).tags.get(TAG_VALIDATION)
    if not tag:
        log.warning("@%s (version %s) has no %s tag: no volume check", CHAMPION, version,
                    TAG_VALIDATION)
        return
    dest = target if target.suffix == ".json" else target / PREVIOUS_SUMMARY_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(json.loads(tag), indent=2) + "\n")
    log.info("@%s (version %s) validation summary -> %s", CHAMPION, version, dest)


def _ensure_experiment(project: Path, name: str) -> str:
    """Create the experiment with artifacts in the project (not in a throw-away workspace)."""
    client = _client(project)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=default_artifact_location(project))


def run_pipeline(project: Path, info: dict[str, Any]) -> dict[str, Any]:
    """`airflow.pipeline_command` in the workspace; marks the snapshot used on success.

    Raises PipelineLockedError / PipelineKilledError (retry) or PipelineFailedError (do not).
    """
    params = _params(info)
    _ensure_experiment(project, params.registry.experiment)
    run_command(
        shlex.split(params.airflow.pipeline_command), Path(info["workspace"]), _env(project, info),
        params.airflow.pipeline_timeout_minutes * 60, "pipeline",
    )
    mark_used(project / params.airflow.workspace_root, info["files"])
    return {"eval": str(Path(info["workspace"]) / EVAL_METRICS)}


def champion_version(project: Path, model_name: str) -> str | None:
    """The version behind `@champion`, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        return _client(project).get_model_version_by_alias(model_name, CHAMPION).version
    except MlflowException:
        return None


def score_champion(project: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate `@champion` on this run's test split; `version` None on the first run."""
    params = _params(info)
    name = params.registry.model_name
    version = champion_version(project, name)
    if version is None:
        log.info("no @champion of %s yet: the gate compares with the baselines", name)
        return {"version": None, "metrics": None}
    args = _cli(params, "evaluate", "--model", f"models:/{name}@{CHAMPION}",
                "--sequences", SEQUENCES_DIR, "--metrics", CHAMPION_METRICS)
    run_command(args, Path(info["workspace"]), _env(project, info),
                params.airflow.task_timeout_minutes * 60, "score champion")
    return {"version": version, "metrics": str(Path(info["workspace"]) / CHAMPION_METRICS)}


def run_gate(project: Path, info: dict[str, Any], champion: dict[str, Any]) -> dict[str, Any]:
    """Apply the gate, write `reports/gate.json`, record it in the log and MLflow."""
    params = _params(info)
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
    for check in report["checks"]:
        log.info("gate %s: %s", "PASS" if check["passed"] else "FAIL", check["detail"])
    log.info("gate decision: %s", report["decision"])
    record(project, info, report, version=None)
    return {"passed": report["decision"] == "pass", "report": str(workspace / GATE_REPORT)}


def record(project: Path, info: dict[str, Any], report: dict[str, Any],
           version: str | None) -> None:
    """Write the report to the workspace and MLflow: the run (JSON, tags, metrics), the version."""
    path = Path(info["workspace"]) / GATE_REPORT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True))
    params = _params(info)
    client = _client(project)
    run_id = _pipeline_run_id(project, params, info["run_key"])
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


def _pipeline_run_id(project: Path, params: Params, run_key: str) -> str:
    from pipeline.tracking import PIPELINE_KEY_TAG, STAGE_TAG, find_pipeline_run

    experiment_id = _ensure_experiment(project, params.registry.experiment)
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(project))
    run = find_pipeline_run(experiment_id, run_key)
    if run is not None:
        return run.info.run_id
    created = _client(project).create_run(
        experiment_id, run_name=f"pipeline {run_key}",
        tags={PIPELINE_KEY_TAG: run_key, STAGE_TAG: "pipeline"},
    )
    _client(project).set_terminated(created.info.run_id)
    return created.info.run_id


def register(project: Path, info: dict[str, Any], champion: dict[str, Any]) -> str:
    """Register the workspace's model as `@challenger` (idempotent in the registry CLI)."""
    params = _params(info)
    args = ["registry", "register", "--gate-report", GATE_REPORT,
            "--airflow-run-id", info["run_id"]]
    if champion["metrics"]:
        args += ["--champion-metrics", CHAMPION_METRICS]
    run_command(_cli(params, *args), Path(info["workspace"]), _env(project, info),
                params.airflow.task_timeout_minutes * 60, "register")
    version = _client(project).get_model_version_by_alias(
        params.registry.model_name, CHALLENGER
    ).version
    log.info("registered %s version %s as @%s", params.registry.model_name, version, CHALLENGER)
    return version


def poll_approval(project: Path, info: dict[str, Any], version: str) -> dict[str, Any] | None:
    """One poke: the person's decision on the version page, expiry, or None (keep waiting).

    Approval is the version tag `approval=approved|rejected`; moving `@champion` to the
    version by hand counts as approval. After `gate.approval_timeout_hours` from registration
    the decision is `expired`.
    """
    params = _params(info)
    client = _client(project)
    name = params.registry.model_name
    mv = client.get_model_version(name, version)
    tags = {k: v for k, v in mv.tags.items() if k in APPROVAL_TAGS}
    decision = mv.tags.get(APPROVAL_TAG)
    if decision in ("approved", "rejected"):
        return {"decision": decision, "by": mv.tags.get("approved_by"), "tags": tags}
    if champion_version(project, name) == version:
        return {"decision": "approved", "tags": {**tags, "via": "@champion moved by hand"}}
    waited_h = (time.time() - mv.creation_timestamp / 1000) / SECONDS_PER_HOUR
    if waited_h >= params.gate.approval_timeout_hours:
        return {"decision": "expired", "tags": tags, "waited_hours": waited_h}
    log.info("version %s: no decision yet (%.3f h of %.3f h)", version, waited_h,
             params.gate.approval_timeout_hours)
    return None


def conclude(project: Path, info: dict[str, Any], version: str,
             approval: dict[str, Any]) -> dict[str, Any]:
    """Promote an approved challenger, or record the rejection or expiry; returns the outcome."""
    params = _params(info)
    workspace = Path(info["workspace"])
    decision = approval["decision"]
    by = approval.get("by") or "seqrec_retrain"
    cli_timeout_s = params.airflow.task_timeout_minutes * 60
    env = _env(project, info)
    if decision in ("auto", "approved") and approval.get("record_in_registry"):
        run_command(_cli(params, "registry", "approve", "--version", version, "--by", by),
                    workspace, env, cli_timeout_s, "approve")
    if decision in ("auto", "approved"):
        run_command(_cli(params, "registry", "promote", "--version", version, "--by", PROMOTER),
                    workspace, env, cli_timeout_s, "promote")
        now_champion = champion_version(project, params.registry.model_name)
        if now_champion != version:
            raise RuntimeError(f"promoted {version} but @champion is version {now_champion}")
        outcome = "promoted"
    elif decision == "rejected":
        if approval.get("record_in_registry"):
            run_command(_cli(params, "registry", "reject", "--version", version, "--by", by),
                        workspace, env, cli_timeout_s, "reject")
        outcome = "rejected"
    else:
        _client(project).set_model_version_tag(
            params.registry.model_name, version, APPROVAL_TAG, "expired"
        )
        outcome = "expired"
    report = read_json(workspace / GATE_REPORT)
    concluded_at = datetime.now(UTC).isoformat()
    report.update(outcome=outcome, approval=approval, version=version, concluded_at=concluded_at)
    log.info("version %s: %s (approval %s)", version, outcome, approval)
    record(project, info, report, version=version)
    return {"outcome": outcome, "version": version}

"""MLflow tracking for pipeline stages: one parent run per pipeline run, one nested run per stage.

Defaults are embedded and local: `sqlite:///<project>/mlflow.db` with artifacts under
`<project>/mlartifacts/`. `MLFLOW_TRACKING_URI` (and the usual MLflow variables, e.g.
`MLFLOW_TRACKING_USERNAME`, `MLFLOW_S3_ENDPOINT_URL`) override them for production.

A pipeline run is identified by `SEQREC_PIPELINE_RUN` when the caller sets it (`make run`,
the Airflow DAG); otherwise by a hash of the params file, so the stages of one `dvc repro`
share a parent run. Stages are separate processes, so the parent is found by its tag.
Nothing here runs at import time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import mlflow

PIPELINE_KEY_TAG = "seqrec.pipeline_key"
STAGE_TAG = "seqrec.stage"
PIPELINE_RUN_ENV = "SEQREC_PIPELINE_RUN"


def project_root(project: str | Path | None = None) -> Path:
    """`project` if given, else `SEQREC_HOME`, else the working directory (where dvc runs)."""
    if project is not None:
        return Path(project).resolve()
    return Path(os.environ.get("SEQREC_HOME", Path.cwd())).resolve()


def tracking_uri(project: str | Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the project's SQLite store."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{project_root(project) / 'mlflow.db'}"
    )


def default_artifact_location(project: str | Path | None = None) -> str | None:
    """Local artifact folder for the embedded store; None lets a remote server decide."""
    if tracking_uri(project).startswith(("http://", "https://")):
        return None
    return (project_root(project) / "mlartifacts").as_uri()


def configure() -> str:
    """Point the mlflow client at the tracking store; returns the URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    # The registry follows the tracking URI unless MLFLOW_REGISTRY_URI says otherwise; calling
    # set_registry_uri here would pin it in os.environ for every later configure().
    return uri


def ensure_experiment(name: str) -> str:
    """Experiment id for `name`, created with the local artifact folder if missing."""
    import mlflow

    configure()
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=default_artifact_location())


def pipeline_key(params_path: str | Path = "params.yaml") -> str:
    """Key shared by every stage of one pipeline run."""
    explicit = os.environ.get(PIPELINE_RUN_ENV)
    if explicit:
        return explicit
    path = Path(params_path)
    content = path.read_bytes() if path.exists() else b""
    return "params-" + hashlib.sha256(content).hexdigest()[:16]


def find_pipeline_run(experiment_id: str, key: str) -> mlflow.entities.Run | None:
    import mlflow

    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}' and tags.`{STAGE_TAG}` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0] if runs else None


@contextmanager
def stage_run(
    stage: str, experiment: str = "seqrec", params_path: str | Path = "params.yaml"
) -> Iterator[mlflow.ActiveRun]:
    """Open the nested MLflow run of `stage` under this pipeline run's parent.

    Call only from rank zero. The parent run is created on first use and left FINISHED;
    each stage re-opens it briefly to nest its own run.
    """
    import mlflow

    experiment_id = ensure_experiment(experiment)
    key = pipeline_key(params_path)
    parent = find_pipeline_run(experiment_id, key)
    if parent is None:
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=f"pipeline {key}",
            tags={PIPELINE_KEY_TAG: key, STAGE_TAG: "pipeline"},
        ) as created:
            parent_id = created.info.run_id
    else:
        parent_id = parent.info.run_id
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=stage,
        # Tag-based nesting: the parent is not active in this process.
        tags={PIPELINE_KEY_TAG: key, STAGE_TAG: stage, "mlflow.parentRunId": parent_id},
    ) as run:
        yield run

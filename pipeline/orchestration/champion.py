"""`@champion` for a retrain: which version it is, what it was trained on (seeded into the
new workspace as DVC dependencies) and its score on the new test split.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import raise_if_unreachable
from pipeline.orchestration.runtime import (
    CHAMPION,
    CHAMPION_METRICS,
    SEQUENCES_DIR,
    mlflow_client,
    pipeline_cli,
    task_env,
    workspace_params,
)
from pipeline.orchestration.workspace import run_command
from pipeline.tracking import tracking_uri

log = logging.getLogger(__name__)


def champion_version(project: Path, model_name: str) -> str | None:
    """The version behind `@champion`, or None when there is none yet."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client(project).get_model_version_by_alias(model_name, CHAMPION).version
    except MlflowException as exc:
        raise_if_unreachable(exc)  # "MLflow is down" must not read as "no champion yet"
        return None


def seed_from_champion(project: Path, info: dict[str, Any]) -> str | None:
    """Give the workspace what `@champion` was trained on, as DVC dependencies.

    - its `vocab.parquet` -> `sequences.previous_vocab`: known items keep their token index
      in the new model (docs/sequences.md);
    - its model folder -> `retrain.init_from`, with `origin.json` naming the version: what a
      warm start copies and the drift stage compares with (docs/retraining.md);
    - its validation summary (the `seqrec.validation` tag) -> `validate.previous_summary`:
      the `volume_change` rule compares this snapshot with the champion's data.

    Returns the champion's version, or None when there is none yet.
    """
    params = workspace_params(info)
    name = params.registry.model_name
    version = champion_version(project, name)
    if version is None:
        return None
    workspace = Path(info["workspace"])
    if params.sequences.previous_vocab or params.retrain.init_from:
        _copy_champion_folder(project, name, version, workspace, params)
    if params.validate_.previous_summary:
        _write_champion_summary(project, name, version,
                                workspace / params.validate_.previous_summary)
    return str(version)


def _copy_champion_folder(project: Path, name: str, version: str, workspace: Path,
                          params) -> None:
    import shutil
    import tempfile

    from pipeline.evaluation.model_scorer import resolve_model_dir
    from pipeline.model.folder import VOCAB_FILE
    from pipeline.model.origin import ORIGIN_FILE

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = resolve_model_dir(uri, Path(tmp), tracking_uri(project))
        if params.sequences.previous_vocab:
            target = workspace / params.sequences.previous_vocab
            dest = target if target.suffix == ".parquet" else target / VOCAB_FILE
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / VOCAB_FILE, dest)
            log.info("@%s (version %s) vocabulary -> %s", CHAMPION, version, dest)
        if params.retrain.init_from:
            dest = workspace / params.retrain.init_from
            shutil.copytree(folder, dest, dirs_exist_ok=True)
            (dest / ORIGIN_FILE).write_text(json.dumps({"uri": uri, "version": version}) + "\n")
            log.info("@%s (version %s) model folder -> %s", CHAMPION, version, dest)


def _write_champion_summary(project: Path, name: str, version: str, target: Path) -> None:
    from pipeline.registry.lineage import TAG_VALIDATION
    from pipeline.validation.summary import PREVIOUS_SUMMARY_FILE

    tag = mlflow_client(project).get_model_version(name, version).tags.get(TAG_VALIDATION)
    if not tag:
        log.warning("@%s (version %s) has no %s tag: no volume check", CHAMPION, version,
                    TAG_VALIDATION)
        return
    dest = target if target.suffix == ".json" else target / PREVIOUS_SUMMARY_FILE
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(json.loads(tag), indent=2) + "\n")
    log.info("@%s (version %s) validation summary -> %s", CHAMPION, version, dest)


def score_champion(project: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate `@champion` on this run's test split; `version` None on the first run."""
    params = workspace_params(info)
    name = params.registry.model_name
    version = champion_version(project, name)
    if version is None:
        log.info("no @champion of %s yet: the gate compares with the baselines", name)
        return {"version": None, "metrics": None}
    args = pipeline_cli(params, "evaluate", "--model", f"models:/{name}@{CHAMPION}",
                "--sequences", SEQUENCES_DIR, "--details", CHAMPION_METRICS)
    run_command(args, Path(info["workspace"]), task_env(project, info),
                params.airflow.task_timeout_minutes * 60, "score champion")
    return {"version": version, "metrics": str(Path(info["workspace"]) / CHAMPION_METRICS)}



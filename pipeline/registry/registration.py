"""Register a packaged model as a new version with `@challenger`, exactly once per pipeline run.

The packaged folder (`models/mlflow_model`) becomes an MLflow 3 LoggedModel whose source run
is the pipeline's parent run (`pipeline.tracking`), then a version of the registered model
with lineage tags, the idempotency key and the model card as its description.

Idempotency: the key `<pipeline run id>:<data hash>` is stored on the version as
`seqrec.idempotency_key` and looked up first, so a retried task finds the version it made
(and only re-points `@challenger` if that never happened) instead of registering twice.
A copy made by the HTTP client's own retry of a lost answer is deleted (one version per key).

A new version carries `approval=pending`, so a person edits that row on the version page.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import RegistryError, raise_if_unreachable
from pipeline.registry import lineage, promotion, provenance
from pipeline.serving.variants import VARIANT_TAG, package_variant

logger = logging.getLogger(__name__)

IDEMPOTENCY_TAG = "seqrec.idempotency_key"
# The OSS SQL registry keeps the LoggedModel only inside `source`; a tag makes it visible.
LOGGED_MODEL_TAG = "seqrec.logged_model_id"
MODEL_TYPE = "seqrec-pyfunc"
CARD_ARTIFACT_DIR = "registry"


@dataclass
class RegisterResult:
    version: str
    created: bool
    challenger_moved: bool
    idempotency_key: str
    run_id: str


def find_version(client, name: str, key: str):
    """The version carrying idempotency `key`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.`{IDEMPOTENCY_TAG}` = '{key}'"
        )
    except MlflowException as exc:
        raise_if_unreachable(exc)  # a server that is down is not "nothing registered yet"
        return None  # no registered model yet
    return min(found, key=lambda mv: int(mv.version)) if found else None


def _ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    try:
        client.create_registered_model(
            name, description="seqrec next-behaviour recommender (see docs/registry.md)"
        )
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise


def _log_packaged_model(
    client, experiment_id: str, run_id: str, package_dir: Path, name: str, tags: dict[str, str],
    lineage_files: dict[str, bytes],
) -> str:
    """Upload the packaged folder as a READY LoggedModel of `run_id`; returns its model id.

    `lineage_files` go under `lineage/` beside the model, so what rebuilds a version travels
    with it (`pipeline.registry.provenance`); loading the model ignores them.
    """
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    logged = client.create_logged_model(
        experiment_id=experiment_id,
        name=name,
        source_run_id=run_id,
        tags=tags,
        model_type=MODEL_TYPE,
    )
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(package_dir, staged)
        # Record where this copy lives; the folder itself is unchanged otherwise.
        mlmodel = Model.load(str(staged / "MLmodel"))
        mlmodel.run_id, mlmodel.model_id = run_id, logged.model_id
        mlmodel.artifact_path = logged.artifact_location
        mlmodel.save(str(staged / "MLmodel"))
        for rel, content in lineage_files.items():
            target = staged / provenance.LINEAGE_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        client.log_model_artifacts(logged.model_id, str(staged))
    client.finalize_logged_model(logged.model_id, "READY")
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    return logged.model_id


def register(
    client,
    *,
    name: str,
    experiment_id: str,
    run_id: str,
    package_dir: Path,
    tags: dict[str, str],
    card: str,
    description: str,
    by: str,
    lineage_files: dict[str, bytes] | None = None,
) -> RegisterResult:
    """Register `package_dir` once for this pipeline run and point `@challenger` at it.

    Args:
        client: an `MlflowClient`.
        name: registered model name.
        experiment_id: experiment of the pipeline run.
        run_id: the pipeline's parent run id (the LoggedModel's source run).
        package_dir: the folder `python -m pipeline package` wrote.
        tags: lineage tags; must hold `lineage.TAG_DATA_HASH`.
        card: the full model card (logged as a run artifact).
        description: the card as it fits the version description.
        by: who registers (recorded in the alias history).
        lineage_files: files stored under `lineage/` with the model (relative path -> bytes).
    """
    if not (package_dir / "MLmodel").is_file():
        raise RegistryError(
            f"{package_dir}: no MLmodel file; run `python -m pipeline package` first"
        )
    data_hash = tags.get(lineage.TAG_DATA_HASH)
    if not data_hash:
        raise RegistryError("no data hash (dvc.lock or data/sequences) for the idempotency key")
    key = f"{run_id}:{data_hash}"
    tags = {**tags, lineage.TAG_PIPELINE_RUN: run_id, IDEMPOTENCY_TAG: key,
            VARIANT_TAG: package_variant(package_dir)}

    existing = find_version(client, name, key)
    if existing is not None:
        version, created = str(existing.version), False
        logger.info("%s v%s already registered for %s; not registering again", name, version, key)
    else:
        _ensure_registered_model(client, name)
        model_id = _log_packaged_model(
            client, experiment_id, run_id, package_dir, name, tags, lineage_files or {}
        )
        # `approval=pending` from the start: the version page then shows a row to edit in place.
        version_tags = {**tags, LOGGED_MODEL_TAG: model_id,
                        promotion.APPROVAL_TAG: promotion.PENDING}
        created_version = client.create_model_version(
            name=name,
            source=f"models:/{model_id}",
            run_id=run_id,
            tags=version_tags,
            description=description,
            model_id=model_id,
        )
        version, created = str(created_version.version), True
        logger.info("registered %s v%s (%s)", name, version, key)
    # Also on a retry: the first try may have died between creating the version and these.
    version = _drop_duplicates(client, name, key, version)
    client.log_text(run_id, card, f"{CARD_ARTIFACT_DIR}/model_card_v{version}.md")

    moved = _point_challenger(client, name, version, by)
    return RegisterResult(version, created, moved, key, run_id)


def _drop_duplicates(client, name: str, key: str, version: str) -> str:
    """Keep one version per idempotency key: the oldest.

    MLflow's HTTP client retries a POST whose answer was lost (a server killed mid-request),
    and a retried create_model_version then makes a second version of the same run. A later
    copy nobody decided on yet is deleted; a decided one is kept and reported.
    """
    found = client.search_model_versions(
        f"name = '{name}' and tags.`{IDEMPOTENCY_TAG}` = '{key}'"
    )
    keep = min([int(mv.version) for mv in found] + [int(version)])
    for mv in found:
        if int(mv.version) == keep:
            continue
        if promotion.is_undecided(mv.tags.get(promotion.APPROVAL_TAG)):
            logger.warning("%s v%s duplicates v%s (%s): deleting it", name, mv.version, keep, key)
            client.delete_model_version(name, mv.version)
        else:
            logger.warning("%s v%s duplicates v%s (%s) but was decided on: kept", name,
                           mv.version, keep, key)
    return str(keep)


def _point_challenger(client, name: str, version: str, by: str) -> bool:
    """`@challenger` -> version unless that version was already decided or promoted."""
    aliases = promotion.current_aliases(client, name)
    decided = client.get_model_version(name, version).tags.get(promotion.APPROVAL_TAG)
    if aliases.get(promotion.CHAMPION) == version or decided == promotion.REJECTED:
        return False
    return promotion.move_alias(client, name, promotion.CHALLENGER, version, by, "register")

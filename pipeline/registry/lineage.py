"""Lineage of a model version: where its code, data, params and checks came from.

Everything here reads local files the pipeline already wrote (`dvc.lock`, `params.yaml`,
`data/sequences`, `reports/validation/summary.json`) and the environment (git, DVC's remote,
Airflow), and returns plain strings ready to be MLflow tags. Missing sources give missing tags,
never errors here; whether a version may be registered without them is decided in
`pipeline.registry.provenance`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.registry import dvc_store

logger = logging.getLogger(__name__)

AIRFLOW_RUN_ENV = "AIRFLOW_CTX_DAG_RUN_ID"
GIT_TIMEOUT_S = 10
LOCK_FILE = "dvc.lock"
HASH_CHUNK_BYTES = 1 << 20
SHORT_HASH_CHARS = 16
VALIDATION_KEYS = ("rows_in", "rows_valid", "rows_quarantined")

TAG_GIT_SHA = "seqrec.git_sha"
TAG_GIT_DIRTY = "seqrec.git_dirty"
TAG_DATA_HASH = "seqrec.data_md5"
TAG_MODEL_HASH = "seqrec.model_md5"
TAG_PARAMS_HASH = "seqrec.params_sha256"
TAG_DATA_START = "seqrec.data_start"
TAG_DATA_END = "seqrec.data_end"
TAG_VALIDATION = "seqrec.validation"
TAG_AIRFLOW_RUN = "seqrec.airflow_run_id"
TAG_PIPELINE_RUN = "seqrec.pipeline_run_id"
TAG_DVC_REMOTE = "seqrec.dvc_remote"
TAG_DVC_REMOTE_NAME = "seqrec.dvc_remote_name"
TAG_DIRTY_ALLOWED = "seqrec.dirty_allowed"
TAG_INIT_FROM = "seqrec.init_from"  # the model whose weights this one started from, or "none"
RETRAIN_DECISION = "reports/retrain.json"  # the retrain DAG's warm-or-rebuild choice
RETRAIN_TAGS = {"mode": "seqrec.retrain_mode", "reason": "seqrec.retrain_reason",
                "warm_runs": "seqrec.warm_runs"}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True
    ).stdout


def git_changes(root: Path) -> list[str] | None:
    """`git status --porcelain` lines of the checkout holding `root`; None outside git.

    Untracked files count: a new module beside the code, or `dvc_plots/` left by a command
    the README suggests, would make the commit an incomplete record of what ran. The
    project's `dvc.lock` does not: it is this run's record (DVC refuses to run with it
    git-ignored, and it changes with every run), and it is stored with the version itself.
    """
    try:
        lines = _git(root, "status", "--porcelain").splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in lines if line.strip() and Path(line[3:].strip('"')).name != LOCK_FILE]


def git_state(root: Path) -> dict[str, str]:
    """`{sha, dirty}` of the git checkout at `root`; empty when it is not one."""
    try:
        sha = _git(root, "rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    changes = git_changes(root)
    return {TAG_GIT_SHA: sha, TAG_GIT_DIRTY: str(bool(changes) or changes is None).lower()}


def dvc_lock_hashes(lock_path: Path, out_paths: dict[str, str]) -> dict[str, str]:
    """md5 of each named output as recorded in `dvc.lock`.

    Args:
        lock_path: the `dvc.lock` file.
        out_paths: tag name -> output path as written in `dvc.yaml` (e.g. `data/sequences`).
    """
    if not lock_path.is_file():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    found: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            for tag, path in out_paths.items():
                if Path(out.get("path", "")) == Path(path) and out.get("md5"):
                    found[tag] = str(out["md5"])
    return found


def folder_hash(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def params_hash(params: Any) -> str:
    """sha256 of the resolved params (key order and comments do not matter)."""
    text = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT_HASH_CHARS]


def data_window(sequences_dir: Path) -> dict[str, str]:
    """First and last event time (UTC ISO) seen by the sequences splits."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    lows, highs = [], []
    for name, columns in (
        ("train.parquet", ["ts"]),
        ("val.parquet", ["history_ts", "target_ts"]),
        ("test.parquet", ["history_ts", "target_ts"]),
    ):
        path = sequences_dir / name
        if not path.is_file():
            continue
        table = pq.read_table(path, columns=columns)
        for column in columns:
            values = table[column]
            if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                values = pc.list_flatten(values)
            bounds = pc.min_max(values).as_py()
            if bounds["min"] is not None:
                lows.append(int(bounds["min"]))
                highs.append(int(bounds["max"]))
    if not lows:
        return {}

    def iso(seconds: int) -> str:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat()

    return {TAG_DATA_START: iso(min(lows)), TAG_DATA_END: iso(max(highs))}


def validation_summary(path: Path) -> dict[str, str]:
    """Row accounting from the validation summary as one compact JSON tag."""
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    kept = {key: summary[key] for key in VALIDATION_KEYS if key in summary}
    return {TAG_VALIDATION: json.dumps(kept, sort_keys=True)} if kept else {}


def retrain_origin(root: Path, model_dir: Path) -> dict[str, str]:
    """Where the weights came from (`training.json`'s `init_from`) and, in a DAG workspace,
    why it warm-started or rebuilt (`reports/retrain.json`)."""
    tags: dict[str, str] = {}
    training = model_dir / "training.json"
    if training.is_file():
        tags[TAG_INIT_FROM] = str(json.loads(training.read_text()).get("init_from") or "none")
    decision = root / RETRAIN_DECISION
    if decision.is_file():
        recorded = json.loads(decision.read_text())
        tags.update({tag: str(recorded[key]) for key, tag in RETRAIN_TAGS.items()
                     if recorded.get(key) is not None})
    return tags


def airflow_run_id(explicit: str | None) -> dict[str, str]:
    run_id = explicit or os.environ.get(AIRFLOW_RUN_ENV)
    return {TAG_AIRFLOW_RUN: run_id} if run_id else {}


def collect(
    root: Path,
    params: Any,
    sequences_dir: Path,
    model_dir: Path,
    validation_path: Path,
    airflow_run: str | None,
) -> dict[str, str]:
    """Every lineage tag available for a model built in the project at `root`.

    The data hash comes from `dvc.lock`; without one (a run outside DVC) the sequences
    folder is hashed directly, so the idempotency key still changes when the data does.
    """
    tags: dict[str, str] = {}
    tags.update(git_state(root))
    tags.update(
        dvc_lock_hashes(
            root / "dvc.lock",
            {
                TAG_DATA_HASH: _relative(sequences_dir, root),
                TAG_MODEL_HASH: _relative(model_dir, root),
            },
        )
    )
    if TAG_DATA_HASH not in tags and sequences_dir.is_dir():
        tags[TAG_DATA_HASH] = "sha256:" + folder_hash(sequences_dir)[: SHORT_HASH_CHARS * 2]
    tags[TAG_PARAMS_HASH] = params_hash(params)
    if sequences_dir.is_dir():
        tags.update(data_window(sequences_dir))
    tags.update(validation_summary(validation_path))
    tags.update(retrain_origin(root, model_dir))
    tags.update(airflow_run_id(airflow_run))
    remote = dvc_store.default_remote(root)
    if remote is not None:
        tags.update({TAG_DVC_REMOTE: remote.url, TAG_DVC_REMOTE_NAME: remote.name})
    return tags


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()

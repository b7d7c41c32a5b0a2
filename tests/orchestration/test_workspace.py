"""Per-run workspaces: new-data detection, project copy with a shared DVC cache, DVC locks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.orchestration import tasks as orchestration
from pipeline.orchestration.workspace import (
    PipelineFailedError,
    PipelineLockedError,
    command_env,
    find_new_data,
    mark_used,
    run_command,
)
from tests.conftest import REPO_ROOT, free_port

DVC = [sys.executable, "-m", "dvc"]
# A one-stage pipeline that reads the snapshot the way ingest does: via data.path/source.
COUNT_STAGE = """
stages:
  count:
    cmd: python count.py
    deps:
      - count.py
      - ${data.path}
    params:
      - data.source
    outs:
      - metrics/count.json
"""
COUNT_SCRIPT = """import json, os, yaml
data = yaml.safe_load(open("params.yaml"))["data"]
os.makedirs("metrics", exist_ok=True)
result = {"files": sorted(os.listdir(data["path"])), "source": data["source"]}
json.dump(result, open("metrics/count.json", "w"))
"""


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One MLflow store for the module: creating its schema costs seconds."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path: Path, monkeypatch, mlflow_uri) -> Path:
    """A git + DVC project with the repo's params, a count stage and an ignored landing dir."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copy(REPO_ROOT / "params.yaml", root / "params.yaml")
    shutil.copy(REPO_ROOT / ".gitignore", root / ".gitignore")
    (root / "dvc.yaml").write_text(COUNT_STAGE)
    (root / "count.py").write_text(COUNT_SCRIPT)
    (root / "data" / "raw").mkdir(parents=True)
    (root / "data" / "raw" / "README.md").write_text("raw data\n")
    (root / "untracked_notes.md").write_text("kept: untracked but not ignored\n")
    (root / "mlflow.db").write_text("ignored state, never copied\n")
    git("init", "-q", cwd=root)
    subprocess.run([*DVC, "init", "-q"], cwd=root, check=True, capture_output=True)
    git("add", "params.yaml", "dvc.yaml", "count.py", ".gitignore", "data/raw/README.md", cwd=root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    return root


def land(project: Path, name: str, text: str = "user_id,item_id\nu1,i1\n") -> Path:
    path = project / "data" / "landing" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_nothing_landed_means_nothing_to_do(project):
    assert orchestration.snapshot(project, "scheduled__2026-11-29T00:00:00+00:00") is None
    (project / "data" / "landing").mkdir(parents=True)
    assert orchestration.snapshot(project, "manual__1") is None


def test_snapshot_copies_source_files_and_points_params_at_the_new_data(project):
    land(project, "events_1.csv")
    info = orchestration.snapshot(project, "manual__2026-11-29T10:00:00+00:00")
    workspace = Path(info["workspace"])
    assert workspace == project / "workspaces" / "manual__2026-11-29T10_00_00_00_00"
    assert info["new_files"] == ["events_1.csv"]
    assert (workspace / "dvc.yaml").exists() and (workspace / "untracked_notes.md").exists()
    assert (workspace / "data" / "raw" / "README.md").exists()
    assert not (workspace / "mlflow.db").exists()
    assert not (workspace / "data" / "landing").exists()
    assert not (workspace / "workspaces").exists()
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    assert params["data"] == {**params["data"], "source": "csv", "path": "data/snapshot"}
    assert (workspace / "data" / "snapshot" / "events_1.csv").read_text().startswith("user_id")
    config = (workspace / ".dvc" / "config.local").read_text()
    assert "no_scm = true" in config
    assert str(project / ".dvc" / "cache") in config


def test_pipeline_runs_in_the_workspace_and_marks_the_snapshot_used(project):
    land(project, "a.csv")
    info = orchestration.snapshot(project, "manual__a")
    result = orchestration.run_pipeline(project, info)
    workspace = Path(info["workspace"])
    assert result["eval"] == str(workspace / "reports" / "eval.json")
    count = json.loads((workspace / "metrics" / "count.json").read_text())
    assert count == {"files": ["a.csv"], "source": "csv"}
    assert not (project / "metrics").exists()  # the project itself is untouched
    # the output went to the project's shared cache
    assert any((project / ".dvc" / "cache").rglob("*"))
    assert orchestration.snapshot(project, "manual__b") is None
    time.sleep(0.01)
    land(project, "b.csv")
    again = orchestration.snapshot(project, "manual__c")
    assert again["new_files"] == ["b.csv"]
    assert sorted(again["files"]) == ["a.csv", "b.csv"]  # snapshot: all = full history


def test_snapshot_new_mode_takes_only_unused_files(tmp_path):
    landing, state = tmp_path / "landing", tmp_path / "ws"
    landing.mkdir()
    (landing / "old.parquet").write_bytes(b"x")
    mark_used(state, find_new_data(landing, state, "all").files)
    (landing / "new.parquet").write_bytes(b"y")
    snap = find_new_data(landing, state, "new")
    assert list(snap.files) == ["new.parquet"] and snap.new == ["new.parquet"]
    (landing / "old.parquet").write_bytes(b"changed")  # a rewritten file counts as new
    assert "old.parquet" in find_new_data(landing, state, "new").new


def test_unknown_landing_format_is_a_clear_error(project):
    land(project, "events.json")
    from pipeline.orchestration.workspace import WorkspaceError

    with pytest.raises(WorkspaceError, match="landing_source"):
        orchestration.snapshot(project, "manual__x")


def test_held_dvc_lock_raises_a_retryable_error_and_changes_nothing(project):
    import zc.lockfile

    land(project, "a.csv")
    info = orchestration.snapshot(project, "manual__lock")
    workspace = Path(info["workspace"])
    (workspace / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
    held = zc.lockfile.LockFile(str(workspace / ".dvc" / "tmp" / "lock"))  # another "dvc"
    try:
        with pytest.raises(PipelineLockedError, match="retry later"):
            orchestration.run_pipeline(project, info)
    finally:
        held.close()
    assert not (workspace / "metrics" / "count.json").exists()
    assert orchestration.snapshot(project, "manual__again") is not None  # not marked used
    orchestration.run_pipeline(project, info)  # the retry succeeds once the lock is free
    assert (workspace / "metrics" / "count.json").exists()


def test_failing_command_is_not_retryable_and_names_the_command(tmp_path):
    env = command_env(tmp_path)
    with pytest.raises(PipelineFailedError, match=r"pipeline: exited 3: .*boom"):
        run_command([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], tmp_path,
                    env, 30, "pipeline")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)


def test_workspace_pushes_its_snapshot_and_outputs_to_the_projects_remote(project):
    """What the DAG's register task does first (`registry register --push`): the landed
    snapshot gets a .dvc file (the workspace is no git checkout) and goes, with the outputs,
    to the project's own remote, whose relative URL must not point into the workspace."""
    from pipeline.params import load_params
    from pipeline.registry import dvc_store, provenance

    subprocess.run([*DVC, "remote", "add", "-d", "local", ".dvc-remote"], cwd=project,
                   check=True, capture_output=True)
    land(project, "a.csv")
    info = orchestration.snapshot(project, "manual__push")
    orchestration.run_pipeline(project, info)
    workspace = Path(info["workspace"])
    remote = dvc_store.default_remote(workspace)
    assert remote is not None and Path(remote.url) == project / ".dvc-remote"
    params = load_params(workspace / "params.yaml")
    assert dvc_store.untracked_inputs(workspace, params) == ["data/snapshot/a.csv"]

    provenance.push(workspace, params)
    assert dvc_store.untracked_inputs(workspace, params) == []
    assert dvc_store.dvc_files(workspace, params) == ["data/snapshot.dvc"]
    assert not (workspace / ".dvc-remote").exists()
    pushed = {path.parent.name + path.name for path in (project / ".dvc-remote").rglob("*")
              if path.is_file()}
    for output in (workspace / "data" / "snapshot" / "a.csv", workspace / "metrics" / "count.json"):
        assert hashlib.md5(output.read_bytes()).hexdigest() in pushed, output


def test_a_server_that_did_not_answer_is_retryable(tmp_path):
    """`python -m pipeline` exits EXIT_RETRY when MLflow is down: the DAG retries the task."""
    from pipeline.errors import EXIT_RETRY
    from pipeline.orchestration.workspace import PipelineUnavailableError

    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    env = command_env(tmp_path, {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    })
    env["PYTHONPATH"] = str(REPO_ROOT)
    with pytest.raises(PipelineUnavailableError, match="register: a server did not answer"):
        run_command([sys.executable, "-m", "pipeline", "registry", "status"], tmp_path, env, 120,
                    "register")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "registry", "status"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_RETRY
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: a server did not answer")

"""Per-run workspaces for the retrain DAG: snapshot landed data, copy the project, run commands.

A workspace is `<project>/<airflow.workspace_root>/<run>/`: a copy of the project's source
files (git-tracked and untracked-but-not-ignored; no data, models, MLflow or Airflow state)
whose `.dvc/config.local` points at the project's DVC cache. `dvc repro` there re-uses every
cached stage output (run cache), so only stages whose inputs changed run, and two runs never
write into each other's files. A retried task re-uses its workspace (checkpoints resume).

Landed files are fingerprinted by (size, mtime); `landing_state.json` next to the workspaces
remembers which fingerprints a successful pipeline run has already used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.errors import EXIT_RETRY, SeqrecError

log = logging.getLogger(__name__)

LANDING_STATE_FILE = "landing_state.json"
SNAPSHOT_DIR = "data/snapshot"
# Never copied into a workspace when the project is not a git checkout: state, not source.
STATE_NAMES = {
    ".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", "airflow_home", "mlartifacts",
    "mlruns", "mlflow.db", "models", "checkpoints", "metrics", "plots", "reports", ".dvc-remote",
}
STATE_DIRS = ("data/interim", "data/validated", "data/quarantine", "data/sequences", ".dvc/tmp",
              ".dvc/cache")
# What `dvc` prints when another process holds the repo lock or an rwlock on our paths.
DVC_LOCK_MARKERS = ("Unable to acquire lock", "is busy, it is being blocked by")
EXTENSION_SOURCES = {".csv": "csv", ".parquet": "parquet"}


class WorkspaceError(SeqrecError):
    """The landing folder or the project cannot be turned into a workspace."""


class PipelineLockedError(SeqrecError):
    """DVC's lock is held by another process: nothing was changed; retry later."""


class PipelineFailedError(SeqrecError):
    """The pipeline command exited with an error of its own (data, params or code)."""


class PipelineKilledError(SeqrecError):
    """The pipeline command was killed by a signal (out of memory, timeout): worth a retry."""


class PipelineUnavailableError(SeqrecError):
    """A server the command needs (MLflow) did not answer (`EXIT_RETRY`): worth a retry."""


@dataclass(frozen=True)
class Snapshot:
    """Landed files chosen for one run: relative path -> fingerprint."""

    files: dict[str, list[int]]
    new: list[str]


def safe_name(run_id: str) -> str:
    """A folder- and MLflow-safe form of an Airflow run id."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("_")[:120]


def _fingerprints(landing: Path) -> dict[str, list[int]]:
    files = {}
    for path in sorted(landing.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            stat = path.stat()
            files[path.relative_to(landing).as_posix()] = [stat.st_size, stat.st_mtime_ns]
    return files


def _read_state(workspace_root: Path) -> dict[str, list[int]]:
    path = workspace_root / LANDING_STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def find_new_data(landing: Path, workspace_root: Path, mode: str) -> Snapshot | None:
    """Landed files for this run, or None when nothing arrived since the last used snapshot."""
    if not landing.is_dir():
        return None
    current = _fingerprints(landing)
    used = _read_state(workspace_root)
    new = [name for name, fp in current.items() if used.get(name) != fp]
    if not new:
        return None
    files = current if mode == "all" else {name: current[name] for name in new}
    return Snapshot(files=files, new=new)


def mark_used(workspace_root: Path, snapshot_files: dict[str, list[int]]) -> None:
    """Remember these fingerprints as used (atomic replace: a crash leaves the old state)."""
    state = {**_read_state(workspace_root), **snapshot_files}
    workspace_root.mkdir(parents=True, exist_ok=True)
    tmp = workspace_root / f".{LANDING_STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    tmp.replace(workspace_root / LANDING_STATE_FILE)


def _project_files(project: Path) -> list[Path]:
    """Source files of the project: git's view when it is a checkout, else a filtered walk."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=project, capture_output=True, check=True,
        ).stdout
        return [Path(p) for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for path in project.rglob("*"):
            rel = path.relative_to(project)
            if path.is_file() and not (set(rel.parts) & STATE_NAMES) and not any(
                rel.as_posix().startswith(d + "/") for d in STATE_DIRS
            ):
                files.append(rel)
        return files


def dvc_cache_dir(project: Path) -> Path:
    """The project's DVC cache (the default, or `cache.dir` from its config)."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir"], cwd=project, capture_output=True, text=True
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip())
    return project / ".dvc" / "cache"


def create_workspace(
    project: Path, workspace: Path, skip: tuple[str, ...], snapshot: Snapshot | None,
    landing: Path, landing_source: str | None,
) -> Path:
    """Copy the project's source files into `workspace`, share the DVC cache, add the data.

    `skip`: project-relative folders never copied (the landing folder, the workspaces).
    Idempotent: a retry overwrites the source files and keeps outputs from the last try.
    Returns the workspace's params file.
    """
    prefixes = tuple(Path(p).as_posix().rstrip("/") + "/" for p in skip)
    for rel in _project_files(project):
        if rel.as_posix().startswith(prefixes):
            continue
        target = workspace / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (project / rel).is_file():
            shutil.copy2(project / rel, target)
    if not (workspace / ".dvc").is_dir():
        raise WorkspaceError(f"{project}: not a DVC project (no .dvc folder to copy)")
    (workspace / ".dvc" / "config.local").write_text(
        # no_scm: the workspace is no git checkout (and lies in the project's ignored folder).
        f"[core]\n    no_scm = true\n[cache]\n    dir = {dvc_cache_dir(project)}\n"
        + _remote_urls(project)
    )
    params_path = workspace / "params.yaml"
    if snapshot is not None:
        _copy_snapshot(snapshot, landing, workspace / SNAPSHOT_DIR)
        raw = yaml.safe_load(params_path.read_text()) or {}
        data = raw.setdefault("data", {})
        data["source"] = _snapshot_source(snapshot, data.get("source", "synthetic"),
                                          landing_source, landing)
        data["path"] = SNAPSHOT_DIR
        params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return params_path


def _remote_urls(project: Path) -> str:
    """The project's DVC remotes as config lines, so `dvc push` in the workspace reaches them.

    A local remote's URL is relative to the config that names it (`../.dvc-remote`): copied
    into the workspace it would point into the workspace; DVC's resolved URL does not.
    """
    try:
        from pipeline.registry.dvc_store import remotes

        urls = remotes(project)
    except ImportError:  # Airflow's own environment may lack DVC (the pipeline's has it)
        log.warning("DVC is not importable here: the workspace keeps %s's remote URLs as written",
                    project)
        return ""
    return "".join(
        f"['remote \"{name}\"']\n    url = {url}\n" for name, url in urls.items()
    )


def _copy_snapshot(snapshot: Snapshot, landing: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    for name in snapshot.files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(landing / name, target / name)


def _snapshot_source(
    snapshot: Snapshot, configured: str, landing_source: str | None, landing: Path
) -> str:
    if landing_source:
        return landing_source
    if configured != "synthetic":
        return configured
    kinds = {EXTENSION_SOURCES.get(Path(name).suffix.lower()) for name in snapshot.files}
    if len(kinds) != 1 or None in kinds:
        raise WorkspaceError(
            f"{landing}: cannot tell the source format of {sorted(snapshot.files)}; "
            "set airflow.landing_source (or data.source) in params.yaml"
        )
    return kinds.pop()


def command_env(workspace: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for commands in a workspace: its code first, this Python's tools on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(workspace), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.update(extra or {})
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)


def run_command(
    argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float, what: str
) -> list[str]:
    """Run `argv`, streaming its output to the log; classify failures for retry decisions.

    The command runs in its own process group, killed as a whole on timeout or when the task
    is interrupted, so a killed Airflow task never leaves a `dvc repro` holding the lock.
    Returns the output lines.
    """
    log.info("%s: %s (in %s)", what, " ".join(argv), cwd)
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    watchdog = threading.Timer(timeout_s, _kill_group, args=(proc,))
    watchdog.start()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("%s | %s", what, line.rstrip())
            lines.append(line.rstrip())
        proc.wait()
    except BaseException:  # Airflow's timeout or a kill of the task: take the children along
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        watchdog.cancel()
    if proc.returncode == 0:
        return lines
    text = "\n".join(lines)
    if any(marker in text for marker in DVC_LOCK_MARKERS):
        raise PipelineLockedError(f"{cwd}: {what}: DVC lock held by another process; retry later")
    if proc.returncode == EXIT_RETRY:
        tail = " | ".join(lines[-2:])
        raise PipelineUnavailableError(f"{what}: a server did not answer; retry later: {tail}")
    if proc.returncode < 0:
        raise PipelineKilledError(
            f"{what}: killed by signal {-proc.returncode} (timeout {timeout_s:.0f} s or memory)"
        )
    tail = " | ".join(lines[-3:])
    raise PipelineFailedError(f"{cwd}: {what}: exited {proc.returncode}: {tail}")

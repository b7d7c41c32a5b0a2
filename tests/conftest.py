"""Shared fixtures: the repo root, a CLI runner that uses this checkout, shared datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

def _find_shared_data() -> Path:
    """`../shared/data` beside the checkout (CI, main) or one level up (git worktrees)."""
    if os.environ.get("SEQREC_SHARED_DATA"):
        return Path(os.environ["SEQREC_SHARED_DATA"])
    for base in (REPO_ROOT.parent, REPO_ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return REPO_ROOT.parent / "shared" / "data"


SHARED_DATA = _find_shared_data()

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # tests never phone home


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for a subprocess that must import this checkout's `pipeline`."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "GX_ANALYTICS_ENABLED": "false"}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run `python -m pipeline ARGS` in `cwd`; returns the completed process."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pipeline {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def git_commit_all(root: Path, message: str = "snapshot") -> str:
    """`git add -A` and commit in `root` (a repository is made if missing); returns the sha.

    Registration refuses a checkout with uncommitted changes, as a real project would be.
    """
    git = ["git", "-c", "user.name=seqrec-test", "-c", "user.email=test@localhost"]
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", message], cwd=root, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, or skip when this checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


def use_store(monkeypatch, uri: str) -> None:
    """Point MLflow's tracking and registry at `uri` for one test.

    `mlflow.set_tracking_uri`/`set_registry_uri` (called by `pipeline.tracking.configure`)
    also write these variables into `os.environ`; setting them through monkeypatch first
    makes sure they are restored, so one test's store never leaks into the next.
    """
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float,
             logs: Path | Callable[[], Iterable[Path]] | None = None, every_s: float = 2.0):
    """Poll `probe` until it returns something truthy and return that; on timeout fail naming
    `what`, with the tail of each log (a file, or a callable listing the files, for logs
    that appear while waiting)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(every_s)
    paths = [] if logs is None else [logs] if isinstance(logs, Path) else list(logs())
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in paths if p.exists())
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout_s}s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` on 127.0.0.1 (SQLite store, proxied artifacts); yields its URI."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         # Proxied artifacts: clients upload over HTTP, as against a remote server.
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=cli_env(), stdout=(root / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout_s=120, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def tiny_repro(tmp_path_factory) -> Path:
    """One `dvc repro` of the tiny project (a committed git repo) for the whole session."""
    from tests.tiny_project import dvc, tiny_project

    root = tiny_project(tmp_path_factory.mktemp("tiny_project"))
    proc = dvc("repro", cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root

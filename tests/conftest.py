"""Shared fixtures: the repo root, a CLI runner that uses this checkout, shared datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture
def shared_data() -> Path:
    """`../shared/data`, or skip when this checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA

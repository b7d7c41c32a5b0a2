"""A copy of this checkout with tiny params, as its own git repository: `dvc repro` in ~1 min.

`tests/test_pipeline_e2e.py` runs the pipeline in it; `tests/registry/test_reproduce.py`
registers, pushes and rebuilds that same run (the session fixture `tiny_repro` in conftest).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, cli_env, git_commit_all

TINY_PARAMS = {
    "synthetic": {"n_users": 300, "n_items": 120, "n_categories": 8, "n_brands": 10, "days": 20},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "finetune": {"epochs": 2, "batch_size": 64, "patience": 2},
    "model": {"hidden_dim": 16, "n_layers": 1, "n_heads": 1},
}


def tiny_project(dest: Path, overrides: dict = TINY_PARAMS) -> Path:
    """Copy the project's source files (git's view) into `dest`, shrink its params, commit.

    Committed, because a version registered from it must be rebuildable from a commit.
    """
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if name == "dvc.lock":  # a run's record (`make run` leaves one untracked), not source
            continue
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit_all(dest, "tiny seqrec")
    return dest


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`dvc ARGS` in `cwd` as `make run` would: the venv's tools on PATH, the default store."""
    env = cli_env(SEQREC_HOME=str(cwd))
    env.pop("MLFLOW_TRACKING_URI", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )

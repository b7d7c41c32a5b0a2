"""A DVC remote on the S3 server: `dvc push`, then `dvc pull` in a fresh clone restores every
cached output of the pipeline bit for bit."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.production.conftest import DVC_BUCKET, git, run

pytestmark = pytest.mark.production


def file_hashes(root: Path, outs: list[str]) -> dict[str, str]:
    hashes = {}
    for out in outs:
        path = root / out
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            hashes[str(f.relative_to(root))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return hashes


def uncached_paths(project: Path) -> set[str]:
    """Outputs marked `cache: false` (metrics, plots, reports, checkpoints): neither in the
    cache nor in git, so a fresh clone has none of them."""
    uncached = set()
    for stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                if isinstance(entry, dict):
                    uncached |= {p for p, opts in entry.items() if not opts.get("cache", True)}
    return uncached


def cached_outs(project: Path) -> list[str]:
    """Outputs DVC stores in its cache, and so pushes."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    outs = {o["path"] for s in lock["stages"].values() for o in s.get("outs", [])}
    return sorted(outs - uncached_paths(project))


def test_push_then_pull_into_a_fresh_clone_restores_data_and_models(stack, prod_project,
                                                                   tmp_path):
    dvc = str(Path(sys.executable).parent / "dvc")
    outs = cached_outs(prod_project)
    assert {"data/sequences", "models/finetuned", "models/mlflow_model"} <= set(outs), outs
    env = stack.env(None)
    run([dvc, "push"], prod_project, env)
    assert stack.s3.keys(DVC_BUCKET, prefix="seqrec/"), "nothing reached the bucket"

    clone = tmp_path / "clone"
    git("clone", "-q", str(prod_project), str(clone), cwd=tmp_path)
    assert not (clone / "models").exists()  # git carries the code and dvc.lock only
    run([dvc, "pull"], clone, env)
    original, restored = file_hashes(prod_project, outs), file_hashes(clone, outs)
    assert len(original) > 10 and restored == original
    # DVC agrees: every pulled output matches dvc.lock; only the uncached ones are missing.
    status = json.loads(run([dvc, "status", "--json"], clone, env).stdout)
    differences = {(path, change) for entries in status.values() for entry in entries
                   for changes in entry.values() for path, change in changes.items()}
    assert {path for path, _ in differences} <= uncached_paths(clone), differences
    assert {change for _, change in differences} <= {"deleted"}, differences

"""The whole DVC pipeline on a tiny synthetic shop, in a fresh copy of the project.

This is what `make run` does, shrunk: it proves the stages fit together through `dvc.yaml`
(paths, params, outputs), that nothing is lost between ingest and validation, and that a second
`dvc repro` with nothing changed runs no stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.conftest import REPO_ROOT, cli_env

STAGES = (
    "ingest",
    "validate",
    "build_sequences",
    "pretrain",
    "finetune",
    "finetune_scratch",
    "evaluate",
    "package",
)

TINY_PARAMS = {
    "synthetic": {"n_users": 300, "n_items": 120, "n_categories": 8, "n_brands": 10, "days": 20},
    "pretrain": {"epochs": 1, "batch_size": 64},
    "finetune": {"epochs": 2, "batch_size": 64, "patience": 2},
    "model": {"hidden_dim": 16, "n_layers": 1, "n_heads": 1},
}


def tiny_project(dest: Path, overrides: dict = TINY_PARAMS) -> Path:
    """Copy the tracked project files into `dest` and shrink its params."""
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
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


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tiny_project(tmp_path_factory.mktemp("project"))
    proc = dvc("repro", cwd=root)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root


def test_every_stage_ran_and_wrote_its_outputs(project):
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"])
    for path in (
        "data/interim/events.parquet",
        "data/validated/events.parquet",
        "data/sequences/vocab.parquet",
        "models/pretrained/model.safetensors",
        "models/finetuned/model.safetensors",
        "models/scratch/model.safetensors",
        "metrics/eval.json",
        "reports/eval.html",
        "reports/validation/index.html",
        "models/mlflow_model/MLmodel",
    ):
        assert (project / path).exists(), path


def test_no_row_is_lost_between_ingest_and_validation(project):
    summary = json.loads((project / "reports/validation/summary.json").read_text())
    assert summary["rows_in"] == summary["rows_valid"] + summary["rows_quarantined"]
    assert summary["rows_quarantined"] == 0  # the synthetic shop is clean
    validated = pd.read_parquet(project / "data/validated/events.parquet")
    assert len(validated) == summary["rows_valid"]


def test_eval_metrics_hold_model_baselines_and_slices(project):
    metrics = json.loads((project / "reports/eval.json").read_text())
    assert {"model", "baselines", "slices"} <= set(metrics)
    assert 0.0 <= metrics["model"]["ndcg@10"] <= 1.0
    assert "popularity" in metrics["baselines"]


def test_second_repro_runs_no_stage(project):
    proc = dvc("repro", cwd=project)
    assert proc.returncode == 0, proc.stderr
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in proc.stdout
    assert "Running stage" not in proc.stdout


def test_dvc_dag_and_metrics_show(project):
    dag = dvc("dag", "--md", cwd=project)
    assert dag.returncode == 0, dag.stderr
    for stage in STAGES:
        assert stage in dag.stdout
    shown = dvc("metrics", "show", "--json", cwd=project)
    assert shown.returncode == 0, shown.stderr
    files = json.loads(shown.stdout)[""]["data"]
    headline = files["metrics/eval.json"]["data"]
    assert {"model", "transformer_scratch", "repeat_last", "purchase_auc"} <= set(headline)
    assert set(files["metrics/sequences.json"]["data"]) == {"users", "items"}
    # the headline table (one row per file) fits a 200-column terminal
    table = dvc("metrics", "show", cwd=project)
    assert max(len(line) for line in table.stdout.splitlines()) <= 200, table.stdout

"""The whole DVC pipeline on a tiny synthetic shop, in a fresh copy of the project.

This is what `make run` does, shrunk: it proves the stages fit together through `dvc.yaml`
(paths, params, outputs), that nothing is lost between ingest and validation, and that a second
`dvc repro` with nothing changed runs no stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.tiny_project import dvc

STAGES = (
    "ingest",
    "validate",
    "build_sequences",
    "drift",
    "pretrain",
    "finetune",
    "finetune_scratch",
    "evaluate",
    "package",
)


@pytest.fixture(scope="module")
def project(tiny_repro) -> Path:
    return tiny_repro


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
    assert files["metrics/drift.json"]["data"] == {"drifted": False}  # no champion yet
    # the headline table (one row per file) fits a 200-column terminal
    table = dvc("metrics", "show", cwd=project)
    assert max(len(line) for line in table.stdout.splitlines()) <= 200, table.stdout


def test_the_checkout_stays_clean_through_the_readme_commands(project):
    """After `dvc repro` and the README's DVC commands, git sees only the run's own dvc.lock.

    DVC refuses a git-ignored dvc.lock, so that one file stays untracked by design and is
    stored with each registered version instead (docs/reproduce.md); anything else here
    would make a registered version's commit an incomplete record of its code.
    """
    import subprocess

    for args in (("plots", "show"), ("metrics", "show"), ("dag",), ("status",)):
        proc = dvc(*args, cwd=project)
        assert proc.returncode == 0, (args, proc.stderr)
    assert (project / "dvc_plots" / "index.html").is_file()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, check=True,
                            capture_output=True, text=True).stdout
    assert status.splitlines() == ["?? dvc.lock"], status

"""Rebuilding registered versions from their lineage, refusing what cannot be rebuilt, diff.

Fast tests register a tiny package in a committed tmp project (SQLite store, in-process CLI).
The end-to-end test is the issue's "done when" on the tiny pipeline: `dvc repro`, `registry
register` and `dvc push` in one clone, then `python -m pipeline reproduce models:/seqrec/1` in
a second clone, with real git, DVC and MLflow throughout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.registry import lineage, provenance, recorded
from pipeline.registry.reproduce import TAG_REPRODUCE_DELTA, TAG_REPRODUCED_AT
from tests.conftest import git_commit_all, run_cli
from tests.registry_fixtures import enter_project, make_package, write_project_files
from tests.tiny_project import dvc

NAME = "seqrec"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("packaged")
    make_package(root)
    return root


@pytest.fixture
def project(tmp_path, package, monkeypatch):
    """A committed project whose outputs are the tiny package; the CLI runs in it."""
    return enter_project(tmp_path, package, monkeypatch)


def cli(*args: str) -> int:
    return main(list(args))


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def version_tags(project: Path, version: str = "1") -> dict[str, str]:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(NAME, version).tags


def test_registration_refuses_a_dirty_tree_and_reproduce_refuses_what_was_allowed(
    project, capsys
):
    (project / "params.yaml").write_text("registry:\n  model_name: seqrec\n# tuned by hand\n")
    assert cli("registry", "register") == 1
    error = one_error(capsys)
    assert "params.yaml" in error and "uncommitted" in error and "--allow-dirty" in error

    assert cli("registry", "register", "--allow-dirty") == 0
    tags = version_tags(project)
    assert tags[lineage.TAG_GIT_DIRTY] == "true" and tags[lineage.TAG_DIRTY_ALLOWED] == "true"
    # the uncommitted diff travels with the version
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = recorded.resolve(client, "@challenger", NAME)
    assert recorded.fetch_lineage(found, uri, uri, project / "lineage_v1") is not None
    assert "tuned by hand" in found.file(provenance.PATCH_FILE).read_text()

    capsys.readouterr()
    assert cli("reproduce", "models:/seqrec/1") == 1
    error = one_error(capsys)
    assert "registered from a dirty tree" in error and "--allow-dirty" in error
    assert TAG_REPRODUCED_AT not in version_tags(project)


def test_registration_refuses_an_input_neither_git_nor_dvc_tracks(project, capsys):
    raw = project / "raw"
    raw.mkdir()
    (raw / "events.csv").write_text("user_id,item_id\nu1,i1\n")
    (raw / ".gitignore").write_text("events.csv\n")  # kept out of git, and no .dvc file
    (project / "params.yaml").write_text(
        "registry:\n  model_name: seqrec\ndata:\n  source: csv\n  path: raw/events.csv\n"
    )
    git_commit_all(project, "read raw/events.csv")
    assert cli("registry", "register") == 1
    error = one_error(capsys)
    assert "raw/events.csv" in error and "dvc add raw/events.csv" in error


def test_registration_checks_the_tree_it_runs_in_not_seqrec_home(
    project, tmp_path_factory, monkeypatch
):
    """A DAG task registers from its workspace while SEQREC_HOME names the project's stores:
    the workspace's dvc.lock and commit are what a rebuild needs."""
    monkeypatch.setenv("SEQREC_HOME", str(tmp_path_factory.mktemp("stores")))
    assert cli("registry", "register") == 0
    assert version_tags(project)[lineage.TAG_GIT_DIRTY] == "false"


def test_diff_shows_params_commits_data_metrics_and_gate(project, capsys, monkeypatch):
    assert cli("registry", "register") == 0
    # Next week: a param change in its own commit, new data, better metrics, a gate report.
    write_project_files(project, ndcg=0.35, data_md5="ccc333.dir",
                        params="registry:\n  model_name: seqrec\nfinetune:\n  lr: 0.001\n",
                        message="finetune: lower lr")
    sha_b = git_commit_all(project, "docs: a note")
    gate = project / "gate.json"
    gate.write_text(json.dumps({"decision": "pass", "passed": True, "reasons": ["ndcg up"]}))
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", "run-2")
    assert cli("registry", "register", "--gate-report", str(gate)) == 0
    capsys.readouterr()

    assert cli("registry", "diff", "1", "models:/seqrec/2", "--json") == 0
    diff = json.loads(capsys.readouterr().out)
    assert {"key": "finetune.lr", "a": None, "b": 0.001} in diff["params"]
    assert diff["code"]["b"] == sha_b and diff["code"]["count"] == 2  # project files + lr
    assert any("finetune: lower lr" in line for line in diff["code"]["commits"])
    data = {row["tag"]: row for row in diff["data"]}
    assert data[lineage.TAG_DATA_HASH]["a"] == "aaa111.dir"
    assert data[lineage.TAG_DATA_HASH]["b"] == "ccc333.dir"
    ndcg = next(row for row in diff["metrics"] if row["metric"] == "ndcg@10")
    assert ndcg["before"] == 0.3 and ndcg["after"] == 0.35
    assert ndcg["delta"] == pytest.approx(0.05)
    assert diff["gate"]["a"] is None and diff["gate"]["b"]["decision"] == "pass"

    assert cli("registry", "diff", "@challenger", "1") == 0
    text = capsys.readouterr().out
    assert "finetune.lr: null -> 0.001" in text or "finetune.lr: 0.001 -> null" in text
    assert "ndcg@10" in text and "gate:" in text
    assert cli("registry", "diff", "1", "models:/other") == 1
    assert "not a model version" in one_error(capsys)


def test_version_references():
    assert recorded.parse_ref("models:/seqrec/7", "x") == ("seqrec", "7", None)
    assert recorded.parse_ref("models:/shop@champion", "x") == ("shop", None, "champion")
    assert recorded.parse_ref("v12", "seqrec") == ("seqrec", "12", None)
    assert recorded.parse_ref("@challenger", "seqrec") == ("seqrec", None, "challenger")


def test_a_metric_outside_the_tolerance_fails_the_comparison(tmp_path):
    from pipeline.params import parse_params
    from pipeline.registry.reproduce import compare, render

    lock = "stages:\n  evaluate:\n    outs:\n    - path: reports/eval.json\n      md5: {}\n"
    lineage_dir, tree = tmp_path / "lineage", tmp_path / "tree"
    for folder, ndcg, md5 in ((lineage_dir, 0.5, "aaa"), (tree, 0.50015, "bbb")):
        (folder / "reports").mkdir(parents=True)
        evaluation = json.dumps({"model": {"ndcg@10": ndcg, "hr@10": 0.7}})
        (folder / "reports" / "eval.json").write_text(evaluation)
        (folder / provenance.LOCK_FILE).write_text(lock.format(md5))
    (lineage_dir / provenance.EVAL_FILE).write_text((lineage_dir / "reports/eval.json").read_text())
    version = recorded.RecordedVersion(NAME, "3", {lineage.TAG_GIT_SHA: "f" * 40}, None, "",
                                       lineage_dir)
    settings = parse_params({}).reproduce
    result = compare(version, tree, settings)
    assert not result["passed"] and result["max_abs_delta"] == pytest.approx(1.5e-4)
    rows = {row["metric"]: row for row in result["metrics"]}
    assert rows["hr@10"]["within"] and not rows["ndcg@10"]["within"]
    assert result["outputs"][0]["identical"] is False
    report = {**result, "label": version.label, "git_sha": "f" * 40,
              "tolerance": settings.tolerance}
    text = render(report)
    assert "NOT reproduced" in text and "OUTSIDE" in text
    loose = parse_params({"reproduce": {"tolerance": 2e-4}}).reproduce
    assert compare(version, tree, loose)["passed"]


# --- end to end: the "done when" on the tiny pipeline -------------------------------


@pytest.fixture(scope="module")
def registered(tiny_repro, tmp_path_factory):
    """Register and push the tiny run (as a user would, by subprocess); clone it elsewhere."""
    uri = f"sqlite:///{tiny_repro / 'mlflow.db'}"
    env = {"SEQREC_HOME": str(tiny_repro), "MLFLOW_TRACKING_URI": uri}
    out = run_cli("registry", "register", cwd=tiny_repro, **env).stdout
    assert "registered seqrec v1" in out
    proc = dvc("push", cwd=tiny_repro)
    assert proc.returncode == 0, proc.stderr
    clone = tmp_path_factory.mktemp("second_clone") / "seqrec"
    subprocess.run(["git", "clone", "-q", str(tiny_repro), str(clone)], check=True)
    return tiny_repro, clone, uri


def test_reproduce_in_a_second_clone_matches_within_tolerance(registered):
    project, clone, uri = registered
    tags = version_tags(project)
    assert tags[lineage.TAG_GIT_DIRTY] == "false"
    assert tags[lineage.TAG_DVC_REMOTE] == str(project / ".dvc-remote")

    proc = run_cli("reproduce", "models:/seqrec/1", cwd=clone, check=False,
                   SEQREC_HOME=str(clone), MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "metric" in proc.stdout and "registered" in proc.stdout and "reproduced" in proc.stdout
    report = json.loads((clone / "reports" / "reproduce" / "v1.json").read_text())
    tolerance = yaml.safe_load((clone / "params.yaml").read_text())["reproduce"]["tolerance"]
    assert report["passed"] and report["max_abs_delta"] <= tolerance
    assert {row["metric"] for row in report["metrics"]} >= {"ndcg@10", "hr@10", "mrr@10"}
    assert all(abs(row["delta"]) <= tolerance for row in report["metrics"])
    # The data stages are bit-for-bit deterministic: the rebuilt splits hash the same.
    outputs = {row["path"]: row for row in report["outputs"]}
    assert outputs["data/sequences"]["identical"]
    tags = version_tags(project)
    assert tags[TAG_REPRODUCED_AT] and float(tags[TAG_REPRODUCE_DELTA]) <= tolerance
    assert tags["seqrec.reproduce_passed"] == "true"
    # Nothing is left behind: no worktree, and the clone is as clean as it was.
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=clone, capture_output=True,
                               text=True, check=True).stdout.splitlines()
    assert len(worktrees) == 1
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True,
                            text=True, check=True).stdout
    assert status == ""


def test_object_missing_from_the_remote_is_one_line_naming_it(registered, tmp_path):
    project, clone, uri = registered
    remote = tmp_path / "remote"
    shutil.copytree(project / ".dvc-remote", remote)
    weights = project / "models" / "finetuned" / "model.safetensors"
    md5 = hashlib.md5(weights.read_bytes()).hexdigest()
    (remote / "files" / "md5" / md5[:2] / md5[2:]).unlink()

    proc = run_cli("reproduce", "1", "--remote", str(remote), cwd=clone, check=False,
                   SEQREC_HOME=str(clone), MLFLOW_TRACKING_URI=uri)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "models/finetuned/model.safetensors" in errors[0] and md5 in errors[0]
    assert str(remote) in errors[0]

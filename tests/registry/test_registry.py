"""Registry flow: register -> approve/reject -> promote -> rollback -> status, with real MLflow.

Fast tests use a SQLite store in tmp through the in-process CLI; `test_full_flow_on_server`
runs the flow against a real `mlflow server` on 127.0.0.1 (and `status` as a subprocess).
"""

import json
import shutil

import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.registry import lineage, model_card, promotion
from pipeline.registry.registration import IDEMPOTENCY_TAG
from tests.conftest import run_cli, use_store
from tests.registry_fixtures import enter_project, make_package

NAME = "seqrec"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("packaged")
    make_package(root)
    return root


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory):
    """A migrated, empty SQLite store: creating one takes seconds, copying it does not."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(tmp_path, package, empty_store, monkeypatch):
    """A project folder with its own SQLite store; the CLI runs in it."""
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    return enter_project(tmp_path, package, monkeypatch)


def registry(*args, expect=0):
    """`python -m pipeline registry ARGS` in-process, in the project folder (default paths)."""
    code = main(["registry", *args])
    assert code == expect, f"registry {args} exited {code}"


def client(project) -> MlflowClient:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def aliases(project) -> dict[str, str]:
    return {a: str(v) for a, v in client(project).get_registered_model(NAME).aliases.items()}


def status_json(capsys) -> dict:
    capsys.readouterr()
    registry("status", "--json")
    return json.loads(capsys.readouterr().out)


def test_register_logs_model_with_lineage_card_and_challenger(project, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "scheduled__2026-11-01")
    gate = project / "gate.json"
    gate.write_text(json.dumps({"passed": True, "primary_metric": "ndcg@10", "delta": 0.05}))
    champion = project / "champion.json"
    champion.write_text(json.dumps({"ndcg@10": 0.25, "hr@10": 0.45}))
    registry("register", "--gate-report", str(gate), "--champion-metrics", str(champion))

    version = client(project).get_model_version(NAME, "1")
    tags = version.tags
    assert aliases(project) == {"challenger": "1"}
    assert tags[lineage.TAG_DATA_HASH] == "aaa111.dir"  # from dvc.lock
    assert tags[lineage.TAG_MODEL_HASH] == "bbb222.dir"
    assert tags[lineage.TAG_AIRFLOW_RUN] == "scheduled__2026-11-01"
    assert json.loads(tags[lineage.TAG_VALIDATION]) == {
        "rows_in": 100,
        "rows_quarantined": 2,
        "rows_valid": 98,
    }
    assert tags[lineage.TAG_DATA_START].startswith("2023-11-14")  # tiny ts start 1.7e9
    assert tags["seqrec.gate_passed"] == "true"
    assert len(tags[lineage.TAG_PARAMS_HASH]) == 16
    assert tags[IDEMPOTENCY_TAG] == f"{version.run_id}:aaa111.dir"
    assert tags["seqrec.serving_variant"] == "fp32"  # what the package serves
    # Model card: metrics against the champion's scores, slices, data stats, gate report.
    card = version.description
    assert "| ndcg@10 | 0.3000 | 0.2500 | +0.0500 |" in card
    assert "history/short" in card and "Gate report" in card and "| users | 40 |" in card
    # The pipeline run owns a READY LoggedModel, and the registered source loads.
    run = client(project).get_run(version.run_id)
    assert run.data.tags["seqrec.stage"] == "pipeline"
    model_id = tags["seqrec.logged_model_id"]
    assert version.source == f"models:/{model_id}"
    assert str(client(project).get_logged_model(model_id).status) == "READY"
    import mlflow

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    assert model.metadata.model_id == model_id and model.metadata.run_id == version.run_id
    assert model.predict(__import__("pandas").DataFrame({"history": [["item1"]]}))["items"][0].size


def test_retried_register_and_promote_are_idempotent(project, capsys):
    registry("register")
    registry("register")  # the retried task
    assert [v.version for v in client(project).search_model_versions(f"name = '{NAME}'")] == [1]
    registry("approve", "--by", "ana")
    registry("promote")
    registry("promote", "--version", "1")  # retried promote
    report = status_json(capsys)
    assert report["champion"] == "1"
    champion_moves = [h for h in report["alias_history"] if h["alias"] == "champion"]
    assert len(champion_moves) == 1
    # A retried register after promotion must not re-point @challenger at the champion.
    registry("register")
    assert aliases(project) == {"champion": "1"}


def test_full_lifecycle_promote_then_rollback(project, capsys, monkeypatch):
    registry("register")
    registry("approve", "--by", "ana")
    registry("promote")
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", "run-2")  # next week's pipeline run
    registry("register")
    assert aliases(project) == {"champion": "1", "challenger": "2"}

    registry("approve", "--version", "2", "--by", "ben")
    registry("promote")
    assert aliases(project) == {"champion": "2", "previous_champion": "1"}
    tags2 = client(project).get_model_version(NAME, "2").tags
    assert tags2["approval"] == "approved" and tags2["approved_by"] == "ben"
    assert tags2["approved_at"].endswith("+00:00") and "promoted_at" in tags2
    assert "demoted_at" in client(project).get_model_version(NAME, "1").tags

    registry("rollback", "--by", "ops")
    assert aliases(project) == {"champion": "1"}
    assert "rolled_back_at" in client(project).get_model_version(NAME, "2").tags
    actions = [
        (h["action"], h["alias"], h["version"]) for h in status_json(capsys)["alias_history"]
    ]
    assert ("rollback", "champion", "1") in actions
    # Nothing left to roll back to: a one-line error, not a silent flip back to v2.
    capsys.readouterr()
    with pytest.raises(Exception, match="no @previous_champion"):
        promotion.rollback(client(project), NAME, "ops")


def test_retrain_workspace_gets_the_champions_vocabulary_and_summary(project):
    import pandas as pd

    from pipeline.orchestration import tasks as orchestration

    workspace = project / "workspaces" / "run-2"
    workspace.mkdir(parents=True)
    (workspace / "params.yaml").write_text(
        "registry:\n  model_name: seqrec\nsequences:\n  previous_vocab: data/previous_vocab\n"
        "validate:\n  previous_summary: data/previous_validation\n")
    info = {"workspace": str(workspace)}
    assert orchestration.seed_from_champion(project, info) is None  # no champion yet
    assert not (workspace / "data").exists()
    registry("register")
    registry("approve", "--by", "ana")
    registry("promote")
    assert orchestration.seed_from_champion(project, info) == "1"
    copied = pd.read_parquet(workspace / "data" / "previous_vocab" / "vocab.parquet")
    expected = pd.read_parquet(project / "data" / "sequences" / "vocab.parquet")
    pd.testing.assert_frame_equal(copied, expected)
    # its whole folder, named by origin.json: the warm start and the drift reference
    seeded = workspace / "data" / "champion_model"
    assert json.loads((seeded / "origin.json").read_text())["uri"] == "models:/seqrec/1"
    assert (seeded / "model.safetensors").is_file() and (seeded / "vocab.parquet").is_file()
    # the champion's validation counts (its validation summary) feed volume_change
    summary = workspace / "data" / "previous_validation" / "summary.json"
    assert json.loads(summary.read_text())["rows_in"] == 100
    from pipeline.validation.summary import read_previous_rows_in

    assert read_previous_rows_in(summary.parent) == 100


def test_rejection_leaves_champion_and_blocks_promotion(project, capsys, monkeypatch):
    registry("register")
    registry("approve", "--by", "ana")
    registry("promote")
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", "run-2")
    registry("register")
    registry("reject", "--by", "ana")
    assert client(project).get_model_version(NAME, "2").tags["approval"] == "rejected"
    registry("promote", expect=1)
    assert "approval=rejected" in capsys.readouterr().err
    assert aliases(project)["champion"] == "1"
    assert status_json(capsys)["pending_approval"] == []


def test_promote_without_approval_is_refused_unless_forced(project, capsys):
    registry("register")
    registry("promote", expect=1)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "approval=pending" in errors[0] and "Traceback" not in err
    assert "champion" not in aliases(project)
    assert status_json(capsys)["pending_approval"] == ["1"]
    registry("promote", "--force", "--by", "ops")
    assert aliases(project) == {"champion": "1"}


def test_champion_moved_by_hand_is_honoured(project, capsys, monkeypatch):
    registry("register")
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", "run-2")
    registry("register")
    # A person sets the alias on the version page (what the UI calls): no CLI involved.
    client(project).set_registered_model_alias(NAME, "champion", "1")
    report = status_json(capsys)
    assert report["champion"] == "1" and report["challenger"] == "2"
    assert report["pending_approval"] == ["2"]  # v1 was decided by the hand move
    # An approval tag set in the UI is what promote reads; the hand-set champion is demoted.
    client(project).set_model_version_tag(NAME, "2", "approval", "approved")
    registry("promote")
    assert aliases(project) == {"champion": "2", "previous_champion": "1"}


def test_status_text_and_errors_are_one_line(project, capsys):
    registry("status", expect=1)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not found" in errors[0] and "Traceback" not in err
    registry("register")
    capsys.readouterr()
    registry("status")
    out = capsys.readouterr().out
    assert "challenger:        v1 (pending)" in out and "pending approval:  v1" in out


def test_model_card_truncates_to_registry_limit():
    card = model_card.render(
        "seqrec",
        {"model": {f"m{i}@10": 0.1 for i in range(400)}},
        None,
        "champion",
        None,
        {},
        None,
        5,
    )
    fitted = model_card.fit_description(card, "registry/model_card_v*.md")
    assert len(card) > model_card.MAX_DESCRIPTION_CHARS >= len(fitted)
    assert "truncated" in fitted


def test_lineage_without_dvc_lock_hashes_the_data_folder(tmp_path, package):
    from pipeline.params import parse_params

    tags = lineage.collect(
        tmp_path,
        parse_params({}),
        package / "data" / "sequences",
        package / "models" / "finetuned",
        tmp_path / "none.json",
        None,
    )
    assert tags[lineage.TAG_DATA_HASH].startswith("sha256:")
    assert lineage.TAG_MODEL_HASH not in tags and lineage.TAG_VALIDATION not in tags


def test_lineage_reads_git_and_airflow(tmp_path, monkeypatch):
    from tests.conftest import REPO_ROOT

    state = lineage.git_state(REPO_ROOT)
    if not state:
        pytest.skip("this checkout is not a git repository")
    assert len(state[lineage.TAG_GIT_SHA]) == 40 and state[lineage.TAG_GIT_DIRTY] in (
        "true",
        "false",
    )
    assert lineage.git_state(tmp_path) == {}
    monkeypatch.setenv("AIRFLOW_CTX_DAG_RUN_ID", "from-env")
    assert lineage.airflow_run_id("from-arg") == {lineage.TAG_AIRFLOW_RUN: "from-arg"}
    assert lineage.airflow_run_id(None) == {lineage.TAG_AIRFLOW_RUN: "from-env"}


def test_full_flow_on_server(mlflow_server, project, monkeypatch, capsys):
    """The same flow against a real tracking server over HTTP (proxied artifact upload)."""
    use_store(monkeypatch, mlflow_server)
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", f"srv-{project.name}")
    registry("register")
    registry("register")  # retried task
    assert "already registered" in capsys.readouterr().out
    registry("approve", "--by", "ana")
    registry("promote")
    # The CLI as the DAG calls it: a subprocess, same server.
    proc = run_cli("registry", "status", "--json", cwd=project, MLFLOW_TRACKING_URI=mlflow_server)
    report = json.loads(proc.stdout)
    assert report["champion"] is not None and report["challenger"] is None
    assert report["versions"][report["champion"]]["approved_by"] == "ana"
    registry("rollback", expect=1)
    assert "no @previous_champion" in capsys.readouterr().err


def test_registration_leaves_a_pending_row_and_the_card_says_what_to_set(project, capsys):
    registry("register")
    version = client(project).get_model_version(NAME, "1")
    assert version.tags["approval"] == "pending"  # the row a person edits on the version page
    card = version.description
    assert "click the pencil on the row `approval`" in card
    assert card.index("`approved_by` = your name") < card.index("click the pencil")
    assert "`approved` or `rejected`" in card
    report = status_json(capsys)
    assert report["pending_approval"] == ["1"]
    assert report["versions"]["1"]["approval"] == "pending"
    assert report["versions"]["1"]["approved_by"] is None


def test_card_for_airflow_approval_points_at_the_airflow_ui():
    card = model_card.render("seqrec", None, None, "champion", None, {}, None, 5,
                             approval_via="airflow")
    assert "Required Actions" in card and "pencil" not in card
    auto = model_card.render("seqrec", None, None, "champion", None, {}, None, 5,
                             approval_via="auto")
    assert "No approval step" in auto


def test_status_names_who_approved_or_says_it_is_unknown(project, capsys, monkeypatch):
    registry("register")
    # What a person does on the version page: edit the `approval` row, add no name.
    client(project).set_model_version_tag(NAME, "1", "approval", "approved")
    registry("promote", "--by", "airflow:seqrec_retrain")
    capsys.readouterr()
    registry("status")
    out = capsys.readouterr().out
    assert "champion:          v1 (approved by unknown (set in the MLflow UI))" in out
    assert status_json(capsys)["versions"]["1"]["approved_by"] == "unknown (set in the MLflow UI)"
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", "run-2")
    registry("register")
    registry("approve", "--by", "ana")  # where the system knows the name, it says it
    registry("promote")
    capsys.readouterr()
    registry("status")
    out = capsys.readouterr().out
    assert "champion:          v2 (approved by ana)" in out
    assert "previous_champion: v1 (approved by unknown (set in the MLflow UI))" in out


def test_a_version_duplicated_by_an_http_retry_is_deleted(project):
    """A create_model_version whose answer was lost and which MLflow's client sent again."""
    registry("register")
    first = client(project).get_model_version(NAME, "1")
    tags = dict(first.tags)
    client(project).create_model_version(NAME, first.source, run_id=first.run_id, tags=tags)
    assert len(client(project).search_model_versions(f"name = '{NAME}'")) == 2
    registry("register")  # the task's retry
    versions = client(project).search_model_versions(f"name = '{NAME}'")
    assert [v.version for v in versions] == [1]
    assert aliases(project) == {"challenger": "1"}

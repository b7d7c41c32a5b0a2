"""Who decided: `--by` or the MLflow login, and the login recorded beside it (docs/deploy.md).

The server-side enforcement (anonymous 401, READ 403, EDIT allowed) is tested against a real
MLflow server with auth in tests/production/test_auth.py; these check the CLI's records.
"""

from tests.registry.test_registry import (  # noqa: F401 (fixtures)
    NAME,
    client,
    empty_store,
    package,
    project,
    registry,
)


def test_the_login_is_the_default_approver_and_is_recorded(project, monkeypatch):  # noqa: F811
    registry("register")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ana")
    registry("approve")
    tags = client(project).get_model_version(NAME, "1").tags
    assert tags["approved_by"] == "ana" and tags["approved_by_account"] == "ana"
    registry("promote")
    assert client(project).get_model_version(NAME, "1").tags["promoted_by"] == "ana"


def test_a_service_login_acting_for_a_person_keeps_both(project, monkeypatch):  # noqa: F811
    registry("register")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pipeline")
    registry("reject", "--by", "ben")
    tags = client(project).get_model_version(NAME, "1").tags
    assert tags["approved_by"] == "ben" and tags["approved_by_account"] == "pipeline"


def test_without_login_or_by_nobody_is_recorded_so_it_is_refused(project, monkeypatch, capsys):  # noqa: F811
    registry("register")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    registry("approve", expect=1)
    assert "pass --by NAME" in capsys.readouterr().err
    assert client(project).get_model_version(NAME, "1").tags["approval"] == "pending"  # undecided

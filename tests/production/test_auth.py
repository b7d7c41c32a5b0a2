"""Who may approve: MLflow's basic-auth app in front of the registry (docs/deploy.md).

Anonymous requests neither read nor change the registry; `reader` (READ) reads but can set
no approval tag and move no alias; `approver` (EDIT) can, and the approval records the
account the server authenticated. Requests go to the same REST endpoints the MLflow UI and
client use.
"""

from __future__ import annotations

import json

import pytest

from tests.production.conftest import registry, version_tags
from tests.production.services import http_status

pytestmark = pytest.mark.production
API = "/api/2.0/mlflow"


def calls(uri: str, version: str) -> dict[str, tuple[str, bytes | None, str | None]]:
    def post(path: str, body: dict) -> tuple[str, bytes, str]:
        return uri + API + path, json.dumps(body).encode(), "POST"

    return {
        "read model": (f"{uri}{API}/registered-models/get?name=seqrec", None, None),
        "read version": (f"{uri}{API}/model-versions/get?name=seqrec&version={version}",
                         None, None),
        "set approval tag": post("/model-versions/set-tag", {
            "name": "seqrec", "version": version, "key": "approval", "value": "approved"}),
        "move @champion": post("/registered-models/alias", {
            "name": "seqrec", "alias": "champion", "version": version}),
    }


def test_anonymous_requests_can_neither_read_nor_change_the_registry(stack, registered):
    for what, (url, data, method) in calls(stack.mlflow.uri, registered).items():
        assert http_status(url, None, data, method) == 401, what
    wrong_password = (stack.users["approver"][0], "not-the-password")
    url, data, method = calls(stack.mlflow.uri, registered)["set approval tag"]
    assert http_status(url, wrong_password, data, method) == 401


def test_a_reader_reads_but_cannot_approve_or_move_an_alias(stack, prod_project, registered):
    reader = stack.users["reader"]
    requests = calls(stack.mlflow.uri, registered)
    for what in ("read model", "read version"):
        url, data, method = requests[what]
        assert http_status(url, reader, data, method) == 200, what
    for what in ("set approval tag", "move @champion"):
        url, data, method = requests[what]
        assert http_status(url, reader, data, method) == 403, what
    # The CLI as the reader fails loudly, and the version's tags are unchanged. (`reject`:
    # nobody rejects this version, so the command must write, whatever ran before.)
    before = version_tags(stack, registered)
    proc = registry(stack, prod_project, "reader", "reject", "--version", registered,
                    check=False)
    assert proc.returncode != 0 and "403" in proc.stderr + proc.stdout
    assert version_tags(stack, registered) == before


def test_an_approver_approves_and_is_recorded_by_account(stack, prod_project, registered):
    proc = registry(stack, prod_project, "approver", "approve", "--version", registered)
    assert "approval=approved" in proc.stdout
    tags = version_tags(stack, registered)
    assert tags["approval"] == "approved"
    assert tags["approved_by"] == "approver" and tags["approved_by_account"] == "approver"
    # The approver may also move an alias (EDIT); moving @challenger back onto the same
    # version changes nothing the other tests rely on.
    url = f"{stack.mlflow.uri}{API}/registered-models/alias"
    body = json.dumps({"name": "seqrec", "alias": "challenger", "version": registered}).encode()
    assert http_status(url, stack.users["approver"], body, "POST") == 200

"""The production stack, started once for the suite: Postgres, S3, MLflow with basic auth.

Accounts, as a team would set them up (docs/deploy.md): the admin creates the experiment and
the registered models and grants `pipeline` (the service account the pipeline and the DAG
run as) MANAGE, `approver` EDIT on the models, `reader` READ; `approver` and `reader` also
READ on the experiment, which holds the model files. The server's default permission is
NO_PERMISSIONS, so nobody reads or writes what they were not granted.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import cli_env
from tests.orchestration.airflow_harness import make_project
from tests.production.services import (
    S3,
    MLflowServer,
    Postgres,
    credentials,
    mlflow_server,
    postgres,
    s3_server,
)

pytestmark = pytest.mark.production
MLFLOW_BUCKET, DVC_BUCKET = "seqrec-mlflow", "seqrec-dvc"
MODELS = ("seqrec", "seqrec_airflow")  # the registry tests' and the DAG test's
GRANTS = {"pipeline": "MANAGE", "approver": "EDIT", "reader": "READ"}
EXPERIMENT_GRANTS = {"pipeline": "MANAGE", "approver": "READ", "reader": "READ"}


@dataclass
class Stack:
    root: Path
    pg: Postgres
    s3: S3
    mlflow: MLflowServer
    users: dict[str, tuple[str, str]]

    def env(self, user: str | None, **extra: str) -> dict[str, str]:
        """A client process's environment: `user`'s MLflow login (None: anonymous), the S3
        endpoint and keys (DVC reads them), this venv's bin first on PATH."""
        env = cli_env(**self.s3.env(), MLFLOW_TRACKING_URI=self.mlflow.uri, **extra)
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                    "MLFLOW_REGISTRY_URI"):
            env.pop(key, None)
        if user is not None:
            env.update(self.mlflow.user_env(self.users[user]))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        return env


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    root = tmp_path_factory.mktemp("stack")
    with postgres() as pg, s3_server(root, (MLFLOW_BUCKET, DVC_BUCKET)) as s3, \
            mlflow_server(root, pg, s3, MLFLOW_BUCKET) as server:
        users = {name: (name, secrets.token_urlsafe(16)) for name in GRANTS}
        with server.as_admin() as (auth, client):
            for name, (_, password) in users.items():
                auth.create_user(name, password)
            experiment_id = client.create_experiment("seqrec")
            for name, permission in EXPERIMENT_GRANTS.items():
                auth.grant_user_permission(name, "experiment", experiment_id, permission)
            for model in MODELS:
                client.create_registered_model(model)
                for name, permission in GRANTS.items():
                    auth.grant_user_permission(name, "registered_model", model, permission)
        yield Stack(root, pg, s3, server, users)


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 1200,
        check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def git(*args: str, cwd: Path) -> None:
    run(["git", "-c", "user.name=seqrec-test", "-c", "user.email=test@localhost", *args],
        cwd=cwd, env=cli_env())


@pytest.fixture(scope="session")
def prod_project(stack, tmp_path_factory) -> Path:
    """A tiny-params project whose `dvc repro` ran as `pipeline` against the stack, with its
    DVC remote on S3, committed to its own git."""
    project = make_project(tmp_path_factory.mktemp("prod") / "project", {})
    dvc = str(Path(sys.executable).parent / "dvc")
    env = stack.env("pipeline", SEQREC_HOME=str(project))
    run([dvc, "remote", "add", "--default", "s3store", f"s3://{DVC_BUCKET}/seqrec"], project, env)
    # The endpoint is no secret: a team commits it; the keys stay in the environment.
    run([dvc, "remote", "modify", "s3store", "endpointurl", stack.s3.endpoint], project, env)
    run([dvc, "repro"], project, env)
    git("add", "-A", cwd=project)
    git("commit", "-q", "-m", "tiny production run", cwd=project)
    return project


def registry(stack, project, user: str, *args: str, check: bool = True):
    """`python -m pipeline registry ARGS` as `user`."""
    return run([sys.executable, "-m", "pipeline", "registry", *args], project,
               stack.env(user, SEQREC_HOME=str(project)), timeout_s=600, check=check)


def version_tags(stack, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    with credentials(*stack.users["reader"]):
        client = MlflowClient(tracking_uri=stack.mlflow.uri, registry_uri=stack.mlflow.uri)
        return dict(client.get_model_version("seqrec", version).tags)


@pytest.fixture(scope="session")
def registered(stack, prod_project) -> str:
    """`registry register` as the pipeline's service account; returns the new version."""
    from mlflow import MlflowClient

    proc = registry(stack, prod_project, "pipeline", "register")
    assert "registered seqrec v" in proc.stdout, proc.stdout
    with credentials(*stack.users["reader"]):
        client = MlflowClient(tracking_uri=stack.mlflow.uri, registry_uri=stack.mlflow.uri)
        return client.get_model_version_by_alias("seqrec", "challenger").version

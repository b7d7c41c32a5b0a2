"""Helpers for the Airflow end-to-end tests: a project copy, a real MLflow server, Airflow env.

Everything runs in subprocesses with a throw-away AIRFLOW_HOME and SQLite metadata DB, so
these tests never touch a developer's Airflow or MLflow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT, cli_env, git_commit_all

PIPELINE_MODULES = ("ingest.stage", "validation.validate", "sequences.build", "model.pretrain",
                    "model.finetune", "evaluation.evaluate", "serving.package", "registry.cli")
# Tiny synthetic shop and one-epoch training: a full `dvc repro` in about a minute on 2 cores.
TINY_PARAMS = {
    "synthetic": {"n_users": 300, "n_items": 120, "days": 20},
    "sequences": {"max_len": 20},
    "model": {"hidden_dim": 32, "n_layers": 1, "n_heads": 2},
    "pretrain": {"epochs": 1, "batch_size": 64, "warmup_steps": 5},
    "finetune": {"epochs": 1, "batch_size": 64, "warmup_steps": 5},
    "trainer": {"accelerator": "cpu", "devices": 1},
    "evaluate": {"ks": [5, 10]},
    # A one-epoch model need not beat repeat_last or its scratch twin: these tests are about
    # orchestration (the gate's rules are unit-tested in tests/orchestration/test_gate.py).
    "gate": {"approval_poke_interval_s": 1.0, "baselines": ["popularity"]},
    "airflow": {"retries": 0, "task_timeout_minutes": 10.0, "pipeline_timeout_minutes": 20.0},
}
RESULT_PREFIX = "DAG_RESULT "
DAG_TEST_SCRIPT = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.dags["seqrec_retrain"].test()
states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}}
print({RESULT_PREFIX!r} + json.dumps({{"state": str(run.state), "tasks": states}}))
"""


def missing_pipeline_modules() -> list[str]:
    return [m for m in PIPELINE_MODULES if importlib.util.find_spec(f"pipeline.{m}") is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deep_update(raw: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            deep_update(raw[key], value)
        else:
            raw[key] = value
    return raw


def set_params(project: Path, overrides: dict) -> None:
    """Change params and commit them: the DAG registers only from a clean checkout."""
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(deep_update(yaml.safe_load(path.read_text()), overrides)))
    if (project / ".git").exists():
        git_commit_all(project, f"params: {sorted(overrides)}")


def make_project(root: Path, overrides: dict) -> Path:
    """A copy of this checkout's source files (git's view) with tiny params and its own git."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (REPO_ROOT / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / rel, root / rel)
    set_params(root, deep_update(json.loads(json.dumps(TINY_PARAMS)), overrides))
    git_commit_all(root, "project under test")
    return root


def land_synthetic_events(project: Path, name: str, seed: int, synthetic: dict | None = None,
                          new_item_every: int | None = None) -> Path:
    """Generate a synthetic shop with `seed` and land its canonical events as Parquet.

    `synthetic`: more `synthetic` params (e.g. a later `end_date`: the same shop, another
    week); `new_item_every`: every n-th item gets a new id (a changed catalogue)."""
    import pyarrow.parquet as pq

    scratch = project.parent / f"gen_{name}"
    scratch.mkdir()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synthetic"].update(seed=seed, **(synthetic or {}))
    params["data"]["catalog_path"] = None  # the scratch folder has no data/catalog
    (scratch / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([sys.executable, "-m", "pipeline", "ingest", "--out", "interim"],
                   cwd=scratch, env=cli_env(), check=True, capture_output=True, timeout=300)
    events = pq.read_table(scratch / "interim" / "events.parquet")
    if new_item_every:
        import pyarrow as pa

        frame = events.to_pandas()
        hit = frame["item_id"].str[1:].astype(int) % new_item_every == 0  # ids are i000, i001...
        frame.loc[hit, "item_id"] = "new-" + frame.loc[hit, "item_id"]
        events = pa.Table.from_pandas(frame, preserve_index=False)
    keep = ["user_id", "item_id", "event_type", "timestamp", "session_id"]
    target = project / "data" / "landing" / f"{name}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(events.select([c for c in keep if c in events.column_names]), target)
    return target


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with a SQLite store and local artifacts."""
    port = free_port()
    log = (root / "mlflow_server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "mlartifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "mlflow_server.log").read_text()[-2000:]) from None
                time.sleep(1)
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def airflow_env(home: Path, project: Path, mlflow_uri: str, **extra: str) -> dict[str, str]:
    """A project-local Airflow: own home, SQLite DB, this project's dags/, no examples."""
    home.mkdir(parents=True, exist_ok=True)
    env = cli_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(project / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        SEQREC_PROJECT_DIR=str(project),
        MLFLOW_TRACKING_URI=mlflow_uri,
        PYTHONPATH=str(project),
        **extra,
    )
    env.pop("SEQREC_SCHEDULE", None)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=600)


def dag_test(project: Path, env: dict[str, str], log_path: Path) -> dict:
    """`dag.test()` in a subprocess; returns the run state and each task's state."""
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, "-c", DAG_TEST_SCRIPT, str(project / "dags")], env=env,
            cwd=project, stdout=log, stderr=subprocess.STDOUT, timeout=1800,
        )
    lines = [ln for ln in log_path.read_text().splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"dag.test() failed ({proc.returncode}); see {log_path}:\n"
                             + log_path.read_text()[-4000:])
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


class Reviewer(threading.Thread):
    """A person on the MLflow version page: sets `approval` on the next challenger version."""

    def __init__(self, mlflow_uri: str, model_name: str, decision: str | None,
                 after_version: int, timeout_s: float = 1800):
        super().__init__(daemon=True)
        self.decision, self.after_version, self.timeout_s = decision, after_version, timeout_s
        self.model_name, self.mlflow_uri = model_name, mlflow_uri
        self.version: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=self.mlflow_uri, registry_uri=self.mlflow_uri)
        deadline = time.monotonic() + self.timeout_s
        while not self._halt.is_set() and time.monotonic() < deadline:
            try:
                mv = client.get_model_version_by_alias(self.model_name, "challenger")
            except MlflowException:
                mv = None
            if mv is not None and int(mv.version) > self.after_version:
                self.version = mv.version
                if self.decision is not None:
                    client.set_model_version_tag(self.model_name, mv.version, "approval",
                                                 self.decision)
                return
            self._halt.wait(1.0)

    def stop(self) -> None:
        self._halt.set()

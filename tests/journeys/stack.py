"""`make airflow`'s servers for the journey tests, and a stop that leaves nothing running.

`LocalStack` runs `scripts/airflow_local.sh` (airflow standalone + MLflow on 127.0.0.1) in a
copy of the project with tiny params, on free ports, with its own AIRFLOW_HOME. The tests
drive it as a person would: the Airflow CLI with `airflow_home/env.sh` (the README's
command), the REST API to watch task states, a browser for the UIs.

Stopping: SIGTERM to the script's process group (its trap stops both servers' groups), then
SIGKILL to every process that was a descendant when the stop began (task runners, `dvc
repro` in its own session) and is still alive. `running_stack` stops it whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import cli_env, wait_for
from tests.orchestration.airflow_harness import free_port, make_project

DAG_ID = "seqrec_retrain"
MODEL = "seqrec"
READY_LINE = "seqrec: Airflow API and MLflow ready"
START_TIMEOUT_S = 900
STOP_GRACE_S = 60
# Settings of other tests (tracking stores, a throw-away AIRFLOW_HOME, SEQREC_SCHEDULE...).
LEAKY_PREFIXES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW", "SEQREC_")


class LocalStack:
    """One `airflow_local.sh` in `root/project`, with AIRFLOW_HOME `root/airflow_home`."""

    def __init__(self, root: Path, overrides: dict, extra_env: dict[str, str] | None = None):
        self.root = root
        self.project = make_project(root / "project", overrides)
        self.home = root / "airflow_home"
        self.log = root / "airflow_local.log"
        self.api_port, self.mlflow_port = free_port(), free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        # Nothing an earlier test in the same pytest left in the environment reaches the
        # servers: the stack sees what a fresh shell running `make airflow` would.
        inherited = {k: v for k, v in cli_env().items() if not k.startswith(LEAKY_PREFIXES)}
        self.env = dict(
            inherited,
            AIRFLOW_HOME=str(self.home), AIRFLOW_API_PORT=str(self.api_port),
            MLFLOW_PORT=str(self.mlflow_port), AIRFLOW_WORKER_LOG_PORT=str(free_port()),
            AIRFLOW_TRIGGERER_LOG_PORT=str(free_port()),
            SEQREC_BIN=str(Path(sys.executable).parent), PYTHONPATH=str(self.project),
            **(extra_env or {}),
        )
        self.cli_env: dict[str, str] = {}
        self.proc: subprocess.Popen | None = None
        self.extra_servers: list[subprocess.Popen] = []
        self._token: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> LocalStack:
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                ["bash", str(self.project / "scripts" / "airflow_local.sh")], env=self.env,
                cwd=self.project, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        env_sh = self.home / "env.sh"
        wait_for("airflow_local.sh to write env.sh", self._alive_and(env_sh.exists), 300,
                 self.log)
        self.cli_env = {**self.env, **dict(
            line.removeprefix("declare -x ").replace('"', "").split("=", 1)
            for line in env_sh.read_text().splitlines()
        )}
        wait_for("Airflow and MLflow", self._alive_and(lambda: READY_LINE in self.log.read_text()),
                 START_TIMEOUT_S, self.log)
        wait_for("the DAG to be parsed", lambda: self._dag_parsed(), 300, self.log)
        return self

    def _alive_and(self, probe: Callable[[], Any]) -> Callable[[], Any]:
        def check():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"airflow_local.sh exited {self.proc.returncode}:\n"
                                     + self.log.read_text()[-4000:])
            return probe()
        return check

    def _dag_parsed(self) -> bool:
        try:
            return self.api("GET", f"/api/v2/dags/{DAG_ID}")["dag_id"] == DAG_ID
        except (urllib.error.HTTPError, urllib.error.URLError):
            return False

    def processes(self) -> list:
        """Every live process started for this stack (descendants of the script, extras)."""
        import psutil

        found = []
        for pid in [p.pid for p in [self.proc, *self.extra_servers] if p is not None]:
            with contextlib.suppress(psutil.NoSuchProcess):
                parent = psutil.Process(pid)
                found += [parent, *parent.children(recursive=True)]
        return found

    def stop(self) -> list[str]:
        """Stop everything; returns what still runs after SIGKILL (nothing, or a bug)."""
        import psutil

        seen = self.processes()
        for server in [self.proc, *self.extra_servers]:
            if server is not None and server.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(server.pid, signal.SIGTERM)
        for server in [self.proc, *self.extra_servers]:
            if server is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(timeout=STOP_GRACE_S)
        _, alive = psutil.wait_procs(seen, timeout=5)
        for proc in alive:  # e.g. a `dvc repro` in its own session whose task runner died
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        for server in [self.proc, *self.extra_servers]:
            if server is not None and server.poll() is None:
                server.kill()
                server.wait(timeout=10)
        return [cmd for p in seen if (cmd := _command_if_running(p))]

    # -- Airflow -----------------------------------------------------------------------------
    def password(self) -> str:
        generated = self.home / "simple_auth_manager_passwords.json.generated"
        return json.loads(generated.read_text())["admin"]

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """Airflow's REST API as user admin (a JWT from /auth/token)."""
        if self._token is None:
            self._token = self._request("POST", "/auth/token", {
                "username": "admin", "password": self.password()}, auth=False)["access_token"]
        return self._request(method, path, body)

    def _request(self, method: str, path: str, body: dict | None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.api_url + path, data=data, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")

    def airflow(self, *args: str) -> subprocess.CompletedProcess:
        """`source airflow_home/env.sh && airflow ARGS`, as the README says."""
        return subprocess.run([sys.executable, "-m", "airflow", *args], env=self.cli_env,
                              cwd=self.project, capture_output=True, text=True, timeout=300,
                              check=True)

    def trigger(self, run_id: str) -> str:
        self.airflow("dags", "trigger", DAG_ID, "--run-id", run_id)
        return run_id

    def runs(self) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]

    def run_state(self, run_id: str) -> str:
        return self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def tasks(self, run_id: str) -> dict[str, dict]:
        """task_id -> the task instance (state, try_number, ...) of one run."""
        found = self.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def wait_for_task(self, run_id: str, task_id: str, states: set[str],
                      timeout_s: float) -> dict:
        def probe():
            ti = self.tasks(run_id).get(task_id)
            if self.run_state(run_id) in ("success", "failed") and (
                    ti is None or ti["state"] not in states):
                raise AssertionError(f"run {run_id} ended before {task_id} was in {states}: "
                                     f"{self.tasks(run_id)}")
            return ti if ti is not None and ti["state"] in states else None
        return wait_for(f"{task_id} of {run_id} in {states}", probe, timeout_s, self.log)

    def wait_for_run(self, run_id: str, timeout_s: float) -> str:
        return wait_for(f"run {run_id} to finish", lambda: (
            state if (state := self.run_state(run_id)) in ("success", "failed") else None),
            timeout_s, self.log)

    def task_log(self, run_id: str, task_id: str) -> str:
        """The task's log files (every try) as the scheduler wrote them."""
        paths = sorted(p for p in (self.home / "logs").rglob("*.log")
                       if f"run_id={run_id}" in str(p) and f"task_id={task_id}" in str(p))
        return "\n".join(p.read_text() for p in paths)

    # -- MLflow ------------------------------------------------------------------------------
    def mlflow_client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)

    def registry_cli(self, *args: str) -> subprocess.CompletedProcess:
        """`python -m pipeline registry ARGS` against this stack's MLflow."""
        return subprocess.run(
            [sys.executable, "-m", "pipeline", "registry", *args], cwd=self.project,
            env={**self.cli_env, "MLFLOW_TRACKING_URI": self.mlflow_url}, capture_output=True,
            text=True, timeout=300, check=True)

    def kill_mlflow(self) -> None:
        """SIGKILL the MLflow server airflow_local.sh started (its whole process group)."""
        pid = int((self.home / "mlflow.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        wait_for("MLflow to stop answering", lambda: not self._mlflow_answers(), 30)

    def restart_mlflow(self) -> None:
        """A new MLflow server on the same port, store and artifacts (as after a crash)."""
        out = (self.root / "mlflow_restarted.log").open("w")
        self.extra_servers.append(subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(self.mlflow_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.project / 'mlflow.db'}",
             "--artifacts-destination", str(self.project / "mlartifacts")],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        ))
        wait_for("the restarted MLflow", self._mlflow_answers, 180, self.root /
                 "mlflow_restarted.log")

    def _mlflow_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.mlflow_url}/health", timeout=2):  # noqa: S310
                return True
        except OSError:
            return False


@contextlib.contextmanager
def running_stack(root: Path, overrides: dict,
                  extra_env: dict[str, str] | None = None) -> Iterator[LocalStack]:
    """A started LocalStack, stopped on the way out, whether the block passed or failed."""
    stack = LocalStack(root, overrides, extra_env)
    try:
        yield stack.start()
    finally:
        left = stack.stop()
        assert not left, f"still running after the stack stopped: {left}"


def _command_if_running(process) -> str | None:
    import psutil

    try:
        if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
            return " ".join(process.cmdline())
    except psutil.NoSuchProcess:
        pass
    return None

"""Airflow 3 as a deployment runs it: Postgres metadata DB, LocalExecutor, and the scheduler,
dag-processor and API server as separate processes (not `airflow standalone`).

Everything binds to 127.0.0.1 on free ports, except what Airflow cannot be told: the
scheduler's log server listens on all interfaces, so it gets a free port and the per-run
random secret that signs its requests (DESIGN.md section 7). The execution API URL follows
the API server's port, or every task fails with "connection refused".
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.conftest import free_port, wait_http
from tests.production.services import Postgres, stop

COMPONENTS = ("scheduler", "dag-processor", "api-server")


def airflow_env(home: Path, project: Path, pg: Postgres, base: dict[str, str]) -> dict[str, str]:
    """`base` (a client environment) plus the Airflow settings of a small production install."""
    from cryptography.fernet import Fernet

    api_port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    return {
        **base, **pg.env(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url("airflow", "postgresql+psycopg2"),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # 2 cores: the pipeline task does the real work
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "SEQREC_PROJECT_DIR": str(project),
        "SEQREC_SCHEDULE": "none",  # only the run the test triggers
        "PYTHONPATH": str(project),
    }


def airflow(env: dict[str, str], *args: str, check: bool = True,
            timeout_s: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, text=True,
                          capture_output=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


@contextmanager
def airflow_services(env: dict[str, str], logs: Path) -> Iterator[str]:
    """Migrate the metadata DB, start the three components; yields the API server's URL."""
    airflow(env, "db", "migrate")
    api = env["AIRFLOW__API__BASE_URL"]
    with ExitStack() as stack:
        procs = []
        for component in COMPONENTS:
            log = stack.enter_context((logs / f"airflow-{component}.log").open("w"))
            procs.append(subprocess.Popen([sys.executable, "-m", "airflow", component], env=env,
                                          stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        stack.callback(lambda: [stop(p, timeout_s=60) for p in reversed(procs)])
        wait_http(f"{api}/api/v2/monitor/health", 300, procs[-1])
        wait_http(f"{api}/execution/health", 120, procs[-1])
        yield api


def run_state(env: dict[str, str], dag_id: str, run_id: str) -> str | None:
    """The run's state once finished (success/failed), else None."""
    proc = airflow(env, "dags", "list-runs", dag_id, "-o", "json", check=False)
    tables = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]  # skip warnings
    runs = json.loads(tables[-1]) if tables else []
    state = {r["run_id"]: r["state"] for r in runs}.get(run_id)
    return state if state in ("success", "failed") else None



#!/usr/bin/env bash
# Local Airflow 3 + MLflow for seqrec: `make airflow` (or run this script directly).
#
# - AIRFLOW_HOME: project-local airflow_home/ (git-ignored), SQLite metadata DB, this dags/,
#   no examples; `airflow standalone` (scheduler, dag-processor, triggerer, API server).
# - Secrets: a random [api] secret_key (signs log-server requests; the log servers on
#   8793/8794 listen on all interfaces), JWT secret and Fernet key, generated once into
#   airflow_home/secrets.env (mode 600, never committed).
# - API server and MLflow server bound to 127.0.0.1. The execution API URL follows the API
#   port: with another port and the default URL every task fails with "connection refused".
#
# Environment (all optional): AIRFLOW_HOME, AIRFLOW_API_PORT (8080), MLFLOW_PORT (5000),
# AIRFLOW_WORKER_LOG_PORT (8793), AIRFLOW_TRIGGERER_LOG_PORT (8794), SEQREC_BIN (folder of
# the python/airflow/mlflow/dvc to use; default: the one on PATH), SEQREC_SCHEDULE.
set -euo pipefail

PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${SEQREC_BIN:-}" ]]; then export PATH="$SEQREC_BIN:$PATH"; fi
export AIRFLOW_HOME="${AIRFLOW_HOME:-$PROJECT_DIR/airflow_home}"
API_PORT="${AIRFLOW_API_PORT:-8080}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"

mkdir -p "$AIRFLOW_HOME"
SECRETS="$AIRFLOW_HOME/secrets.env"
if [[ ! -s "$SECRETS" ]]; then
  (umask 077 && python - > "$SECRETS" <<'EOF'
import secrets
from cryptography.fernet import Fernet
print(f"AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(32)}")
print(f"AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(32)}")
print(f"AIRFLOW__CORE__FERNET_KEY={Fernet.generate_key().decode()}")
EOF
  )
  echo "generated per-install secrets in $SECRETS"
fi
set -a
# shellcheck disable=SC1090
. "$SECRETS"
set +a

export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT_DIR/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Unpaused from the start, so the README's `airflow dags trigger` runs at once; the weekly
# schedule's first run is the next cron time (dags/seqrec_retrain.py), never one just past.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-False}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$API_PORT"
export AIRFLOW__API__BASE_URL="http://127.0.0.1:$API_PORT"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$API_PORT/execution/"
export AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="${AIRFLOW_WORKER_LOG_PORT:-8793}"
export AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="${AIRFLOW_TRIGGERER_LOG_PORT:-8794}"
export SEQREC_PROJECT_DIR="$PROJECT_DIR"

# First start of a fresh install: land the synthetic shop's events once, so the first
# triggered run has data to train on and can reach @champion. Skipped as soon as anything
# was ever landed (files present, or a landing state from an earlier run).
(cd "$PROJECT_DIR" && python - <<'EOF'
from pathlib import Path

from pipeline.params import load_params
from pipeline.ingest.synthetic import generate_events

params = load_params("params.yaml")
landing = Path(params.airflow.landing_dir)
state = Path(params.airflow.workspace_root) / "landing_state.json"
if not state.exists() and not any(landing.glob("*")):
    landing.mkdir(parents=True, exist_ok=True)
    events, _ = generate_events(params.synthetic, list(params.data.event_types))
    target = landing / "synthetic_seed.parquet"
    events.drop(columns=["source_file", "source_row"]).to_parquet(target, index=False)
    print(f"seeded {target} with {len(events):,} synthetic events (first run's data)")
EOF
)
export PYTHONPATH="$PROJECT_DIR${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
export GX_ANALYTICS_ENABLED=false MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
# The same settings for `airflow ...` commands in another shell (no secrets in it).
export -p | grep -E ' (AIRFLOW__(CORE__DAGS_FOLDER|CORE__LOAD_EXAMPLES|DATABASE__SQL_ALCHEMY_CONN|API__HOST|API__PORT|API__BASE_URL|CORE__EXECUTION_API_SERVER_URL)|AIRFLOW_HOME|SEQREC_PROJECT_DIR|SEQREC_SCHEDULE|MLFLOW_TRACKING_URI|PYTHONPATH)=' \
  > "$AIRFLOW_HOME/env.sh"

# Each server in its own process group, so stopping this script stops all their children.
setsid mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 \
  --backend-store-uri "sqlite:///$PROJECT_DIR/mlflow.db" \
  --artifacts-destination "$PROJECT_DIR/mlartifacts" > "$AIRFLOW_HOME/mlflow.log" 2>&1 &
MLFLOW_PID=$!
setsid airflow standalone &
AIRFLOW_PID=$!
# Process-group leaders of the two servers (for tools and tests that stop one of them).
echo "$MLFLOW_PID" > "$AIRFLOW_HOME/mlflow.pid"
echo "$AIRFLOW_PID" > "$AIRFLOW_HOME/airflow.pid"
stop() {
  trap - EXIT INT TERM
  kill -TERM -- "-$AIRFLOW_PID" "-$MLFLOW_PID" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 -- "-$AIRFLOW_PID" 2>/dev/null || kill -0 -- "-$MLFLOW_PID" 2>/dev/null || return 0
    sleep 1
  done
  kill -KILL -- "-$AIRFLOW_PID" "-$MLFLOW_PID" 2>/dev/null || true
}
trap stop EXIT INT TERM

# standalone's "ready" does not wait for the API server; tasks need it (execution API).
wait_http() {
  for _ in $(seq 1 600); do
    python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" \
      2>/dev/null && return 0
    kill -0 "$AIRFLOW_PID" 2>/dev/null || { echo "airflow standalone exited" >&2; exit 1; }
    sleep 1
  done
  echo "timed out waiting for $1" >&2
  exit 1
}
wait_http "http://127.0.0.1:$API_PORT/api/v2/monitor/health"
wait_http "http://127.0.0.1:$API_PORT/execution/health"
wait_http "http://127.0.0.1:$MLFLOW_PORT/health"
PASSWORDS="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
cat <<EOF

  Airflow UI:   http://127.0.0.1:$API_PORT   (DAG: seqrec_retrain)
  Login:        user admin, password in $PASSWORDS
                ($(cat "$PASSWORDS" 2>/dev/null || echo "not generated yet"))
  MLflow UI:    http://127.0.0.1:$MLFLOW_PORT   (approve: tag approval=approved on the version)
  AIRFLOW_HOME: $AIRFLOW_HOME   (logs: $AIRFLOW_HOME/logs, MLflow log: $AIRFLOW_HOME/mlflow.log)
  CLI:          source $AIRFLOW_HOME/env.sh && airflow dags trigger seqrec_retrain
  New data:     drop event files into $PROJECT_DIR/data/landing/
seqrec: Airflow API and MLflow ready
EOF
wait "$AIRFLOW_PID"

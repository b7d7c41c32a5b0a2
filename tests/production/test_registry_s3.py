"""MLflow on Postgres with S3 artifacts: the pipeline logs its runs, the registry commands work
with the accounts of docs/deploy.md, and `mlflow models serve` answers from @champion."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import free_port, wait_http
from tests.production.conftest import MLFLOW_BUCKET, registry, version_tags
from tests.production.services import credentials, stop

pytestmark = pytest.mark.production
TRAINING_STAGES = {"pretrain", "finetune", "finetune_scratch"}


def test_pipeline_runs_live_in_postgres_and_artifacts_in_s3(stack, prod_project):
    from mlflow import MlflowClient

    with credentials(*stack.users["pipeline"]):
        client = MlflowClient(tracking_uri=stack.mlflow.uri)
        experiment = client.get_experiment_by_name("seqrec")
        runs = client.search_runs([experiment.experiment_id], max_results=100)
    stages = {r.data.tags.get("seqrec.stage"): r for r in runs}
    assert TRAINING_STAGES | {"pipeline"} <= set(stages), sorted(stages)
    assert stages["finetune"].data.metrics["val_ndcg_at_10"] >= 0
    # The server's backend store is the Postgres database, not a file next to it.
    rows = stack.pg.query("mlflow", "SELECT run_uuid FROM runs WHERE experiment_id = %s",
                          (int(experiment.experiment_id),))
    assert {r.info.run_id for r in runs} == {row[0] for row in rows}
    # Artifacts went through the server's proxy into the bucket.
    finetune_id = stages["finetune"].info.run_id
    keys = stack.s3.keys(MLFLOW_BUCKET, prefix="mlflow/")
    assert any(k.endswith(f"{finetune_id}/artifacts/model/model.safetensors") for k in keys), \
        keys[:20]


def test_register_approve_promote_and_serve_champion(stack, prod_project, registered, tmp_path):
    proc = registry(stack, prod_project, "approver", "approve")
    assert f"seqrec v{registered}: approval=approved" in proc.stdout
    proc = registry(stack, prod_project, "pipeline", "promote")
    assert f"@champion -> v{registered}" in proc.stdout or "already" in proc.stdout
    status = json.loads(registry(stack, prod_project, "reader", "status", "--json").stdout)
    assert status["champion"] == registered
    assert status["versions"][registered]["approved_by"] == "approver"
    assert version_tags(stack, registered)["promoted_by"] == "pipeline"  # the service login

    # Serve the champion as the read-only account: the model comes from S3 via the server.
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/seqrec@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port)],
        env=stack.env("reader"), stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout_s=300, proc=server)
        # The default model reads time gaps (model.time_gap_buckets): requests send times.
        records = [{"history": ["i1", "i2"], "timestamps": [1_700_000_000, 1_700_003_600]},
                   {"history": [], "timestamps": []}]
        body = json.dumps({"dataframe_records": records, "params": {"k": 5}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            predictions = json.loads(response.read())["predictions"]
    finally:
        stop(server)
        log.close()
    assert len(predictions) == 2
    assert all(len(p["items"]) == 5 for p in predictions)
    assert predictions[1]["fallback"] is True  # empty history: the popularity fallback

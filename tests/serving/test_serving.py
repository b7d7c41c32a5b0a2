"""Serving: `mlflow models serve` on models:/seqrec@champion over HTTP, and batch scoring."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import pandas as pd
import pytest

from bench.load_serving import MALFORMED, stop_server
from pipeline.cli import main
from tests.conftest import cli_env, free_port, run_cli, use_store, wait_http
from tests.registry_fixtures import make_package, write_project_files

SERVE_START_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    make_package(root)
    write_project_files(root)
    return root


def post_json(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def champion(mlflow_server, project, monkeypatch):
    """Register the tiny package on the real server and make it @champion."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("SEQREC_HOME", str(project))
    use_store(monkeypatch, mlflow_server)
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", f"serving-{project.name}")
    assert main(["registry", "register"]) == 0
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    version = client.get_registered_model("seqrec").aliases["challenger"]
    assert main(["registry", "promote", "--version", str(version), "--force"]) == 0
    return mlflow_server


def test_mlflow_models_serve_answers_invocations(champion, project):
    port = free_port()
    log_path = project / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                "models:/seqrec@champion",
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=project,
            # mlflow execs `uvicorn` by name: the venv's bin must be on PATH.
            env=cli_env(
                MLFLOW_TRACKING_URI=champion,
                PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: uvicorn child
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", SERVE_START_TIMEOUT_S, proc)
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = post_json(
            url,
            {
                "dataframe_split": {
                    "columns": ["history", "event_types"],
                    "data": [[["item1", "item2", "ghost"], ["view", "cart", "view"]], [[], []]],
                },
                "params": {"k": 3},
            },
        )
        assert status == 200, body
        rows = body["predictions"]
        assert [len(r["items"]) for r in rows] == [3, 3]
        assert rows[0]["unknown_items"] == 1 and rows[0]["fallback"] is False
        assert rows[1]["fallback"] is True and 0 <= rows[0]["purchase_probability"] <= 1
        status, body = post_json(url, {"dataframe_records": [{"history": ["item3"], "k": 2}]})
        assert status == 200 and len(body["predictions"][0]["items"]) == 2
        # Explanations, asked by a column or by the param: one per item, in the items' order.
        status, body = post_json(
            url, {"dataframe_records": [{"history": ["item1", "item2"], "explain": True}],
                  "params": {"k": 3}},
        )
        assert status == 200, body
        row = body["predictions"][0]
        assert [e["item_id"] for e in row["explanations"]] == row["items"]
        assert {e["reason"] for e in row["explanations"]} <= {"repeat", "similar_to", "popular"}
        events = [ev for e in row["explanations"] for ev in e["events"]]
        assert events and {ev["item_id"] for ev in events} <= {"item1", "item2"}
        status, body = post_json(
            url, {"dataframe_split": {"columns": ["history"], "data": [[["item1"]], [[]]]},
                  "params": {"k": 2, "explain": True}},
        )
        assert status == 200 and body["predictions"][1]["explanations"][0]["reason"] == "popular"
        # A malformed request is a 400 naming the rule, not a 500.
        status, body = post_json(url, {"dataframe_records": [{"history": ["item3"], "k": 0}]})
        assert status == 400 and "k must be in 1.." in body["message"]
        # Every kind the load benchmark mixes in is a 400, and the server answers after them.
        for name, bad in MALFORMED.items():
            data = bad.encode() if isinstance(bad, str) else json.dumps(bad).encode()
            request = urllib.request.Request(url, data=data,
                                             headers={"Content-Type": "application/json"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=60)
            assert refused.value.code == 400, name
        status, _ = post_json(url, {"dataframe_records": [{"history": ["item3"]}]})
        assert status == 200
    finally:
        stop_server(proc)  # and its uvicorn child (same process group)


def test_score_cli_from_folder_csv_and_parquet(project, tmp_path):
    package = project / "models" / "mlflow_model"
    csv = tmp_path / "users.csv"
    csv.write_text("user_id,history\nu1,item1 item2 item3\nu2,\nu3,ghost item4\n")
    out = tmp_path / "topk.parquet"
    run_cli(
        "score",
        "--model",
        str(package),
        "--input",
        str(csv),
        "--out",
        str(out),
        "--k",
        "4",
        cwd=project,
    )
    topk = pd.read_parquet(out)
    assert topk["user_id"].tolist() == ["u1", "u2", "u3"]
    assert [len(items) for items in topk["items"]] == [4, 4, 4]
    assert topk["fallback"].tolist() == [False, True, False]
    assert topk["unknown_items"].tolist() == [0, 0, 1]

    parquet = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": ["u1"], "history": [["item1", "item2", "item3"]]}).to_parquet(parquet)
    run_cli(
        "score", "--model", str(package), "--input", str(parquet), "--out", str(out), cwd=project
    )
    same = pd.read_parquet(out)
    assert list(same["items"][0]) == list(topk["items"][0]) + list(same["items"][0])[4:]

    # --explain: the same items, each with its reason and events (timestamps as sent).
    stamped = tmp_path / "stamped.csv"
    stamped.write_text("user_id,history,timestamps\nu1,item1 item2 item3,100 200 300\nu2,,\n")
    explained = tmp_path / "explained.parquet"
    run_cli("score", "--model", str(package), "--input", str(stamped), "--out", str(explained),
            "--k", "4", "--explain", cwd=project)
    why = pd.read_parquet(explained)
    assert list(why["items"][0]) == list(topk["items"][0])
    assert [e["item_id"] for e in why["explanations"][0]] == list(why["items"][0])
    sent = {"item1": 100, "item2": 200, "item3": 300}
    events = [ev for e in why["explanations"][0] for ev in e["events"]]
    assert events and all(sent[ev["item_id"]] == ev["timestamp"] for ev in events)
    assert {e["reason"] for e in why["explanations"][1]} == {"popular"}

    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,items\nu1,item1\n")
    proc = run_cli(
        "score",
        "--model",
        str(package),
        "--input",
        str(bad),
        "--out",
        str(out),
        cwd=project,
        check=False,
    )
    assert proc.returncode == 1 and "missing column(s) ['history']" in proc.stderr
    assert "Traceback" not in proc.stderr

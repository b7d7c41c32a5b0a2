"""Distributed fine-tuning from params alone: Lightning DDP, 2 CPU processes over gloo.

The same `python -m pipeline finetune` command, once with `trainer.devices: 1` and once with
`trainer.strategy: ddp, devices: 2`; nothing else differs but the per-process batch (half,
so both see 32 sequences per optimizer step). DDP must finish, score within noise of one
process on the test split, log to MLflow once (rank zero), and resume after the whole
process group is killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO_ROOT, cli_env, run_cli

pytestmark = pytest.mark.production
# Two standard errors of NDCG@10 over ~450 test users (per-user NDCG has sd <~ 0.45):
# a difference larger than this is not run-to-run noise.
NOISE = 0.05
EPOCHS, BATCH = 4, 32
SHOP = {"data": {"catalog_path": None},  # the synthetic shop brings its own catalogue
        "synthetic": {"n_users": 600, "n_items": 150, "days": 20},
        "sequences": {"max_len": 20, "previous_vocab": None}}
TRAINING = {
    "model": {"hidden_dim": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.1},
    "finetune": {"epochs": EPOCHS, "batch_size": BATCH, "lr": 0.005, "warmup_steps": 5,
                 "patience": EPOCHS, "checkpoint_every_n_steps": 5},
    "trainer": {"accelerator": "cpu", "cpu_threads": 1, "seed": 3},
}
DDP = {"strategy": "ddp", "devices": 2}


def write_params(path: Path, **trainer) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in {**SHOP, **TRAINING}.items():
        params[section].update(values)
    params["trainer"].update(trainer)
    if trainer.get("devices") == 2:
        params["finetune"]["batch_size"] = BATCH // 2  # per process: the same global batch
    path.write_text(yaml.safe_dump(params))
    return path


def ddp_env(root: Path, name: str) -> dict[str, str]:
    # gloo on the loopback interface only; each run its own MLflow store, to count its runs.
    return cli_env(GLOO_SOCKET_IFNAME="lo", MLFLOW_TRACKING_URI=f"sqlite:///{root / name}.db")


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    """Sequences of a small synthetic shop (ingest -> build_sequences)."""
    root = tmp_path_factory.mktemp("ddp_shop")
    params = write_params(root / "params.yaml")
    run_cli("--params", str(params), "ingest", "--out", "interim", cwd=root)
    run_cli("--params", str(params), "build-sequences", "--events", "interim", "--out", "seq",
            "--metrics", "seq.json", cwd=root)
    return root


def finetune_args(params: Path, name: str) -> list[str]:
    return ["--params", str(params), "finetune", "--init", "scratch", "--sequences", "seq",
            "--out", f"models/{name}", "--checkpoints", f"ck_{name}", "--log", f"{name}.csv"]


def finetune(shop: Path, name: str, **trainer) -> tuple[dict, subprocess.CompletedProcess]:
    params = write_params(shop / f"{name}.yaml", **trainer)
    proc = run_cli(*finetune_args(params, name), cwd=shop, **ddp_env(shop, name))
    return json.loads((shop / "models" / name / "training.json").read_text()), proc


def split_ndcg(shop: Path, name: str) -> float:
    out = shop / f"{name}_eval.json"
    run_cli("--params", str(shop / f"{name}.yaml"), "evaluate", "--model", f"models/{name}",
            "--sequences", "seq", "--details", str(out), "--no-track", cwd=shop)
    return json.loads(out.read_text())["model"]["ndcg@10"]




@pytest.fixture(scope="module")
def runs(shop) -> dict:
    single, _ = finetune(shop, "single", devices=1)
    ddp, proc = finetune(shop, "ddp", **DDP)
    return {"single": single, "ddp": ddp, "ddp_stdout": proc.stdout}


def test_ddp_finishes_and_scores_within_noise_of_one_process(shop, runs):
    assert runs["single"]["world_size"] == 1 and runs["ddp"]["world_size"] == 2
    summary = [ln for ln in runs["ddp_stdout"].splitlines() if ln.startswith("finetune_scratch:")]
    assert len(summary) == 1 and "2 process(es)" in summary[0], runs["ddp_stdout"]
    # Each process steps through half the data: the same optimizer steps as one process,
    # and the reported throughput counts the sequences of both processes.
    assert abs(runs["ddp"]["global_step"] - runs["single"]["global_step"]) <= EPOCHS
    seen = {k: r["sequences_per_s"] * r["train_seconds"] for k, r in runs.items()
            if k in ("single", "ddp")}
    assert seen["ddp"] == pytest.approx(seen["single"], rel=0.05), seen
    single, ddp = split_ndcg(shop, "single"), split_ndcg(shop, "ddp")
    print(f"test NDCG@10: 1 process {single:.4f}, DDP 2 processes {ddp:.4f}")
    assert single > 0.2, "the reference run learned nothing"
    assert abs(ddp - single) <= NOISE, (single, ddp)


def test_ddp_logs_to_mlflow_once(shop, runs):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{shop / 'ddp'}.db")
    experiment = client.get_experiment_by_name("seqrec")
    stage_runs = client.search_runs([experiment.experiment_id],
                                    "tags.`seqrec.stage` = 'finetune_scratch'")
    assert len(stage_runs) == 1
    history = client.get_metric_history(stage_runs[0].info.run_id, "val_ndcg_at_10")
    assert sorted(m.step for m in history) == list(range(runs["ddp"]["epochs"]))
    artifacts = [a.path for a in client.list_artifacts(stage_runs[0].info.run_id, "model")]
    assert artifacts.count("model/model.safetensors") == 1
    rows = (shop / "ddp.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(runs["ddp"]["epochs"]))


def test_killed_ddp_finetune_resumes_from_its_step_checkpoint(shop, runs):
    """SIGKILL to the whole process group (both ranks) after a step checkpoint; the re-run
    resumes under DDP from that step and ends where the uninterrupted run ended."""
    params = write_params(shop / "resume.yaml", **DDP)
    args = finetune_args(params, "resume")
    last = shop / "ck_resume" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=shop,
                            env=ddp_env(shop, "resume"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < runs["ddp"]["global_step"]
    run_cli(*args, cwd=shop, **ddp_env(shop, "resume"))
    resumed = json.loads((shop / "models/resume/training.json").read_text())
    assert resumed["world_size"] == 2
    assert resumed["resumed_from_step"] == killed_at
    assert resumed["global_step"] == runs["ddp"]["global_step"]

"""A tiny real model folder, its MLflow package and a project layout for registry tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pipeline.model.config import ModelConfig
from pipeline.model.folder import save_model_dir
from pipeline.model.transformer import SeqRecModel
from pipeline.params import parse_params
from tests.conftest import git_commit_all, use_store
from tests.tiny_sequences import EVENT_TYPES, write_tiny_sequences

N_ITEMS = 12
MAX_LEN = 8


def make_model_dir(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """(sequences folder, finetuned model folder) under `root`; random init weights."""
    sequences = write_tiny_sequences(root / "data" / "sequences", n_items=N_ITEMS, max_len=MAX_LEN)
    (sequences / "stats.json").write_text(
        json.dumps({"users": 40, "items": N_ITEMS, "events": 360})
    )
    model_dir = random_model_dir(
        root / "models" / "finetuned", sequences / "vocab.parquet", MAX_LEN, seed
    )
    return sequences, model_dir


def random_model_dir(folder: Path, vocab_path: Path, max_len: int, seed: int = 0) -> Path:
    """A tiny randomly initialised model folder over the vocabulary at `vocab_path`."""
    import pandas as pd

    torch.manual_seed(seed)
    vocab = pd.read_parquet(vocab_path)
    config = ModelConfig(
        vocab_size=int(vocab["index"].max()) + 1,
        max_len=max_len,
        event_types=EVENT_TYPES,
        hidden_dim=16,
        n_layers=1,
        n_heads=2,
        ffn_dim=16,
        dropout=0.0,
        target_event_types=["cart", "purchase"],
        positive_event_type="purchase",
    )
    return save_model_dir(SeqRecModel(config), folder, vocab_path, {"epochs": 0, "seed": seed})


def make_package(root: Path, seed: int = 0) -> Path:
    """A project at `root` with sequences, a model folder and `models/mlflow_model`."""
    from pipeline.serving.package import package_model

    sequences, model_dir = make_model_dir(root, seed)
    return package_model(
        model_dir, sequences, root / "models" / "mlflow_model", parse_params({}).registry
    )


# What a real project ignores (its .gitignore): outputs, stores and files tests write.
PROJECT_GITIGNORE = (
    "/mlflow.db\n/mlartifacts/\n/reports/\n/workspaces/\n/data\n/models\n/*.json\n/*.log\n"
)


DVC_CONFIG = "[core]\n    remote = local\n['remote \"local\"']\n    url = ../.dvc-remote\n"


def write_project_files(root: Path, ndcg: float = 0.3, data_md5: str = "aaa111.dir",
                        params: str = "registry:\n  model_name: seqrec\n",
                        message: str = "project files") -> None:
    """params.yaml, dvc.lock, reports/eval.json and the validation summary like a real run,
    committed to git with outputs ignored, as registration expects of a project."""
    (root / ".gitignore").write_text(PROJECT_GITIGNORE)
    # A DVC project with the default local remote, as `dvc init` + .dvc/config leave it.
    (root / ".dvc").mkdir(exist_ok=True)
    (root / ".dvc" / "config").write_text(DVC_CONFIG)
    (root / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (root / "params.yaml").write_text(params)
    (root / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n"
        "  build_sequences:\n    cmd: python -m pipeline build-sequences\n    outs:\n"
        f"    - path: data/sequences\n      md5: {data_md5}\n      size: 10\n      nfiles: 5\n"
        "  finetune:\n    cmd: python -m pipeline finetune\n    outs:\n"
        "    - path: models/finetuned\n      md5: bbb222.dir\n      size: 10\n      nfiles: 4\n"
    )
    reports = root / "reports"
    (reports / "validation").mkdir(parents=True, exist_ok=True)
    (reports / "eval.json").write_text(
        json.dumps(
            {
                "model": {"ndcg@10": ndcg, "hr@10": 0.5, "mrr@10": 0.2},
                "baselines": {"popularity": {"ndcg@10": 0.1, "hr@10": 0.2}},
                "slices": {"history": {"short": {"ndcg@10": 0.25}, "long": {"ndcg@10": 0.35}}},
            }
        )
    )
    (reports / "validation" / "summary.json").write_text(
        json.dumps({"rows_in": 100, "rows_valid": 98, "rows_quarantined": 2, "by_rule": {}})
    )
    git_commit_all(root, message)


def enter_project(root: Path, package: Path, monkeypatch) -> Path:
    """Make `root` a project whose outputs are `package`'s, as `dvc repro` leaves them (dvc.lock
    names these paths), with its own SQLite store; the CLI runs in it (cwd, SEQREC_HOME)."""
    write_project_files(root)
    (root / "data").symlink_to(package / "data", target_is_directory=True)
    (root / "models").symlink_to(package / "models", target_is_directory=True)
    monkeypatch.chdir(root)
    monkeypatch.setenv("SEQREC_HOME", str(root))
    use_store(monkeypatch, f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("SEQREC_PIPELINE_RUN", "run-1")
    monkeypatch.delenv("AIRFLOW_CTX_DAG_RUN_ID", raising=False)
    return root

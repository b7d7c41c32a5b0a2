import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, run_cli
from tests.registry_fixtures import random_model_dir
from tests.tiny_sequences import EVENT_TYPES, write_tiny_sequences

MAX_LEN = 8
BASELINES = {"transformer_scratch", "popularity", "recent_popularity", "transitions", "repeat_last"}


def make_model(folder: Path, vocab_path: Path, seed: int) -> Path:
    return random_model_dir(folder, vocab_path, MAX_LEN, seed)


@pytest.fixture
def project(tmp_path):
    seq = write_tiny_sequences(
        tmp_path / "data" / "sequences", n_users=40, n_items=12, max_len=MAX_LEN
    )
    make_model(tmp_path / "models" / "finetuned", seq / "vocab.parquet", seed=1)
    make_model(tmp_path / "models" / "scratch", seq / "vocab.parquet", seed=2)
    (tmp_path / "params.yaml").write_text((REPO_ROOT / "params.yaml").read_text())
    return tmp_path


def oracle_ranks(model_dir: Path, seq: Path) -> np.ndarray:
    """Pessimistic ranks computed one example at a time, straight from the parquet rows."""
    import torch

    from pipeline.model.folder import load_model_dir

    model, _, _ = load_model_dir(model_dir)
    ranks = []
    for row in pd.read_parquet(seq / "test.parquet").itertuples():
        pad = [0] * (MAX_LEN - len(row.history_items))
        items = torch.tensor([pad + list(row.history_items)], dtype=torch.int64)
        types = torch.tensor([pad + list(row.history_types)], dtype=torch.int64)
        scores = model.score_last(items, types)[0][0].numpy()
        ranks.append(int((scores >= scores[row.target_item]).sum()))
    return np.array(ranks, dtype=float)


def evaluate_in_process(*args: str) -> int:
    from pipeline.cli import main

    return main(["--params", str(REPO_ROOT / "params.yaml"), "evaluate", *args])


def test_full_stage_writes_metrics_plots_report_and_mlflow(project):
    log_dir = project / "metrics"
    log_dir.mkdir()
    (log_dir / "finetune_log.csv").write_text(
        "epoch,train_loss,val_ndcg@10,val_hr@10\n0,2.5,0.1,0.2\n1,2.1,0.2,0.3\n"
    )
    run_cli(
        "evaluate",
        "--model",
        "models/finetuned",
        "--scratch",
        "models/scratch",
        "--sequences",
        "data/sequences",
        "--details",
        "reports/eval.json",
        "--metrics",
        "metrics/eval.json",
        "--plots",
        "plots",
        "--report",
        "reports",
        "--training-logs",
        "metrics/finetune_log.csv",
        "metrics/scratch_log.csv",
        cwd=project,
        MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
    )
    document = json.loads((project / "reports/eval.json").read_text())
    assert set(document) == {"model", "baselines", "slices", "validation"}
    assert set(document["validation"]) == {"model", *BASELINES}  # val beside test, every model
    # the DVC metrics file holds only the headline: NDCG@10 of every recommender, the AUC
    headline = json.loads((project / "metrics/eval.json").read_text())
    assert headline == {"model": document["model"]["ndcg@10"],
                        "purchase_auc": document["model"]["purchase_auc"],
                        **{name: b["ndcg@10"] for name, b in document["baselines"].items()}}
    assert set(document["baselines"]) == BASELINES
    model = document["model"]
    for k in (5, 10, 20):
        assert {f"ndcg@{k}", f"hr@{k}", f"mrr@{k}"} <= set(model)
    assert {"coverage@10", "purchase_auc", "purchase_logloss", "purchase_examples"} <= set(model)
    assert model["examples"] == 40
    assert all(len(str(v).split(".")[-1]) <= 5 for v in model.values() if isinstance(v, float))
    # the batched, vectorised pipeline agrees with a per-example oracle
    ranks = oracle_ranks(project / "models/finetuned", project / "data/sequences")
    assert model["hr@10"] == pytest.approx(np.mean(ranks <= 10), abs=1e-5)
    ndcg = np.mean(np.where(ranks <= 10, 1 / np.log2(ranks + 1), 0))
    assert model["ndcg@10"] == pytest.approx(ndcg, abs=1e-5)
    # the walk-the-catalogue data is a first-order chain: transitions must be perfect
    assert document["baselines"]["transitions"]["hr@5"] == 1.0
    slices = document["slices"]
    assert slices["history:short"]["examples"] + slices["history:long"]["examples"] == 40
    assert slices["item:head"]["examples"] + slices["item:tail"]["examples"] == 40
    assert "user:new" not in slices  # every test user is in train: empty slices are dropped
    assert set(slices["target:cart"]) == {"examples", "model", *BASELINES}

    long = pd.read_csv(project / "plots/metrics_at_k.csv")
    assert list(long.columns) == ["model", "k", "ndcg", "hr", "mrr"]
    assert len(long) == 6 * 3
    wide = pd.read_csv(project / "plots/ndcg_at_k.csv")
    assert list(wide["k"]) == [5, 10, 20] and "transitions" in wide.columns
    for png in ("metrics_at_k.png", "slices.png", "training_curves.png"):
        assert (project / "plots/png" / png).stat().st_size > 1000
    markdown = (project / "reports/eval.md").read_text()
    assert "## Model vs baselines" in markdown and "| transitions |" in markdown
    assert "## Slices: NDCG@10" in markdown and "pretraining gain" in markdown
    # A few test users explained: each row names the user, their next event and 3 items,
    # each with a reason the explainer gives.
    explained = markdown.split("## A few explained users", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in explained.splitlines() if line.startswith("| ")][2:]
    assert len(rows) == 5
    for row in rows:
        items = row.split(" | ")[3].split("; ")
        assert len(items) == 3
        assert all(i.split(": ")[1].split(" ")[0] in {"repeat", "similar_to", "popular"}
                   for i in items)
    page = (project / "reports/eval.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and page.count("<table>") >= 4

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`seqrec.stage` = 'evaluate'",
        output_format="list",
    )
    assert len(runs) == 1
    assert runs[0].data.metrics["model_ndcg_at_10"] == pytest.approx(model["ndcg@10"])
    assert "baselines_transitions_hr_at_5" in runs[0].data.metrics
    artifacts = {
        a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "evaluate")
    }
    assert {"evaluate/eval.html", "evaluate/eval.md", "evaluate/eval.json"} <= artifacts


def test_quick_mode_scores_only_the_model(project, monkeypatch):
    monkeypatch.chdir(project)
    assert (
        evaluate_in_process(
            "--model", "models/finetuned", "--sequences", "data/sequences", "--details", "out.json"
        )
        == 0
    )
    document = json.loads((project / "out.json").read_text())
    assert document["baselines"] == {}
    assert set(document["slices"]["history:long"]) == {"examples", "model"}
    assert not (project / "reports").exists() and not (project / "mlflow.db").exists()


def test_bad_inputs_are_one_line_errors(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert (
        evaluate_in_process(
            "--model", "models/nope", "--sequences", "data/sequences", "--details", "out.json"
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: models/nope: not a model folder, missing "
        "['config.json', 'model.safetensors', 'vocab.parquet']"
    ]
    assert (
        evaluate_in_process(
            "--model", "models/finetuned", "--sequences", "data/missing", "--details", "out.json"
        )
        == 1
    )
    assert capsys.readouterr().err.strip() == (
        "error: data/missing/meta.json: not found (run build_sequences first)"
    )
    (project / "data/sequences/test.parquet").write_bytes(b"")
    pd.DataFrame({"user_id": ["u"]}).to_parquet(project / "data/sequences/test.parquet")
    assert (
        evaluate_in_process(
            "--model", "models/finetuned", "--sequences", "data/sequences", "--details", "out.json"
        )
        == 1
    )
    assert "test.parquet: missing columns ['history_items'" in capsys.readouterr().err


def two_vocabularies(tmp_path):
    """Champion: item0..item11 at 3..14. Current: reversed, without item5, two new items."""
    champion = pd.DataFrame(
        {"item_id": [f"item{k}" for k in range(12)], "index": np.arange(3, 15, dtype="int32")}
    )
    names = [f"item{k}" for k in reversed(range(12)) if k != 5] + ["new_a", "new_b"]
    current = pd.DataFrame({"item_id": names, "index": np.arange(3, 3 + len(names), dtype="int32")})
    champion.to_parquet(tmp_path / "champion_vocab.parquet", index=False)
    current.to_parquet(tmp_path / "current_vocab.parquet", index=False)
    return champion, current


def test_vocab_mapping_between_two_vocab_files(tmp_path):
    from pipeline.evaluation.model_scorer import UNK_INDEX, map_vocab

    champion, current = two_vocabularies(tmp_path)
    mapping = map_vocab(
        pd.read_parquet(tmp_path / "current_vocab.parquet"),
        pd.read_parquet(tmp_path / "champion_vocab.parquet"),
    )
    cur = dict(zip(current["item_id"], current["index"], strict=True))
    champ = dict(zip(champion["item_id"], champion["index"], strict=True))
    assert not mapping.identity and mapping.n_unknown == 2
    assert mapping.history_map[:3].tolist() == [0, 1, 2]
    for name in ("item0", "item7", "item11"):
        assert mapping.history_map[cur[name]] == champ[name]
        assert mapping.score_columns[cur[name]] == champ[name]
    assert mapping.history_map[cur["new_a"]] == UNK_INDEX
    assert mapping.score_columns[cur["new_b"]] == -1
    same = map_vocab(champion, champion)
    assert same.identity and same.n_unknown == 0


def test_champion_scores_on_a_different_vocabulary(tmp_path):
    import torch

    from pipeline.evaluation.model_scorer import ModelRecommender
    from pipeline.evaluation.ranking import HistoryBatch, rank_examples
    from tests.evaluation.test_metrics import tiny_examples

    champion, current = two_vocabularies(tmp_path)
    folder = make_model(tmp_path / "champion", tmp_path / "champion_vocab.parquet", seed=3)
    rec = ModelRecommender("model", folder, current, EVENT_TYPES)
    cur = dict(zip(current["item_id"], current["index"], strict=True))
    champ = dict(zip(champion["item_id"], champion["index"], strict=True))
    history = [cur["item3"], cur["new_a"], cur["item9"]]
    batch = HistoryBatch(
        np.array([history]), np.array([[1, 1, 2]]), np.zeros((1, 3), dtype=np.int64), np.array([0])
    )
    scores, purchase = rec.score_with_purchase(batch)
    assert scores.shape == (1, len(current) + 3) and purchase.shape == (1,)
    expected, _ = rec.model.score_last(
        torch.tensor([[champ["item3"], 2, champ["item9"]]]), torch.tensor([[1, 1, 2]])
    )
    for name in ("item0", "item4", "item11"):
        assert scores[0, cur[name]] == pytest.approx(expected[0, champ[name]].item(), rel=1e-5)
    assert np.isneginf(scores[0, [cur["new_a"], cur["new_b"]]]).all()
    # a target the champion never saw is a miss; a known one gets a finite rank
    examples = tiny_examples([history, history], [cur["new_b"], cur["item4"]])
    result = rank_examples(
        rec, examples, len(current) + 3, batch_size=8, exclude_history=False, coverage_k=10
    )
    assert math.isinf(result.ranks[0]) and 1 <= result.ranks[1] <= 12


def test_model_from_mlflow_registry_uri(project, monkeypatch):
    import mlflow

    uri = f"sqlite:///{project / 'registry.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(project)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("reg", artifact_location=(project / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        # the packaged pyfunc keeps the finetuned folder under artifacts/ (serving/package.py)
        mlflow.log_artifacts(
            str(project / "models/finetuned"), artifact_path="model/artifacts/finetuned"
        )
        mlflow.log_text("not a model", "model/code/pipeline/README.txt")
    client = mlflow.MlflowClient()
    client.create_registered_model("seqrec")
    version = client.create_model_version(
        "seqrec", f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    client.set_registered_model_alias("seqrec", "champion", version.version)

    assert (
        evaluate_in_process(
            "--model",
            "models:/seqrec@champion",
            "--sequences",
            "data/sequences",
            "--details",
            "champion.json",
        )
        == 0
    )
    assert (
        evaluate_in_process(
            "--model",
            "models/finetuned",
            "--sequences",
            "data/sequences",
            "--details",
            "local.json",
        )
        == 0
    )
    champion = json.loads((project / "champion.json").read_text())
    local = json.loads((project / "local.json").read_text())
    assert champion == local
    assert (
        evaluate_in_process(
            "--model",
            "models:/seqrec@nobody",
            "--sequences",
            "data/sequences",
            "--details",
            "x.json",
        )
        == 1
    )


TINY_SHOP = """
synthetic: {n_users: 600, n_items: 150, n_categories: 6, n_brands: 10, days: 30}
model: {hidden_dim: 32, n_layers: 1, n_heads: 2}
pretrain: {epochs: 4, batch_size: 64}
finetune: {epochs: 6, batch_size: 64, patience: 3}
trainer: {accelerator: cpu, devices: 1}
data: {catalog_path: null}  # the fresh tmp project has no data/catalog
sequences: {previous_vocab: null}  # ... nor data/previous_vocab
validate: {previous_summary: null}  # ... nor data/previous_validation
"""


@pytest.mark.slow
def test_baseline_order_on_the_synthetic_shop(tmp_path):
    """transformer > transitions > popularity on next-item NDCG@10, everything built for real."""
    import yaml

    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in yaml.safe_load(TINY_SHOP).items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for line in (
        "ingest --out data/interim",
        "validate --interim data/interim --out data/validated --quarantine data/quarantine "
        "--report reports/validation --metrics metrics/validation.json",
        "build-sequences --events data/validated --out data/sequences "
        "--metrics metrics/sequences.json",
        "pretrain --sequences data/sequences --out models/pretrained",
        "finetune --sequences data/sequences --pretrained models/pretrained --out models/finetuned "
        "--checkpoints checkpoints/finetune --log metrics/finetune_log.csv",
        "evaluate --model models/finetuned --sequences data/sequences "
        "--details reports/eval.json --baselines",
    ):
        run_cli(
            *line.split(), cwd=tmp_path, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"
        )
    document = json.loads((tmp_path / "reports/eval.json").read_text())
    model = document["model"]["ndcg@10"]
    transitions = document["baselines"]["transitions"]["ndcg@10"]
    popularity = document["baselines"]["popularity"]["ndcg@10"]
    assert model > transitions > popularity, document

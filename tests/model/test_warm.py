"""Warm start from a registered model: rows carried by item id, new items, retired items."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline.cli import main
from pipeline.errors import ModelError
from pipeline.model.batches import load_sequences
from pipeline.model.config import N_RESERVED
from pipeline.model.fitting import build_config
from pipeline.model.folder import load_model_dir, save_model_dir
from pipeline.model.transformer import SeqRecModel
from pipeline.model.warm import new_item_rows, warm_start
from pipeline.params import parse_params
from tests.tiny_sequences import FIRST_ITEM, write_tiny_sequences

TINY = {
    "model": {"hidden_dim": 16, "n_layers": 1, "n_heads": 2, "dropout": 0.0},
    "pretrain": {"epochs": 1, "batch_size": 16, "lr": 0.01, "warmup_steps": 2},
    "finetune": {"epochs": 1, "batch_size": 16, "lr": 0.01, "warmup_steps": 2},
    "trainer": {"seed": 1, "cpu_threads": 1},
}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)


def params_file(path, **sections):
    merged = {k: {**v, **sections.get(k, {})} for k, v in TINY.items()}
    merged.update({k: v for k, v in sections.items() if k not in merged})
    path.write_text(yaml.safe_dump(merged))
    return path


def random_model_dir(seq_dir, out, seed=0, **model):
    """A model folder with random (seeded) weights for `seq_dir`: every row distinct."""
    data = load_sequences(seq_dir)
    config = build_config(parse_params({"model": {**TINY["model"], **model}}), data)
    torch.manual_seed(seed)
    champion = SeqRecModel(config)
    save_model_dir(champion, out, data.vocab_path, {"stage": "finetune"})
    return out


def with_vocab(seq_dir, vocab):
    """Give a sequences folder a larger vocabulary, as `previous_vocab` would."""
    vocab.to_parquet(seq_dir / "vocab.parquet", index=False)
    meta = json.loads((seq_dir / "meta.json").read_text())
    meta["vocab_size"] = int(vocab["index"].max()) + 1
    (seq_dir / "meta.json").write_text(json.dumps(meta))
    return seq_dir


def warm_model(seq_dir, champion_dir):
    data = load_sequences(seq_dir)
    model = SeqRecModel(build_config(parse_params({"model": TINY["model"]}), data))
    if data.item_features is not None:  # as run_stage does: the new data's catalogue first
        model.set_item_features(torch.from_numpy(data.item_features),
                                torch.from_numpy(data.feature_columns))
    summary = warm_start(model, champion_dir, data)
    return model.eval(), summary


def test_warm_start_gives_the_champion_scores_before_the_first_step(tmp_path):
    old = write_tiny_sequences(tmp_path / "old", n_items=12)
    champion, _, _ = load_model_dir(random_model_dir(old, tmp_path / "champion"))
    same, summary = warm_model(old, tmp_path / "champion")
    histories = torch.tensor([[0, 3, 4, 5], [7, 8, 9, 14]])
    types = torch.tensor([[0, 1, 2, 1], [1, 1, 3, 2]])
    expected = champion.score_last(histories, types)
    for ours, theirs in zip(same.score_last(histories, types), expected, strict=True):
        assert torch.equal(ours, theirs)
    assert summary["known_items"] == 12 and summary["new_items"] == 0

    grown = write_tiny_sequences(tmp_path / "grown", n_items=15, seed=1)  # item12..14 are new
    model, summary = warm_model(grown, tmp_path / "champion")
    assert (summary["known_items"], summary["new_items"]) == (12, 3)
    # Known items: the same hidden states, item rows and explore logits as the champion's.
    assert torch.equal(model(histories, types), champion(histories, types))
    known = slice(0, FIRST_ITEM + 12)
    assert torch.equal(model.item_table()[known], champion.item_table()[known])
    hidden = model(histories, types)[:, -1]
    assert torch.equal(model.item_logits(hidden)[:, :12], champion.item_logits(hidden)[:, :12])
    # New items start from the mean of the known rows (the tiny shop has no catalogue).
    mean = champion.item_emb.weight[N_RESERVED:].mean(0)
    assert torch.allclose(model.item_emb.weight[FIRST_ITEM + 12:], mean.expand(3, -1))


def test_new_items_start_from_known_items_sharing_their_side_features():
    table = torch.zeros(7, 2)
    table[3], table[4], table[5] = torch.tensor([1.0, 0]), torch.tensor([3.0, 0]), \
        torch.tensor([0, 8.0])
    features = torch.tensor([[0, 0], [0, 0], [0, 0], [1, 0], [1, 2], [3, 0], [1, 0]])
    known, new = torch.tensor([3, 4, 5]), torch.tensor([6])
    rows, from_features = new_item_rows(table, known, new, features)
    assert from_features == 1 and torch.equal(rows[0], torch.tensor([2.0, 0]))  # token 1: 3, 4
    no_catalogue = torch.tensor([[0, 0]] * 6 + [[4, 0]])  # a token no known item has
    rows, from_features = new_item_rows(table, known, new, no_catalogue)
    assert from_features == 0 and torch.allclose(rows[0], table[3:6].mean(0))


def test_a_grown_vocabulary_warm_starts_through_the_stages_and_scores(tmp_path):
    old = write_tiny_sequences(tmp_path / "old", n_items=12)
    champion_dir = random_model_dir(old, tmp_path / "champion")
    (champion_dir / "origin.json").write_text(json.dumps({"uri": "models:/seqrec/3"}))
    grown = write_tiny_sequences(tmp_path / "grown", n_items=15, seed=1)
    params = params_file(tmp_path / "params.yaml",
                         retrain={"init": "champion", "init_from": str(champion_dir)})
    common = ["--params", str(params)]
    assert main([*common, "pretrain", "--sequences", str(grown), "--out", "pre"]) == 0
    pre = json.loads((tmp_path / "pre/training.json").read_text())
    assert (pre["init"], pre["init_from"], pre["epochs"], pre["new_items"]) == \
        ("champion", "models:/seqrec/3", 0, 3)
    assert main([*common, "finetune", "--sequences", str(grown), "--pretrained", "pre",
                 "--out", "fine", "--checkpoints", "ck"]) == 0
    model, config, vocab = load_model_dir(tmp_path / "fine")
    assert config.vocab_size == FIRST_ITEM + 15 and len(vocab) == 15
    assert json.loads((tmp_path / "fine/training.json").read_text())["init_from"] == \
        "models:/seqrec/3"
    logits, _ = model.score_last(torch.tensor([[12, 16, 17]]), torch.tensor([[1, 1, 2]]))
    assert torch.isfinite(logits[0, N_RESERVED:]).all()

    import mlflow

    run = mlflow.search_runs(experiment_names=["seqrec"], output_format="list",
                             filter_string="tags.`seqrec.stage` = 'finetune'")[0]
    assert run.data.params["init_from"] == "models:/seqrec/3"


def test_a_retired_item_keeps_its_row_and_never_breaks_scoring(tmp_path):
    old = write_tiny_sequences(tmp_path / "old", n_items=15)
    champion_dir = random_model_dir(old, tmp_path / "champion")
    champion = load_model_dir(champion_dir)[0]
    # item12..14 are no longer sold: the new data lacks them, the vocabulary keeps them.
    new = with_vocab(write_tiny_sequences(tmp_path / "new", n_items=12, seed=2),
                     pd.read_parquet(champion_dir / "vocab.parquet"))
    retired = torch.arange(FIRST_ITEM + 12, FIRST_ITEM + 15)
    model, summary = warm_model(new, champion_dir)
    assert summary["known_items"] == 15 and summary["new_items"] == 0
    assert torch.equal(model.item_emb.weight[retired], champion.item_emb.weight[retired])
    params = params_file(tmp_path / "params.yaml",
                         retrain={"init": "champion", "init_from": str(champion_dir)})
    assert main(["--params", str(params), "pretrain", "--sequences", str(new), "--out", "pre"]) == 0
    assert main(["--params", str(params), "finetune", "--sequences", str(new), "--pretrained",
                 "pre", "--out", "fine", "--checkpoints", "ck"]) == 0
    model = load_model_dir(tmp_path / "fine")[0]
    history = torch.cat([retired, torch.tensor([3, 4])])[None]
    logits, purchase = model.score_last(history, torch.ones_like(history))
    assert torch.isfinite(logits[0, N_RESERVED:]).all() and torch.isfinite(purchase).all()
    assert np.isfinite(logits[0, retired].numpy()).all()


def test_a_different_architecture_or_no_champion_is_one_line(tmp_path, capsys):
    seq = write_tiny_sequences(tmp_path / "seq", n_items=12)
    champion_dir = random_model_dir(seq, tmp_path / "champion", hidden_dim=32, n_layers=2)
    params = params_file(tmp_path / "params.yaml",
                         retrain={"init": "champion", "init_from": str(champion_dir)})
    code = main(["--params", str(params), "pretrain", "--sequences", str(seq), "--out", "x"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 1 and len(errors) == 1, errors
    assert "cannot warm-start from a different architecture" in errors[0]
    assert "hidden_dim=32 (params/data: 16)" in errors[0] and "n_layers=2" in errors[0]

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no model folder to warm-start from"):
        warm_model(seq, empty)
    assert not os.path.exists(tmp_path / "x")


def test_a_warm_retrain_fine_tunes_only_on_the_recent_window(tmp_path):
    from pipeline.model.batches import TrainCollate, window_start

    seq = write_tiny_sequences(tmp_path / "seq", n_users=60)
    data = load_sequences(seq)
    since = window_start(data, 0.05)  # 72 minutes before the newest training event
    assert since == data.train["ts"].max() - 4320
    rows = list(range(len(data.train["items"])))
    whole = TrainCollate(data.train, data.target_type_ids, 3)(rows)
    recent = TrainCollate(data.train, data.target_type_ids, 3, since)(rows)
    width = whole["items"].shape[1]
    next_ts = torch.from_numpy(data.train["ts"])[:, -width:]  # targets' times (B, T)
    assert torch.equal(recent["item_mask"], whole["item_mask"] & (next_ts >= since))
    assert 0 < recent["item_mask"].sum() < whole["item_mask"].sum()

    champion_dir = random_model_dir(seq, tmp_path / "champion")
    params = params_file(tmp_path / "params.yaml", retrain={
        "init": "champion", "init_from": str(champion_dir), "window_days": 0.05})
    assert main(["--params", str(params), "pretrain", "--sequences", str(seq), "--out", "pre"]) == 0
    assert main(["--params", str(params), "finetune", "--sequences", str(seq), "--pretrained",
                 "pre", "--out", "fine", "--checkpoints", "ck"]) == 0
    training = json.loads((tmp_path / "fine/training.json").read_text())
    assert training["window_days"] == 0.05 and training["window_start_unix"] == since
    assert main(["--params", str(params), "finetune", "--init", "scratch", "--sequences",
                 str(seq), "--out", "scratch", "--checkpoints", "ck2"]) == 0
    assert "window_days" not in json.loads((tmp_path / "scratch/training.json").read_text())


def with_catalogue(seq_dir, features_of: dict[int, list[str]]):
    """Give a sequences folder side features: token index -> feature names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted({n for tokens in features_of.values() for n in tokens})
    ids = {n: i + 1 for i, n in enumerate(names)}
    pq.write_table(pa.table({
        "index": pa.array(list(features_of), pa.int32()),
        "features": pa.array([[ids[n] for n in tokens] for tokens in features_of.values()],
                             pa.list_(pa.int32()))}), seq_dir / "item_features.parquet")
    pq.write_table(pa.table({"feature": pa.array(names, pa.string()),
                             "id": pa.array(range(1, len(names) + 1), pa.int32())}),
                   seq_dir / "feature_vocab.parquet")
    return ids


def test_side_features_carry_over_by_name_and_place_new_items(tmp_path):
    old = write_tiny_sequences(tmp_path / "old", n_items=12)
    brand = {FIRST_ITEM + k: [f"brand=b{k % 3}"] for k in range(12)}
    old_ids = with_catalogue(old, brand)
    champion_dir = random_model_dir(old, tmp_path / "champion")
    champion = load_model_dir(champion_dir)[0]
    grown = write_tiny_sequences(tmp_path / "grown", n_items=13, seed=1)
    # a new brand sorts first, so every old token's id moves by one
    new_ids = with_catalogue(grown, {**brand, FIRST_ITEM + 12: ["brand=a0", "brand=b1"]})
    model, summary = warm_model(grown, champion_dir)
    assert summary["feature_tokens_copied"] == 3 and summary["new_items_from_features"] == 1
    for name, old_id in old_ids.items():
        assert torch.equal(model.feature_emb.weight[new_ids[name]],
                           champion.feature_emb.weight[old_id])
    # the new item starts as the mean of the brand b1 items' own rows (a0 is new to all)
    b1 = [i for i, tokens in brand.items() if tokens == ["brand=b1"]]
    assert torch.allclose(model.item_emb.weight[FIRST_ITEM + 12],
                          champion.item_emb.weight[b1].mean(0))

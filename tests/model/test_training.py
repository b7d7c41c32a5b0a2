"""Training stages on tiny data: losses, metric, freezing, CLI pretrain -> finetune, resume."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import yaml

from pipeline.cli import main
from pipeline.errors import ModelError
from pipeline.model.batches import LengthBucketSampler, load_sequences, make_loaders
from pipeline.model.callbacks import FreezePolicy
from pipeline.model.fitting import resolve_precision
from pipeline.model.folder import load_model_dir
from pipeline.model.training import SeqRecModule, ndcg_hr_at_k, warmup_cosine
from pipeline.params import ParamsError
from tests.conftest import cli_env, run_cli
from tests.tiny_sequences import write_tiny_sequences

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/model/conftest.py

TINY = {
    "model": {"hidden_dim": 16, "n_layers": 2, "n_heads": 2, "dropout": 0.0},
    "pretrain": {"epochs": 2, "batch_size": 16, "lr": 0.01, "warmup_steps": 2},
    "finetune": {"epochs": 3, "batch_size": 16, "lr": 0.01, "warmup_steps": 2,
                 "checkpoint_every_n_steps": 5},
    "trainer": {"seed": 1, "cpu_threads": 1},  # one thread: far faster on a busy shared CPU
}


def write_params(path, **sections):
    merged = {k: {**v, **sections.get(k, {})} for k, v in TINY.items()}
    merged.update({k: v for k, v in sections.items() if k not in merged})
    path.write_text(yaml.safe_dump(merged))
    return path


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for the module: its schema migration costs seconds."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def tiny_module(seq_dir, **overrides) -> SeqRecModule:
    from dataclasses import asdict

    from pipeline.model.fitting import build_config
    from pipeline.params import parse_params

    data = load_sequences(seq_dir)
    repeat_head = overrides.get("loss", "full_ce") == "full_ce"  # the mixture needs full CE
    config = build_config(parse_params({**TINY, "model": {**TINY["model"],
                                                          "repeat_head": repeat_head}}), data)
    kwargs = {"lr": 0.01, "weight_decay": 0.0, "warmup_steps": 2, **overrides}
    return SeqRecModule(config=asdict(config), **kwargs), data


def test_ndcg_and_hit_rate_at_k_use_the_full_ranking():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0], [0.0, 1.0, 2.0, 3.0]])
    ndcg, hit = ndcg_hr_at_k(scores, torch.tensor([1, 1]), k=2)
    assert ndcg.tolist() == pytest.approx([1.0, 0.0])  # rank 0 hit; rank 2 outside the top 2
    assert hit.tolist() == [1.0, 0.0]
    ndcg, hit = ndcg_hr_at_k(scores, torch.tensor([2, 2]), k=3)  # rank 1 in both rows
    assert ndcg.tolist() == pytest.approx([1 / math.log2(3)] * 2)
    tied = torch.tensor([[0.0, 1.0, 1.0, 1.0]])
    assert ndcg_hr_at_k(tied, torch.tensor([1]), k=2)[1].item() == 0.0  # ties count against


def test_warmup_then_cosine_decay():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100) == pytest.approx(0.0)
    # a time budget further along than the steps decays on the clock; warmup is untouched
    assert warmup_cosine(10, 10, 100, time_progress=0.5) == pytest.approx(0.5)
    assert warmup_cosine(10, 10, 100, time_progress=1.5) == pytest.approx(0.0)
    assert warmup_cosine(55, 10, 100, time_progress=0.1) == pytest.approx(0.5)
    assert warmup_cosine(0, 10, 100, time_progress=0.9) == pytest.approx(0.1)


@pytest.mark.parametrize("budget_s, decayed", [(None, False), (1e-3, True)])
def test_time_budget_decays_the_learning_rate_on_the_clock(tmp_path, budget_s, decayed):
    from datetime import timedelta

    seq = write_tiny_sequences(tmp_path / "seq")
    module, data = tiny_module(seq, warmup_steps=0, time_budget_s=budget_s)
    train, _ = make_loaders(data, 16, finetune=False, num_workers=0)

    class StopAfterThreeSteps(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            trainer.should_stop = trainer.global_step >= 3

    trainer = pl.Trainer(max_epochs=50, limit_train_batches=3, max_time=timedelta(minutes=5),
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[StopAfterThreeSteps()])
    trainer.fit(module, train)
    assert trainer.global_step == 3  # of 150 planned: the steps alone keep the rate high
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert (lr == pytest.approx(0.0)) is decayed


def test_length_buckets_cover_every_row_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 51, size=1000)
    sampler = LengthBucketSampler(lengths, batch_size=10, seed=3, pool_batches=20)
    order = list(sampler)
    assert sorted(order) == list(range(1000))  # each row exactly once per epoch
    batches = np.array(order).reshape(100, 10)
    spread = np.ptp(lengths[batches], axis=1).mean()  # max - min length inside a batch
    random_spread = np.ptp(lengths[rng.permutation(1000).reshape(100, 10)], axis=1).mean()
    assert spread < 0.25 * random_spread
    assert list(sampler) == order  # deterministic for a (seed, epoch)
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new shuffle each epoch
    sampler.set_epoch(0)
    first_lengths = [lengths[b].min() for b in batches[:10]]
    assert first_lengths != sorted(first_lengths)  # batches come in random order


def test_finetune_batches_score_only_target_events(tmp_path):
    data = load_sequences(write_tiny_sequences(tmp_path / "seq"))
    pre, _ = make_loaders(data, 64, finetune=False, num_workers=0)
    fine, _ = make_loaders(data, 64, finetune=True, num_workers=0)
    pre_batch, fine_batch = next(iter(pre)), next(iter(fine))
    # pretraining: every real input with a real next event
    real = (pre_batch["items"] != 0) & (pre_batch["next_items"] != 0)
    assert torch.equal(pre_batch["item_mask"], real)
    # fine-tuning: only next events that are carts or purchases (every third event here)
    scored = fine_batch["item_mask"]
    assert 0 < scored.sum() < real.sum()
    assert not (scored & (fine_batch["next_items"] == 0)).any()
    assert fine_batch["purchase_label"][scored].unique().tolist() == [0.0, 1.0]


@pytest.mark.parametrize("loss", ["full_ce", "sampled_softmax"])
def test_training_learns_the_next_item_pattern(tmp_path, loss):
    seq = write_tiny_sequences(tmp_path / "seq", n_users=120)
    pl.seed_everything(0, verbose=False)
    module, data = tiny_module(seq, loss=loss, n_negatives=8,
                               item_counts=data_counts(seq) if loss != "full_ce" else None)
    train, val = make_loaders(data, 16, finetune=False, num_workers=0)
    batch = next(iter(train))
    with torch.no_grad():
        before = float(module.batch_losses(batch)["loss"])
    trainer = pl.Trainer(max_epochs=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train, val)
    module.eval()
    with torch.no_grad():
        after = float(module.batch_losses(batch)["loss"])
    assert after < 0.5 * before
    scores, _ = module.model.score_last(torch.from_numpy(data.val["items"]),
                                        torch.from_numpy(data.val["types"]))
    top1 = scores.argmax(1).numpy()
    assert (top1 == data.val["target_item"]).mean() > 0.9  # item k is followed by item k+1


def data_counts(seq):
    return load_sequences(seq).item_counts()


@pytest.mark.parametrize(
    ("policy", "top_k", "frozen", "trainable"),
    [
        ("none", 1, [], ["item_emb", "encoder.layers.0", "encoder.layers.1"]),
        ("embeddings", 1, ["item_emb", "type_emb", "pos_emb"],
         ["encoder.layers.0", "encoder.layers.1", "purchase_head"]),
        ("all_but_top_k", 1, ["item_emb", "encoder.layers.0"],
         ["encoder.layers.1", "encoder.norm", "purchase_head"]),
        ("all_but_top_k", 0, ["item_emb", "encoder.layers.0", "encoder.layers.1"],
         ["encoder.norm", "purchase_head"]),
    ],
)
def test_freeze_policies_freeze_the_right_params(tmp_path, policy, top_k, frozen, trainable):
    seq = write_tiny_sequences(tmp_path / "seq")
    module, data = tiny_module(seq, purchase_loss_weight=0.5)
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    train, val = make_loaders(data, 16, finetune=True, num_workers=0)
    trainer = pl.Trainer(fast_dev_run=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[FreezePolicy(policy, top_k)])
    trainer.fit(module, train, val)
    for name, param in module.model.named_parameters():
        changed = not torch.equal(before[name], param.detach())
        if any(name.startswith(prefix) for prefix in frozen):
            assert not param.requires_grad and not changed, name
        if any(name.startswith(prefix) for prefix in trainable) and name.endswith("weight"):
            assert param.requires_grad and changed, name


def test_precision_auto_is_fp32_on_cpu_and_bf16_on_cpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    assert resolve_precision("auto") == "32-true"
    with pytest.raises(ParamsError, match="trainer.precision"):
        resolve_precision("bf16-mixed")


def test_pretrain_then_finetune_via_cli_writes_model_folders(tmp_path, mlflow_uri,
                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    seq = write_tiny_sequences(tmp_path / "seq")
    params = write_params(tmp_path / "params.yaml")
    common = ("--params", str(params))
    # pretrain in this process (same entry point, cheaper); finetune as a real subprocess
    assert main([*common, "pretrain", "--sequences", str(seq), "--out", "models/pretrained"]) == 0
    proc = run_cli(*common, "finetune", "--sequences", str(seq), "--pretrained",
                   "models/pretrained", "--out", "models/finetuned", "--checkpoints",
                   "checkpoints/finetune", "--log", "metrics/finetune_log.csv",
                   cwd=tmp_path, MLFLOW_TRACKING_URI=mlflow_uri)
    # A log, not a terminal: one line per epoch and one summary line, no library chatter.
    epochs = json.loads((tmp_path / "models/finetuned/training.json").read_text())["epochs"]
    lines = proc.stdout.splitlines()
    assert len([line for line in lines if line.startswith("finetune epoch ")]) == epochs
    summary = [line for line in lines if line.startswith("finetune: ")]
    assert len(summary) == 1 and "sequences/s (cpu, 32-true, 1 process(es))" in summary[0]
    for noise in ("litlogger", "GPU available", "LeafSpec", "━"):
        assert noise not in proc.stdout + proc.stderr, noise
    for name in ("pretrained", "finetuned"):
        model, config, vocab = load_model_dir(tmp_path / "models" / name)
        assert config.vocab_size == int(vocab["index"].max()) + 1
        assert config.positive_event_type == "purchase"
        items = torch.tensor([[0, 3, 4, 5]])
        types = torch.tensor([[0, 1, 1, 2]])
        logits, purchase = model.score_last(items, types)
        assert logits.shape == (1, config.vocab_size) and purchase.shape == (1,)
    training = json.loads((tmp_path / "models/finetuned/training.json").read_text())
    assert training["init"] == "models/pretrained"
    assert training["best_checkpoint"].endswith("best.ckpt")
    assert training["tokens_per_s"] > 0
    with (tmp_path / "metrics/finetune_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ["epoch", "train_loss", "val_ndcg@10", "val_hr@10"]
    assert float(rows[-1]["val_ndcg@10"]) > 0

    import mlflow

    runs = mlflow.search_runs(experiment_names=["seqrec"], output_format="list",
                              filter_string="tags.`seqrec.stage` = 'finetune'")
    assert runs and "val_ndcg_at_10" in runs[0].data.metrics
    assert runs[0].data.params["model.hidden_dim"] == "16"
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(runs[0].info.run_id,
                                                                       "model")}
    assert "model/model.safetensors" in artifacts


def test_finetune_from_scratch_and_pretrained_mismatches(tmp_path, mlflow_uri, capsys):
    seq = write_tiny_sequences(tmp_path / "seq")
    params = write_params(tmp_path / "params.yaml", finetune={"epochs": 1})
    base = ["--params", str(params), "finetune", "--sequences", str(seq)]
    out = tmp_path / "scratch"
    assert main([*base, "--init", "scratch", "--out", str(out), "--checkpoints",
                 str(tmp_path / "ck_scratch")]) == 0
    assert json.loads((out / "training.json").read_text())["init"] == "scratch"

    wide = write_params(tmp_path / "wide.yaml", model={"hidden_dim": 32})
    code = main(["--params", str(wide), "finetune", "--sequences", str(seq), "--pretrained",
                 str(out), "--out", str(tmp_path / "x"), "--checkpoints", str(tmp_path / "ck")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert code == 1 and len(errors) == 1 and errors[0].startswith("error: ")
    assert "hidden_dim=16 (params/data: 32)" in errors[0]

    other = write_tiny_sequences(tmp_path / "other", n_items=12, seed=3)
    vocab = load_model_dir(out)[2]
    vocab.assign(item_id=vocab["item_id"] + "x").to_parquet(other / "vocab.parquet")
    code = main([*base[:3], "--sequences", str(other), "--pretrained", str(out),
                 "--out", str(tmp_path / "y"), "--checkpoints", str(tmp_path / "ck2")])
    assert code == 1 and "vocabulary differs" in capsys.readouterr().err
    with pytest.raises(ModelError, match="pretrained model folder not found"):
        from pipeline.model.fitting import load_initial_weights
        load_initial_weights(None, tmp_path / "missing", None)


def test_finetune_that_never_beats_its_start_exports_the_start(tmp_path, mlflow_uri):
    """Validation picks among the start and every epoch: a fine-tune that only makes the
    model worse (here an absurd learning rate) exports the pretrained weights unchanged."""
    from safetensors.torch import load_file

    seq = write_tiny_sequences(tmp_path / "seq")
    params = write_params(tmp_path / "params.yaml", pretrain={"epochs": 4},
                          finetune={"epochs": 2, "lr": 50.0, "warmup_steps": 0})
    common = ["--params", str(params)]
    assert main([*common, "pretrain", "--sequences", str(seq), "--out",
                 str(tmp_path / "pre")]) == 0
    out = tmp_path / "ft"
    assert main([*common, "finetune", "--sequences", str(seq), "--pretrained",
                 str(tmp_path / "pre"), "--out", str(out), "--checkpoints",
                 str(tmp_path / "ck")]) == 0
    training = json.loads((out / "training.json").read_text())
    assert training["kept_start"] is True
    assert training["best_val_ndcg@10"] == training["start_val_ndcg@10"] > 0
    before = load_file(tmp_path / "pre" / "model.safetensors")
    after = load_file(out / "model.safetensors")
    assert torch.equal(before["item_emb.weight"], after["item_emb.weight"])


def test_killed_finetune_resumes_from_its_step_checkpoint(tmp_path, mlflow_uri):
    """SIGKILL mid-epoch after a step checkpoint; the re-run continues from that step."""
    seq = write_tiny_sequences(tmp_path / "seq", n_users=400)
    params = write_params(tmp_path / "params.yaml",
                          finetune={"epochs": 3, "batch_size": 4, "checkpoint_every_n_steps": 5})
    args = ["--params", str(params), "finetune", "--init", "scratch", "--sequences", str(seq),
            "--out", "models/scratch", "--checkpoints", "ck", "--log", "log.csv"]
    last = tmp_path / "ck" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=tmp_path,
                            env=cli_env(MLFLOW_TRACKING_URI=mlflow_uri),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training ended before it could be killed"
    ckpt = torch.load(last, weights_only=True)
    killed_at = ckpt["global_step"]
    steps_per_epoch = len(make_loaders(load_sequences(seq), 4, True, 0)[0])
    assert 0 < killed_at < 3 * steps_per_epoch and killed_at % steps_per_epoch, "not mid-epoch"
    run_cli(*args, cwd=tmp_path, MLFLOW_TRACKING_URI=mlflow_uri)
    training = json.loads((tmp_path / "models/scratch/training.json").read_text())
    assert training["resumed_from_step"] == killed_at
    assert training["global_step"] == 3 * steps_per_epoch
    assert training["train_steps"] == 3 * steps_per_epoch - killed_at  # nothing redone
    with (tmp_path / "log.csv").open() as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_bf16_mixed_training_steps(tmp_path):
    assert resolve_precision("auto") == "bf16-mixed"
    module, data = tiny_module(write_tiny_sequences(tmp_path / "seq"))
    train, val = make_loaders(data, 16, finetune=True, num_workers=0)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", fast_dev_run=3,
                         logger=False, enable_progress_bar=False)
    trainer.fit(module, train, val)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])


def test_same_seed_and_params_give_the_same_weights(tmp_path, mlflow_uri):
    from safetensors.torch import load_file

    seq = write_tiny_sequences(tmp_path / "seq")
    params = write_params(tmp_path / "params.yaml", finetune={"epochs": 1},
                          model={"dropout": 0.3})
    weights = []
    for run in ("a", "b"):
        assert main(["--params", str(params), "finetune", "--init", "scratch", "--sequences",
                     str(seq), "--out", str(tmp_path / run), "--checkpoints",
                     str(tmp_path / f"ck_{run}")]) == 0
        weights.append(load_file(tmp_path / run / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_next_type_query_learns_different_items_for_views_and_carts():
    """Views move on to the next item, carts repeat the item just viewed: one model, one
    head, two queries. Without the query the two targets would be indistinguishable."""
    from pipeline.model.config import ModelConfig

    torch.manual_seed(0)
    n_items, length, n_rows = 12, 8, 256
    config = ModelConfig(vocab_size=3 + n_items, max_len=length, event_types=["view", "cart",
                         "purchase"], hidden_dim=32, n_layers=1, n_heads=2, ffn_dim=32,
                         dropout=0.0, target_event_types=["cart"], positive_event_type="cart")
    module = SeqRecModule(config=config.__dict__, lr=0.01, weight_decay=0.0, warmup_steps=1)
    types = torch.randint(1, 3, (n_rows, length + 1))  # view (1) or cart (2)
    steps = torch.where(types[:, 1:] == 1, 1, 0)  # a view moves on, a cart stays
    start = torch.randint(0, n_items, (n_rows, 1))
    walk = torch.cat([start, start + steps.cumsum(1)], dim=1) % n_items + 3  # (N, L+1)
    batch = {"items": walk[:, :-1], "types": types[:, :-1], "ts": torch.zeros_like(walk[:, :-1]),
             "next_items": walk[:, 1:], "next_types": types[:, 1:],
             "item_mask": torch.ones(n_rows, length, dtype=torch.bool),
             "purchase_label": torch.zeros(n_rows, length)}
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        module.batch_losses(batch)["loss"].backward()
        optimizer.step()
    module.eval()
    last = walk[:, -2]  # the last input item
    as_view, _ = module.model.score_last(walk[:, :-1], types[:, :-1], query_types=[1])
    as_cart, _ = module.model.score_last(walk[:, :-1], types[:, :-1], query_types=[2])
    assert (as_cart.argmax(1) == last).float().mean() > 0.95
    assert (as_view.argmax(1) == (last - 3 + 1) % n_items + 3).float().mean() > 0.95

"""The session-log recipe's training parts: later events as pretraining targets, explore-only
pretraining, an explore part over new items only, and the gate's shift fitted on validation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from pipeline.cli import main
from pipeline.model.batches import load_sequences, make_loaders
from pipeline.model.config import ModelConfig
from pipeline.model.training import (
    GATE_SHIFTS,
    SeqRecModule,
    calibrate_gate,
    validation_score,
)
from pipeline.model.transformer import SeqRecModel
from tests.tiny_sequences import write_tiny_sequences

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/model/conftest.py

CONFIG = dict(vocab_size=30, max_len=8, event_types=["view"], hidden_dim=16, n_layers=1,
              n_heads=2, ffn_dim=16, dropout=0.0, repeat_head=True, positions="from_start",
              target_event_types=["view"])


def module(config: dict | None = None, **hparams) -> SeqRecModule:
    torch.manual_seed(0)
    return SeqRecModule(config={**CONFIG, **(config or {})}, lr=0.01, weight_decay=0.0,
                        warmup_steps=0, **hparams).eval()


def view_batch(rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """LEFT-padded view-only rows; every position with a next event is a target."""
    items = torch.tensor(rows)
    types = (items > 0).long()
    next_items, next_types = F.pad(items[:, 1:], (0, 1)), F.pad(types[:, 1:], (0, 1))
    return {"items": items, "types": types, "ts": torch.zeros_like(items),
            "next_items": next_items, "next_types": next_types,
            "item_mask": (items > 0) & (next_items > 0),
            "purchase_label": torch.zeros(items.shape, dtype=torch.float)}


def test_horizon_adds_the_later_events_to_the_explore_part_weighted_by_one_over_steps():
    batch = view_batch([[0, 3, 4, 5, 6], [7, 8, 3, 9, 4]])
    two_ahead = dict(batch, next_items=F.pad(batch["next_items"][:, 1:], (0, 1)),
                     next_types=F.pad(batch["next_types"][:, 1:], (0, 1)))
    two_ahead["item_mask"] = batch["item_mask"] & (two_ahead["next_items"] > 0)
    n1, n2 = batch["item_mask"].sum(), two_ahead["item_mask"].sum()
    assert n1 == 7 and n2 == 5
    # the next event under the repeat/explore mixture, the one after under the explore part
    next_loss = module().batch_losses(batch)["loss"]
    later_loss = module(explore_steps=10**9).batch_losses(two_ahead)["loss"]
    got = module(horizon=2).batch_losses(batch)["loss"]
    assert torch.allclose(got, (next_loss * n1 + 0.5 * later_loss * n2) / (n1 + 0.5 * n2))
    assert not torch.allclose(got, next_loss)


def test_explore_only_pretraining_leaves_the_repeat_scorer_and_gate_to_fine_tuning():
    m = module(explore_steps=10**9)
    m.batch_losses(view_batch([[0, 3, 4, 3, 6], [7, 8, 3, 9, 4]]))["loss"].backward()
    assert all(p.grad is None for p in m.model.head.repeat.parameters())
    assert m.model.head.explore_gate.weight.grad is None
    assert m.model.item_emb.weight.grad.abs().sum() > 0
    full = module()
    full.batch_losses(view_batch([[0, 3, 4, 3, 6], [7, 8, 3, 9, 4]]))["loss"].backward()
    assert full.model.head.explore_gate.weight.grad.abs().sum() > 0


def test_explore_steps_train_the_catalogue_softmax_alone_first():
    from types import SimpleNamespace

    m = module(explore_steps=5)
    m._trainer = SimpleNamespace(global_step=4)
    assert m.exploring()
    m._trainer.global_step = 5
    assert not m.exploring()
    assert not module().exploring()


def test_novel_explore_leaves_history_items_to_the_repeat_part():
    model = SeqRecModel(ModelConfig(**{**CONFIG, "explore_novel": True})).eval()
    items = torch.tensor([[0, 3, 4, 3, 9]])
    with torch.no_grad():
        model.head.explore_gate.bias.fill_(12.0)  # explore share ~1: repeat mass ~0
        scores, _ = model.score_last(items, (items > 0).long())
    assert torch.allclose(torch.logsumexp(scores, 1), torch.zeros(1), atol=1e-5)
    history = [3, 4, 9]
    new = [i for i in range(3, 30) if i not in history]
    assert scores[0, history].max() < scores[0, new].min()


@pytest.mark.parametrize("target", [5, 4])  # a new item, an item of the history
def test_novel_explore_training_log_prob_is_what_scoring_gives(target):
    m = module(config={"explore_novel": True})
    batch = view_batch([[3, 4, 3, 9, target, 6]])  # later items must not count as seen
    mask = torch.zeros_like(batch["item_mask"])
    mask[0, 3] = True  # after 3 4 3 9, predict `target`
    hidden = m.model(batch["items"], batch["types"], batch["ts"])
    log_p = m._target_log_prob(hidden, batch, mask, batch["next_items"][mask],
                               batch["next_types"], leave_out=False, explore_only=False)
    scores, _ = m.model.score_last(batch["items"][:, :4], batch["types"][:, :4])
    assert torch.allclose(log_p[0], scores[0, target], atol=1e-5)


def test_novel_explore_gradients_stay_finite_when_targets_repeat():
    m = module(config={"explore_novel": True}).train()
    loss = m.batch_losses(view_batch([[0, 3, 4, 3, 4], [5, 6, 5, 6, 8]]))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_gate_calibration_keeps_the_best_validation_shift(tmp_path):
    from dataclasses import asdict

    from pipeline.model.fitting import build_config
    from pipeline.params import parse_params

    data = load_sequences(write_tiny_sequences(tmp_path / "seq"))
    params = parse_params({"model": {"hidden_dim": 16, "n_layers": 1, "n_heads": 2}})
    torch.manual_seed(0)
    m = SeqRecModule(config=asdict(build_config(params, data)), lr=0.01, weight_decay=0.0,
                     warmup_steps=0).eval()
    _, val = make_loaders(data, 16, True, 0)
    bias = m.model.head.explore_gate.bias.detach().clone()
    by_shift = {}
    for shift in (0.0, *GATE_SHIFTS):
        with torch.no_grad():
            m.model.head.explore_gate.bias.copy_(bias - shift)
        by_shift[shift] = validation_score(m, val)
    with torch.no_grad():
        m.model.head.explore_gate.bias.copy_(bias)
    shift, best, unshifted = calibrate_gate(m, val)
    assert unshifted == pytest.approx(by_shift[0.0])
    assert best == pytest.approx(max(by_shift.values())) and by_shift[shift] == best
    assert torch.allclose(m.model.head.explore_gate.bias, bias - shift)
    assert validation_score(m, val) == pytest.approx(best)


def test_session_recipe_stages_run_and_record_the_gate_shift(tmp_path, monkeypatch):
    seq = write_tiny_sequences(tmp_path / "seq")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({
        "model": {"hidden_dim": 16, "n_layers": 1, "n_heads": 2, "explore_novel": True},
        "pretrain": {"epochs": 2, "batch_size": 16, "horizon": 3, "explore_steps": 3},
        "finetune": {"epochs": 2, "batch_size": 16, "calibrate_gate": True},
        "trainer": {"seed": 1, "cpu_threads": 1},
    }))
    common = ["--params", "params.yaml"]
    assert main([*common, "pretrain", "--sequences", str(seq), "--out", "pre"]) == 0
    assert main([*common, "finetune", "--sequences", str(seq), "--pretrained", "pre",
                 "--out", "fine", "--checkpoints", "ck"]) == 0
    training = json.loads((tmp_path / "fine/training.json").read_text())
    assert training["gate_shift"] in (0.0, *GATE_SHIFTS)
    assert training["best_val_ndcg@10"] >= training["unshifted_val_ndcg@10"]
    config = json.loads((tmp_path / "fine/config.json").read_text())
    assert config["explore_novel"] is True


def test_novel_explore_needs_the_repeat_head():
    from pipeline.params import ParamsError, parse_params

    with pytest.raises(ParamsError, match="explore_novel needs repeat_head"):
        parse_params({"model": {"explore_novel": True, "repeat_head": False}})
    with pytest.raises(ParamsError, match="calibrate_gate needs model.repeat_head"):
        parse_params({"model": {"repeat_head": False}, "finetune": {"calibrate_gate": True}})
    with pytest.raises(ParamsError, match="explore_steps"):
        parse_params({"pretrain": {"explore_steps": -1}})

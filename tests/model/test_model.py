"""The network and its model folder: shapes, causality, padding, reserved tokens, loading."""

import json

import pytest
import torch

from pipeline.errors import ModelError
from pipeline.model.config import N_RESERVED, ModelConfig
from pipeline.model.folder import load_model_dir, save_model_dir
from pipeline.model.transformer import SeqRecModel, time_gap_bucket
from tests.tiny_sequences import write_tiny_sequences

VOCAB_SIZE = 15


def tiny_config(**overrides) -> ModelConfig:
    base = {"vocab_size": VOCAB_SIZE, "max_len": 8, "event_types": ["view", "cart", "purchase"],
            "hidden_dim": 16, "n_layers": 2, "n_heads": 2, "ffn_dim": 16, "dropout": 0.0}
    return ModelConfig(**{**base, **overrides})


def batch(b: int = 3, t: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(N_RESERVED, VOCAB_SIZE, (b, t), generator=gen)
    types = torch.randint(1, 4, (b, t), generator=gen)
    items[0, :2] = 0  # left padding
    types[0, :2] = 0
    ts = torch.arange(t)[None].repeat(b, 1) * 3600 + 1_700_000_000
    return items, types, ts


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SeqRecModel(tiny_config()).eval()


def test_forward_and_score_last_shapes(model):
    items, types, _ = batch()
    assert model(items, types).shape == (3, 6, 16)
    item_logits, purchase_logit = model.score_last(items, types)
    assert item_logits.shape == (3, VOCAB_SIZE)
    assert purchase_logit.shape == (3,)
    assert torch.isfinite(purchase_logit).all()


def test_score_last_masks_reserved_tokens_only(model):
    item_logits, _ = model.score_last(*batch()[:2])
    assert torch.isneginf(item_logits[:, :N_RESERVED]).all()
    assert torch.isfinite(item_logits[:, N_RESERVED:]).all()


def test_causal_mask_future_events_do_not_change_earlier_outputs(model):
    items, types, _ = batch()
    before = model(items, types)
    items2, types2 = items.clone(), types.clone()
    items2[:, -1] = (items2[:, -1] + 1 - N_RESERVED) % (VOCAB_SIZE - N_RESERVED) + N_RESERVED
    types2[:, -1] = types2[:, -1] % 3 + 1
    after = model(items2, types2)
    torch.testing.assert_close(before[:, :-1], after[:, :-1])
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_left_padding_does_not_change_scores(model):
    items, types, _ = batch()
    padded_items = torch.cat([torch.zeros(3, 2, dtype=torch.long), items], dim=1)
    padded_types = torch.cat([torch.zeros(3, 2, dtype=torch.long), types], dim=1)
    a, pa = model.score_last(items, types)
    b, pb = model.score_last(padded_items, padded_types)
    torch.testing.assert_close(a[:, N_RESERVED:], b[:, N_RESERVED:])
    torch.testing.assert_close(pa, pb)



@pytest.mark.parametrize("positions", ["from_start", "from_end"])
def test_a_training_prefix_is_what_serving_computes_for_that_history(positions):
    """Training reads the state after every prefix of a row; serving sees the prefix alone.
    With positions counted from the start both agree; counted from the end (SASRec's left
    padding) the prefix carries the whole row's length, and they differ."""
    torch.manual_seed(0)
    model = SeqRecModel(tiny_config(positions=positions)).eval()
    items, types, _ = batch(seed=3)
    whole = model(items, types)  # (B, T, D): the state after each prefix, as in training
    alone = torch.stack([model(items[:, : j + 1], types[:, : j + 1])[:, -1]
                         for j in range(2, items.shape[1])], dim=1)  # served one by one
    same = torch.allclose(whole[:, 2:], alone, atol=1e-5)
    assert same == (positions == "from_start")

@pytest.mark.parametrize("training", [False, True])
def test_a_one_event_history_scores_as_its_padded_self(training):
    """Session data (Diginetica, Yoochoose) has two-event rows: a training batch of one
    input position, and a serving request with one event. torch's encoder rejects a
    one-position mask, so the model pads it; the scores are those of the padded history."""
    torch.manual_seed(0)
    model = SeqRecModel(tiny_config(time_gap_buckets=4)).train(training)
    items, types, ts = (x[:, -1:] for x in batch())
    hidden = model(items, types, ts)
    assert hidden.shape == (3, 1, 16)
    if not training:
        padded = [torch.cat([torch.zeros(3, 3, dtype=torch.long), x], dim=1)
                  for x in (items, types, ts)]
        torch.testing.assert_close(model(*padded)[:, -1:], hidden)
        a, _ = model.score_last(items, types, ts)
        b, _ = model.score_last(*padded)
        torch.testing.assert_close(a[:, N_RESERVED:], b[:, N_RESERVED:])


def test_longer_histories_keep_the_most_recent_max_len(model):
    items, types, _ = batch(t=12)
    a, _ = model.score_last(items, types)
    b, _ = model.score_last(items[:, -8:], types[:, -8:])
    torch.testing.assert_close(a[:, N_RESERVED:], b[:, N_RESERVED:])


def test_time_gap_buckets_are_used_and_required():
    torch.manual_seed(0)
    model = SeqRecModel(tiny_config(time_gap_buckets=8)).eval()
    items, types, ts = batch()
    buckets = time_gap_bucket(ts, items, 8)
    assert buckets[0, :3].tolist() == [0, 0, 0]  # padding and the first real event: no gap
    assert (buckets[1, 1:] == 8).all()  # 3600 s -> log2 bucket 11, clipped to the top bucket
    slow = model.score_last(items, types, ts)[0]
    fast = model.score_last(items, types, ts // 3600)[0]
    assert not torch.allclose(slow[:, N_RESERVED:], fast[:, N_RESERVED:])
    with pytest.raises(ModelError, match="ts"):
        model.score_last(items, types)


def test_model_folder_round_trip(model, tmp_path):
    seq = write_tiny_sequences(tmp_path / "seq", n_items=VOCAB_SIZE - N_RESERVED)
    out = save_model_dir(model, tmp_path / "m", seq / "vocab.parquet", {"epochs": 1})
    loaded, config, vocab = load_model_dir(out)
    assert config == model.config
    assert len(vocab) == VOCAB_SIZE - N_RESERVED
    assert not loaded.training
    items, types, _ = batch()
    torch.testing.assert_close(loaded.score_last(items, types)[0], model.score_last(items,
                                                                                    types)[0])


def test_model_folder_errors_are_one_line(model, tmp_path):
    seq = write_tiny_sequences(tmp_path / "seq", n_items=VOCAB_SIZE - N_RESERVED)
    out = save_model_dir(model, tmp_path / "m", seq / "vocab.parquet", {})
    with pytest.raises(ModelError, match="model folder not found"):
        load_model_dir(tmp_path / "nope")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "hidden_dim": 32}))
    with pytest.raises(ModelError, match=r"model.safetensors: weight .* has shape"):
        load_model_dir(out)
    (out / "config.json").write_text(json.dumps({**config, "vocab_size": 99}))
    with pytest.raises(ModelError, match="vocab_size=99"):
        load_model_dir(out)
    (out / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model_dir(out)
    (out / "config.json").write_text(json.dumps({"hidden_dim": 8}))
    with pytest.raises(ModelError, match="missing model config keys"):
        load_model_dir(out)


def test_score_last_queries_the_target_types_mixed_by_the_purchase_head():
    torch.manual_seed(0)
    config = tiny_config(target_event_types=["cart", "purchase"], positive_event_type="purchase")
    model = SeqRecModel(config).eval()
    items, types, _ = batch()
    assert model.default_query_types() == [2, 3]
    cart, purchase_logit = model.score_last(items, types, query_types=[2])
    buy, _ = model.score_last(items, types, query_types=[3])
    view, _ = model.score_last(items, types, query_types=[1])
    assert not torch.allclose(cart[:, N_RESERVED:], view[:, N_RESERVED:])  # the query matters
    # single query: log-probabilities of that query's softmax
    torch.testing.assert_close(cart[:, N_RESERVED:].exp().sum(1), torch.ones(3))
    # default: P(cart) P(item | cart) + P(purchase) P(item | purchase), P from the head
    p_buy = torch.sigmoid(purchase_logit)[:, None]
    expected = torch.log((1 - p_buy) * cart[:, N_RESERVED:].exp()
                         + p_buy * buy[:, N_RESERVED:].exp())
    mixed, _ = model.score_last(items, types)
    torch.testing.assert_close(mixed[:, N_RESERVED:], expected)
    assert torch.isneginf(mixed[:, :N_RESERVED]).all()

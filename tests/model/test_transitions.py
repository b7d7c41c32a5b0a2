"""The transition prior: what followed each item in training, counted, in the explore scores."""

import numpy as np
import pytest
import torch

from pipeline.model.config import N_RESERVED, ModelConfig
from pipeline.model.folder import load_model_dir, save_model_dir
from pipeline.model.transformer import SeqRecModel
from pipeline.model.transitions import successor_counts, successor_table
from pipeline.params import ParamsError, parse_params
from tests.tiny_sequences import write_tiny_sequences

# Left-padded rows; pairs: 3->4 x4, 3->5, 4->3, 4->5, 5->4, 5->3.
ROWS = np.array([[0, 3, 4, 3, 4], [0, 0, 3, 5, 4], [3, 4, 5, 3, 4]])


def test_successor_table_counts_consecutive_pairs_and_keeps_the_top_k():
    successors, counts = successor_table(ROWS, vocab_size=7, top_k=2)
    assert successors.shape == counts.shape == (7, 2)
    assert successors[3].tolist() == [4, 5] and counts[3].tolist() == [4, 1]
    assert successors[4].tolist() == [3, 5] and counts[4].tolist() == [1, 1]  # ties: id order
    assert successors[5].tolist() == [3, 4]
    assert counts[6].tolist() == [0, 0] and counts[0].tolist() == [0, 0]  # padding never counts
    top1, _ = successor_table(ROWS, vocab_size=7, top_k=1)
    assert top1[3].tolist() == [4]


def test_a_training_pair_is_left_out_of_its_own_count():
    successors, counts = (torch.from_numpy(x) for x in successor_table(ROWS, 7, 2))
    last = torch.tensor([3, 3, 6])

    def dense(leave_out=None):
        ids, found = successor_counts(successors, counts, last, leave_out)
        return torch.zeros(len(last), 7).scatter_add_(1, ids, found)

    assert dense()[0, 4] == 4 and dense()[0, 5] == 1 and dense()[2, 1:].sum() == 0
    left_out = dense(leave_out=torch.tensor([4, 5, 3]))
    assert left_out[0, 4] == 3 and left_out[1, 5] == 0 and left_out[1, 4] == 4
    assert left_out[2].sum() == 0  # an item never followed stays at zero, not -1


def tiny_model(top_k: int) -> SeqRecModel:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=7, max_len=6, event_types=["view", "cart"], hidden_dim=8,
                         n_heads=1, ffn_dim=8, dropout=0.0, transition_top_k=top_k)
    return SeqRecModel(config).eval()


def test_the_prior_ranks_the_counted_successor_first_and_travels_with_the_weights(tmp_path):
    model = tiny_model(top_k=2)
    model.set_transitions(*(torch.from_numpy(x) for x in successor_table(ROWS, 7, 2)))
    with torch.no_grad():
        model.transition_weight.weight.fill_(5.0)
    history = (torch.tensor([[4, 3]]), torch.tensor([[1, 1]]))
    scores, _ = model.score_last(*history)
    assert int(scores[0].argmax()) == 4  # 3 was followed by 4 four times
    without = tiny_model(top_k=2)  # same weights, no counts: the prior is what decided
    without.load_state_dict({k: v for k, v in model.state_dict().items()
                             if k != "successor_counts"}, strict=False)
    assert not torch.allclose(without.score_last(*history)[0], scores)
    seq = write_tiny_sequences(tmp_path / "seq", n_items=7 - N_RESERVED)
    saved = save_model_dir(model, tmp_path / "m", seq / "vocab.parquet", {})
    loaded, config, _ = load_model_dir(saved)
    assert config.transition_top_k == 2
    torch.testing.assert_close(loaded.score_last(*history)[0][:, N_RESERVED:],
                               scores[:, N_RESERVED:])


def test_transition_prior_needs_the_full_softmax():
    with pytest.raises(ParamsError, match="transition_top_k needs loss full_ce"):
        parse_params({"model": {"transition_top_k": 5, "loss": "sampled_softmax",
                                "repeat_head": False}})

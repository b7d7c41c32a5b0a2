import math

import numpy as np
import pyarrow as pa
import pytest

from pipeline.evaluation.metrics import (
    auc,
    coverage,
    exclude_items,
    log_loss_from_logits,
    mask_unrankable,
    ranking_metrics,
    rounded,
    target_ranks,
    top_k_items,
)
from pipeline.evaluation.ranking import Examples, HistoryBatch, left_pad, rank_examples

NEG = float("-inf")


def ranks_of(rows, targets):
    scores = mask_unrankable(np.array(rows, dtype=np.float32))
    return target_ranks(scores, np.array(targets, dtype=np.int64))


def test_target_at_rank_one_and_ties_are_pessimistic():
    row = [0, 0, 0, 0.5, 0.9, 0.5, 0.1]  # reserved columns are overwritten with -inf
    ranks = ranks_of([row, row, row], [4, 3, 6])
    # item 4 is alone on top; item 3 ties item 5 below item 4 -> counted after both; item 6 last.
    assert ranks.tolist() == [1.0, 3.0, 4.0]


def test_constant_scores_never_hit():
    n_items = 30
    ranks = ranks_of([[1.0] * (3 + n_items)] * 4, [3, 10, 20, 32])
    assert ranks.tolist() == [n_items] * 4
    metrics = ranking_metrics(ranks, [10])
    assert metrics == {"ndcg@10": 0.0, "hr@10": 0.0, "mrr@10": 0.0}


def test_unrankable_targets_are_misses():
    row = [0, 0, 0, 0.3, NEG, float("nan"), 0.2]
    # 2 = UNK (reserved), 4 = -inf (unknown to a model), 5 = NaN, 9 = outside the vocabulary
    ranks = ranks_of([row] * 4, [2, 4, 5, 9])
    assert np.isinf(ranks).all()
    assert ranking_metrics(ranks, [5])["hr@5"] == 0.0


def test_ranking_metrics_hand_computed():
    metrics = ranking_metrics(np.array([1, 3, np.inf, 11]), [10, 20])
    assert metrics["hr@10"] == pytest.approx(0.5)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert metrics["hr@20"] == pytest.approx(0.75)
    assert metrics["ndcg@20"] == pytest.approx((1 + 0.5 + 1 / math.log2(12)) / 4)
    assert ranking_metrics(np.array([]), [10]) == {}


def test_history_exclusion_moves_ranks():
    scores = np.array([[NEG, NEG, NEG, 0.9, 0.8, 0.7, 0.1]] * 2, dtype=np.float32)
    history = np.array([[0, 0, 3], [0, 5, 4]])
    targets = np.array([5, 5])
    assert target_ranks(scores.copy(), targets).tolist() == [3.0, 3.0]
    excluded = exclude_items(scores.copy(), history)
    # row 0: item 3 (above the target) is hidden -> rank 2; row 1: the target itself was seen.
    assert target_ranks(excluded, targets).tolist() == [2.0, math.inf]


def test_top_k_and_coverage_skip_unrankable():
    scores = np.array(
        [[NEG, NEG, NEG, 0.5, NEG, 0.1], [NEG, NEG, NEG, 0.2, 0.3, NEG]], dtype=np.float32
    )
    items = top_k_items(scores, 2)
    recommended = np.zeros(6, dtype=bool)
    recommended[items] = True
    assert sorted(set(items.tolist())) == [3, 4, 5]
    assert coverage(recommended, 6) == 1.0
    recommended[5] = False
    assert coverage(recommended, 6) == pytest.approx(2 / 3)


def test_auc_hand_computed_with_ties_and_one_class():
    assert auc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.4, 0.4])) == pytest.approx(0.875)
    assert auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_log_loss_is_stable_and_correct():
    assert log_loss_from_logits(np.array([1, 0]), np.array([0.0, 0.0])) == pytest.approx(
        math.log(2)
    )
    assert log_loss_from_logits(np.array([1, 0]), np.array([1000.0, -1000.0])) == pytest.approx(0.0)
    assert log_loss_from_logits(np.array([0]), np.array([1000.0])) == pytest.approx(1000.0)
    assert log_loss_from_logits(np.array([]), np.array([])) is None


def test_rounded_recurses():
    assert rounded({"a": 0.1234567, "b": {"c": 2 / 3, "n": 5}}) == {
        "a": 0.12346,
        "b": {"c": 0.66667, "n": 5},
    }


def test_left_pad_keeps_the_latest_events():
    lists = pa.array([[3, 4, 5, 6], [7], []], type=pa.list_(pa.int32()))
    padded, lengths = left_pad(lists, 3)
    assert padded.tolist() == [[4, 5, 6], [0, 0, 7], [0, 0, 0]]
    assert lengths.tolist() == [4, 1, 0]


class FixedScores:
    """Scores = a fixed row for every request."""

    def __init__(self, name, row):
        self.name, self.row = name, np.asarray(row, dtype=np.float32)

    def score(self, batch: HistoryBatch) -> np.ndarray:
        return np.tile(self.row, (len(batch), 1))


def tiny_examples(histories, targets):
    width = max(len(h) for h in histories)
    items = np.array([[0] * (width - len(h)) + h for h in histories], dtype=np.int64)
    n = len(targets)
    return Examples(
        user_ids=np.array([f"u{i}" for i in range(n)], dtype=object),
        items=items,
        types=(items > 0).astype(np.int64),
        ts=items * 0,
        lengths=(items > 0).sum(1),
        target_item=np.array(targets, dtype=np.int64),
        target_type=np.full(n, 2),
        target_ts=np.arange(n, dtype=np.int64),
    )


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_rank_examples_batches_and_exclusion(batch_size):
    examples = tiny_examples([[3], [4, 3], [6]], [4, 5, 6])
    rec = FixedScores("fixed", [0, 0, 0, 0.9, 0.8, 0.7, 0.6])
    kept = rank_examples(
        rec, examples, 7, batch_size=batch_size, exclude_history=False, coverage_k=2
    )
    assert kept.ranks.tolist() == [2.0, 3.0, 4.0]
    dropped = rank_examples(
        rec, examples, 7, batch_size=batch_size, exclude_history=True, coverage_k=2
    )
    assert dropped.ranks.tolist() == [1.0, 1.0, math.inf]
    assert kept.recommended.nonzero()[0].tolist() == [3, 4]
    assert dropped.recommended.nonzero()[0].tolist() == [3, 4, 5, 6]


def test_rank_examples_rejects_wrong_shape():
    from pipeline.errors import ModelError

    examples = tiny_examples([[3]], [4])
    with pytest.raises(ModelError, match="expected"):
        rank_examples(
            FixedScores("short", [0, 0, 0, 1]),
            examples,
            7,
            batch_size=4,
            exclude_history=False,
            coverage_k=2,
        )

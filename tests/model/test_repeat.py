"""The repeat/explore head: pair features of history items, and what training makes of them."""

from __future__ import annotations

import torch

from pipeline.model.config import ModelConfig
from pipeline.model.heads import repeat_log_prob_of
from pipeline.model.repeat import RANK_BUCKETS, log_bucket, repeat_features
from pipeline.model.transformer import SeqRecModel

ITEMS = torch.tensor([[0, 0, 5, 6, 5, 7, 6], [3, 4, 3, 3, 8, 9, 4]])
TYPES = torch.tensor([[0, 0, 1, 1, 2, 1, 3], [1, 1, 2, 1, 1, 1, 3]])
TS = torch.tensor([[0, 0, 10, 20, 40, 100, 1000], [1, 2, 3, 4, 5, 6, 700]])


def test_each_distinct_history_item_is_one_candidate_with_its_recency_and_counts():
    f = repeat_features(ITEMS, TYPES, n_types=3, ts=TS)
    # after the last event of row 0 (items 5 6 5 7 6): candidates are the LAST 5, 7 and 6
    assert f.candidate[0, -1].tolist() == [False, False, False, False, True, True, True]
    assert f.rank[0, -1, 4:].tolist() == [2, 1, 0]  # 6 most recent, then 7, then 5
    assert f.counts[0, -1, 4].tolist() == [1, 1, 0]  # item 5: one view, one cart
    assert f.counts[0, -1, 6].tolist() == [1, 0, 1]  # item 6: one view, one purchase
    assert f.last_type[0, -1, 4] == 2
    # the query after event 3 of row 1 (items 3 4 3 3) sees 4 and the last 3
    assert f.candidate[1, 3].tolist() == [False, True, False, True, False, False, False]
    assert f.counts[1, 3, 3].tolist() == [2, 1, 0]
    assert f.rank[1, 3, 1] == 1 and f.rank[1, 3, 3] == 0
    assert f.since[0, -1, 5] == log_bucket(torch.tensor(900), 1, 24)  # 1000 - 100 s


def test_scoring_features_equal_the_last_query_of_the_training_features():
    full = repeat_features(ITEMS, TYPES, n_types=3, ts=TS)
    last = repeat_features(ITEMS, TYPES, n_types=3, ts=TS, last_only=True)
    for name in ("candidate", "rank", "gap", "counts", "last_type", "since"):
        assert torch.equal(getattr(last, name)[:, 0], getattr(full, name)[:, -1]), name


def test_affinity_counts_the_shoppers_events_on_items_sharing_each_feature():
    items = torch.tensor([[0, 5, 6, 7, 8]])
    types = torch.tensor([[0, 1, 2, 1, 1]])  # view, cart, view, view
    tokens = {0: [0, 0], 5: [1, 10], 6: [1, 11], 7: [2, 10], 8: [1, 11]}  # (brand, category)
    feature_tokens = torch.tensor([[tokens[int(i)] for i in items[0]]])
    feature_columns = (feature_tokens > 0).long() * torch.tensor([1, 2])
    f = repeat_features(items, types, 2, last_only=True, feature_tokens=feature_tokens,
                        feature_columns=feature_columns, n_columns=2)
    # item 8 (brand 1, category 11): brand 1 viewed twice (5, 8) and carted once (6);
    # category 11 viewed once (8) and carted once (6). Layout: (column, type) flattened.
    assert f.affinity[0, 0, 4].tolist() == [2, 1, 1, 1]
    # item 7 (brand 2, category 10): its own view, and category 10 viewed twice (5, 7)
    assert f.affinity[0, 0, 3].tolist() == [1, 0, 2, 0]


def test_log_buckets_are_exact_then_double():
    values = torch.tensor([0, 1, 7, 8, 15, 16, 31, 32, 1000])
    assert log_bucket(values, 8, RANK_BUCKETS).tolist() == [0, 1, 7, 8, 8, 9, 9, 10, 11]


def test_repeat_probability_of_a_target_picks_its_one_candidate():
    log_repeat = torch.tensor([[float("-inf"), -1.0, -0.5], [-0.2, float("-inf"), -2.0]])
    history = torch.tensor([[3, 4, 5], [6, 7, 8]])
    out = repeat_log_prob_of(log_repeat, history, torch.tensor([5, 7]))
    assert out[0] == -0.5 and out[1] == float("-inf")  # 7 is not a candidate: new item


def _model(repeat: bool = True) -> SeqRecModel:
    torch.manual_seed(0)
    return SeqRecModel(ModelConfig(vocab_size=20, max_len=8, event_types=["view", "cart"],
                                   hidden_dim=16, n_layers=1, n_heads=2, ffn_dim=16,
                                   repeat_head=repeat, target_event_types=["cart"]))


def test_scores_are_a_distribution_over_the_catalogue():
    model = _model().eval()
    items = torch.tensor([[0, 3, 4, 3, 9], [5, 6, 7, 8, 9]])
    types = torch.tensor([[0, 1, 1, 2, 1], [1, 1, 1, 1, 1]])
    scores, _ = model.score_last(items, types)
    assert torch.allclose(torch.logsumexp(scores, 1), torch.zeros(2), atol=1e-5)


def test_training_learns_recency_the_copy_pointer_never_did():
    """Carts of the item viewed two events ago, whatever it is: only recency tells."""
    from pipeline.model.training import SeqRecModule

    torch.manual_seed(0)
    config = dict(vocab_size=40, max_len=8, event_types=["view", "cart"], hidden_dim=16,
                  n_layers=1, n_heads=2, ffn_dim=16, dropout=0.0, repeat_head=True,
                  target_event_types=["cart"])
    module = SeqRecModule(config=config, lr=0.01, weight_decay=0.0, warmup_steps=0)
    opt = torch.optim.Adam(module.parameters(), lr=0.01)

    def batch(n: int) -> dict:
        views = torch.stack([torch.randperm(37)[:5] + 3 for _ in range(n)])  # 5 distinct views
        items = torch.cat([views, views[:, 2:3]], 1)  # then cart the 3rd view (2 events ago)
        types = torch.tensor([1, 1, 1, 1, 1, 2]).repeat(n, 1)
        mask = torch.zeros(n, 6, dtype=torch.bool)
        mask[:, 4] = True  # predict event 5 (the cart) from the state after event 4
        nxt = torch.zeros_like(items)
        nxt[:, :-1] = items[:, 1:]
        next_types = torch.zeros_like(types)
        next_types[:, :-1] = types[:, 1:]
        return {"items": items, "types": types, "ts": torch.zeros_like(items),
                "item_mask": mask, "next_items": nxt, "next_types": next_types,
                "purchase_label": torch.zeros(n, 6)}

    for _ in range(150):
        loss = module.batch_losses(batch(64))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = batch(200)
    module.eval()
    scores, _ = module.model.score_last(test["items"][:, :5], test["types"][:, :5])
    top = scores.argmax(1)
    assert (top == test["items"][:, 2]).float().mean() > 0.9

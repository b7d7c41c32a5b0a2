"""Example slices and the assembly of the evaluation document (`reports/eval.json`) from ranks.

Slices (boolean masks over the examples of the split):
- `user:new` / `user:returning`: the user has no / some events in the train split.
- `history:short` / `history:long`: history length <= / > `evaluate.short_history_max`.
- `item:head` / `item:tail`: the target is / is not among the most popular
  `evaluate.head_item_share` of catalogue items (train event counts; never-seen items are tail).
- `target:<event type>`: the target's event type (cart, purchase, ...).
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.evaluation.metrics import (
    N_RESERVED_TOKENS,
    auc,
    coverage,
    log_loss_from_logits,
    ranking_metrics,
    rounded,
)
from pipeline.evaluation.ranking import Examples, RankResult

PURCHASE_TYPE = "purchase"
PURCHASE_HEAD_TYPES = ("cart", "purchase")  # examples the purchase head is judged on
SLICE_METRICS = ("ndcg", "hr")


def head_items(train_items: np.ndarray, vocab_size: int, head_share: float) -> np.ndarray:
    """(V,) bool: the `head_share` most popular catalogue items by train event count."""
    counts = np.bincount(train_items, minlength=vocab_size)[:vocab_size]
    counts[:N_RESERVED_TOKENS] = 0
    n_head = math.ceil(head_share * (vocab_size - N_RESERVED_TOKENS))
    order = np.argsort(-counts, kind="stable")[:n_head]  # ties: lower index first
    head = np.zeros(vocab_size, dtype=bool)
    head[order[counts[order] > 0]] = True
    return head


def slice_masks(
    examples: Examples,
    *,
    train_users: np.ndarray,
    head: np.ndarray,
    event_types: list[str],
    short_history_max: int,
) -> dict[str, np.ndarray]:
    """Named (N,) boolean masks; empty slices are kept here and dropped from the output."""
    returning = np.isin(examples.user_ids, train_users)
    short = examples.lengths <= short_history_max
    targets = examples.target_item
    in_vocab = (targets >= 0) & (targets < len(head))
    is_head = np.zeros(len(targets), dtype=bool)
    is_head[in_vocab] = head[targets[in_vocab]]
    masks = {
        "user:new": ~returning,
        "user:returning": returning,
        "history:short": short,
        "history:long": ~short,
        "item:head": is_head,
        "item:tail": ~is_head,
    }
    for type_id, name in enumerate(event_types, start=1):
        masks[f"target:{name}"] = examples.target_type == type_id
    return masks


def purchase_metrics(
    result: RankResult, examples: Examples, event_types: list[str]
) -> dict[str, float | int]:
    """AUC and log-loss of the purchase head on cart/purchase targets (label: purchase).

    AUC is left out when only one class is present; log-loss is kept (it is defined).
    """
    if result.purchase_logits is None or PURCHASE_TYPE not in event_types:
        return {}
    type_ids = [1 + event_types.index(name) for name in PURCHASE_HEAD_TYPES if name in event_types]
    judged = np.isin(examples.target_type, type_ids)
    labels = examples.target_type[judged] == 1 + event_types.index(PURCHASE_TYPE)
    logits = result.purchase_logits[judged]
    out: dict[str, float | int] = {"purchase_examples": int(judged.sum())}
    if out["purchase_examples"] == 0:
        return out
    out["purchase_logloss"] = log_loss_from_logits(labels, logits)
    area = auc(labels, logits)
    if area is not None:
        out["purchase_auc"] = area
    return out


def recommender_metrics(
    result: RankResult,
    examples: Examples,
    *,
    ks: list[int],
    coverage_k: int,
    vocab_size: int,
    event_types: list[str],
) -> dict:
    """The metrics block of one recommender in eval.json."""
    out: dict = ranking_metrics(result.ranks, ks)
    out[f"coverage@{coverage_k}"] = coverage(result.recommended, vocab_size)
    out.update(purchase_metrics(result, examples, event_types))
    out["examples"] = len(examples)
    return out


def slice_metrics(
    results: list[RankResult], masks: dict[str, np.ndarray], k: int
) -> dict[str, dict]:
    """{slice: {"examples": n, recommender: {ndcg@k, hr@k}}} for non-empty slices.

    MRR is left out here (it is in the overall block): slices x recommenders already make
    the largest part of eval.json.
    """
    out: dict[str, dict] = {}
    for name, mask in masks.items():
        n_examples = int(mask.sum())
        if n_examples == 0:
            continue
        block: dict = {"examples": n_examples}
        for result in results:
            metrics = ranking_metrics(result.ranks[mask], [k])
            block[result.name] = {f"{m}@{k}": metrics[f"{m}@{k}"] for m in SLICE_METRICS}
        out[name] = block
    return out


def assemble(
    model: RankResult,
    baselines: list[RankResult],
    examples: Examples,
    masks: dict[str, np.ndarray],
    *,
    ks: list[int],
    report_k: int,
    vocab_size: int,
    event_types: list[str],
) -> dict:
    """The eval.json document: {"model": {...}, "baselines": {name: {...}}, "slices": {...}}."""

    def block(result: RankResult) -> dict:
        return recommender_metrics(
            result,
            examples,
            ks=ks,
            coverage_k=report_k,
            vocab_size=vocab_size,
            event_types=event_types,
        )

    document = {
        "model": block(model),
        "baselines": {result.name: block(result) for result in baselines},
        "slices": slice_metrics([model, *baselines], masks, report_k),
    }
    return rounded(document)

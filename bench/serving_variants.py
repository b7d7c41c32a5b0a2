"""Serving variants (`pipeline.serving.variants`) against fp32 in the same run: latency for one
user and for a batch, model size, and NDCG@10 on the test split when one is given.

Quality needs a trained model and its `data/sequences` (test.parquet): the bench measures it
with the evaluation stage's own ranking code on the packaged model folder, once per variant.
"""

from __future__ import annotations

import time
from pathlib import Path

NDCG_K = 10


def test_ndcg(model_dir: Path, sequences: Path, variant: str, params) -> dict | None:
    """NDCG@10 of `model_dir` served as `variant` on `sequences/test.parquet` (None without)."""
    from pipeline.evaluation.evaluate import load_sequence_data
    from pipeline.evaluation.metrics import ranking_metrics
    from pipeline.evaluation.model_scorer import ModelRecommender
    from pipeline.evaluation.ranking import load_examples, rank_examples
    from pipeline.serving.variants import compress

    if not (sequences / "test.parquet").is_file():
        return None
    data = load_sequence_data(sequences)
    examples = load_examples(sequences / "test.parquet", data.max_len)
    recommender = ModelRecommender(variant, model_dir, data.vocab, data.event_types)
    recommender.model = compress(recommender.model, variant)
    result = rank_examples(recommender, examples, data.vocab_size,
                           batch_size=params.evaluate.batch_size,
                           exclude_history=params.evaluate.exclude_history, coverage_k=NDCG_K)
    return {"ndcg@10": ranking_metrics(result.ranks, [NDCG_K])[f"ndcg@{NDCG_K}"],
            "examples": len(examples)}


def _interleaved(calls: dict, repeats: int) -> dict:
    """Time every variant's call once per round, rotating the order, so that load from other
    jobs on a shared machine falls on all variants alike instead of on whichever ran then."""
    import numpy as np

    names = list(calls)
    times = {name: np.empty(repeats) for name in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[: i % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name][i] = (time.perf_counter() - start) * 1e3
    return times


def measure_variants(package: Path, sequences: Path | None, variants: list[str], one, batch,
                     k: int, single_repeats: int, batch_repeats: int, params, threads) -> dict:
    """Per variant: latency (pyfunc, one user and a batch, interleaved), load time (compiling
    included), size, and test NDCG@10."""
    import mlflow.pyfunc

    from bench.bench_serving import summary
    from pipeline.serving.variants import model_bytes

    models, rows = {}, {}
    for variant in variants:
        config = {"variant": variant} | ({} if threads is None else {"threads": threads})
        started = time.perf_counter()
        model = mlflow.pyfunc.load_model(str(package), model_config=config)
        load_s = round(time.perf_counter() - started, 2)  # compiled: includes the compile
        for _ in range(10):
            model.predict(one, params={"k": k})
        model.predict(batch, params={"k": k})  # compiled: the batch shape compiles here
        models[variant] = model
        rows[variant] = {"load_s": load_s,
                         "model_bytes": model_bytes(model.unwrap_python_model().recommender.model)}
    single = _interleaved({v: lambda m=m: m.predict(one, params={"k": k})
                           for v, m in models.items()}, single_repeats)
    many = _interleaved({v: lambda m=m: m.predict(batch, params={"k": k})
                         for v, m in models.items()}, batch_repeats)
    for variant, row in rows.items():
        row["single_user"], row["batch"] = summary(single[variant]), summary(many[variant])
        row["test"] = None
        if sequences is not None:
            row["test"] = test_ndcg(package / "artifacts" / "finetuned", sequences, variant,
                                    params)
    base = rows.get("fp32")
    for row in rows.values():
        if base is None:
            break
        row["speedup_single_p50"] = round(base["single_user"]["p50_ms"]
                                          / row["single_user"]["p50_ms"], 3)
        row["speedup_batch_p50"] = round(base["batch"]["p50_ms"] / row["batch"]["p50_ms"], 3)
        row["size_ratio"] = round(row["model_bytes"] / base["model_bytes"], 3)
        if row["test"] and base["test"]:
            row["ndcg@10_change"] = round(row["test"]["ndcg@10"] - base["test"]["ndcg@10"], 5)
    return rows


def choose(rows: dict, max_ndcg_drop: float = 0.002) -> str:
    """The fastest variant (1,000-user batch) whose NDCG@10 change was measured and is within
    `max_ndcg_drop`, and that beats fp32 by more than this box's noise (5%); else fp32."""
    best, best_speed = "fp32", 1.05
    for name, row in rows.items():
        change = row.get("ndcg@10_change")
        ok = change is not None and abs(change) <= max_ndcg_drop
        if name != "fp32" and ok and row.get("speedup_batch_p50", 0) > best_speed:
            best, best_speed = name, row["speedup_batch_p50"]
    return best

"""Serving variants (`pipeline.serving.variants`) against fp32 in the same run: latency for one
user and for a batch, model size, and NDCG@10 on the test split when one is given.

Quality needs a trained model and its `data/sequences` (test.parquet): the bench measures it
with the evaluation stage's own ranking code on the packaged model folder, once per variant.
"""

from __future__ import annotations

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


def measure_variants(package: Path, sequences: Path | None, variants: list[str], one, batch,
                     k: int, single_repeats: int, batch_repeats: int, params, threads) -> dict:
    """Per variant: latency (pyfunc, one user and a batch), size, and test NDCG@10."""
    import mlflow.pyfunc

    from bench.bench_serving import summary, timed
    from pipeline.serving.variants import model_bytes

    rows = {}
    for variant in variants:
        config = {"variant": variant} | ({} if threads is None else {"threads": threads})
        model = mlflow.pyfunc.load_model(str(package), model_config=config)
        served = model.unwrap_python_model().recommender.model
        for _ in range(10):
            model.predict(one, params={"k": k})
        single = timed(lambda m=model: m.predict(one, params={"k": k}), single_repeats)
        many = timed(lambda m=model: m.predict(batch, params={"k": k}), batch_repeats)
        quality = None
        if sequences is not None:
            quality = test_ndcg(package / "artifacts" / "finetuned", sequences, variant, params)
        rows[variant] = {"single_user": summary(single), "batch": summary(many),
                         "model_bytes": model_bytes(served), "test": quality}
    base = rows.get("fp32")
    for row in rows.values():
        if base is None:
            break
        row["speedup_single_p50"] = round(base["single_user"]["p50_ms"]
                                          / row["single_user"]["p50_ms"], 3)
        row["speedup_batch_mean"] = round(base["batch"]["mean_ms"] / row["batch"]["mean_ms"], 3)
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
        if name != "fp32" and ok and row.get("speedup_batch_mean", 0) > best_speed:
            best, best_speed = name, row["speedup_batch_mean"]
    return best

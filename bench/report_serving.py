"""docs/benchmarks.md's serving section: what `explain` costs, the compressed variants against
fp32, and the load test of `mlflow models serve`, from bench/results/serving.json."""

from __future__ import annotations

from bench.common import table


def _explain_rows(explain: dict, batches: dict) -> list[str]:
    one = explain["single_user"]
    rows = [{"request": f"one user, {name}", "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
             "n": s["n"]} for name, s in one.items()]
    for key, plain in batches.items():  # the run's batch without explain, then with it
        users = key.removeprefix("batch_").removesuffix("_users")
        for name, stats in (("plain", plain["pyfunc"]), ("explain", explain["batch_explain"])):
            rows.append({"request": f"{int(users):,} users, {name}", "p50_ms": stats["p50_ms"],
                         "p99_ms": stats["p99_ms"], "n": stats["n"]})
    out = ["### What `explain` costs (occlusion, pyfunc)", "",
            table(rows, ["request", "p50_ms", "p99_ms", "n"], markdown=True), "",
            f"One user's p99 with `explain` / without: {explain['ratio_single_p99']}x.", ""]
    faithful = explain.get("faithfulness_top3")
    if faithful:
        out += [f"Faithfulness on this model (`bench/explain_faithfulness.py`, top 3 of 30 "
                f"requests): removing the top-weighted event lowered the item's score more than "
                f"removing a random other event on {faithful['top_beats_random']:.0%} of "
                f"{faithful['pairs']} (request, item) pairs; largest gap between a weight and "
                f"the drop measured through the pyfunc: {faithful['max_weight_vs_drop_gap']:.2g}.",
                ""]
    return out


def _variant_rows(variants: dict, chosen: str) -> list[str]:
    rows = []
    for name, v in variants.items():
        test = v.get("test") or {}
        rows.append({
            "variant": name,
            "one_user_p50_ms": v["single_user"]["p50_ms"],
            "speedup_one": v.get("speedup_single_p50"),
            "batch_p50_ms": v["batch"]["p50_ms"],
            "speedup_batch": v.get("speedup_batch_p50"),
            "load_s": v.get("load_s"),
            "state_kib": round(v["model_bytes"] / 1024, 1),
            "size_ratio": v.get("size_ratio"),
            "test_ndcg@10": test.get("ndcg@10"),
            "ndcg_change": v.get("ndcg@10_change"),
        })
    cols = ["variant", "one_user_p50_ms", "speedup_one", "batch_p50_ms", "speedup_batch", "load_s",
            "state_kib", "size_ratio", "test_ndcg@10", "ndcg_change"]
    return ["### Serving variants against fp32 (same run)", "",
            table(rows, cols, markdown=True), "",
            f"Chosen by `bench/serving_variants.py:choose` (faster than fp32 by more than 5% on "
            f"the batch, NDCG@10 within 0.002): **{chosen}**.", ""]


def _load_rows(load: dict) -> list[str]:
    cols = ["concurrency", "requests", "p50_ms", "p99_ms", "ok_per_s", "malformed",
            "malformed_400", "errors"]
    return ["### Load: `mlflow models serve` on 127.0.0.1", "",
            f"{load['server']}; {load['seconds_per_level']} s per level; "
            f"{load['malformed_share']:.0%} of requests malformed "
            f"({', '.join(load['malformed_kinds'])}); latency of the good ones. "
            f"Workers survived (same pids, `/ping` answers): **{load['workers_survived']}**.",
            "", table(load["levels"], cols, markdown=True), ""]


def serving_sections(result: dict | None) -> list[str]:
    if not result or "explain" not in result:
        return []
    model = result.get("model", {})
    out = ["## Serving: explanations, compressed variants, load", "",
           f"Model: {model.get('package')} ({model.get('items'):,} items, max_len "
           f"{model.get('max_len')}); requests of {result['request']['history_len']} events, "
           f"top {result['request']['k']}. Command: `{result.get('command')}`.", ""]
    batches = {k: v for k, v in result.items() if k.startswith("batch_") and k.endswith("_users")}
    out += _explain_rows(result["explain"], batches)
    if result.get("variants"):
        out += _variant_rows(result["variants"], result.get("variant_chosen", "fp32"))
    if result.get("load"):
        out += _load_rows(result["load"])
    return out

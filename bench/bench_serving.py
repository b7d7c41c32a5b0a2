"""Serving latency of the seqrec pyfunc on CPU: one user (p50/p99) and batches of users.

Measures `PyFuncModel.predict` exactly as `mlflow models serve` calls it (MLflow's schema
enforcement included) and, separately, our own `Recommender.recommend` (what the schema
check costs is the difference). Target: one user's top-10 in <= 10 ms at p99. Then, in the
same run: what `explain` costs (p50/p99 with and without), each serving variant against fp32
(`bench/serving_variants.py`: speed, size, test NDCG@10 with --package/--sequences), and a
load test of a real `mlflow models serve` on 127.0.0.1 (`bench/load_serving.py`:
concurrency 1, 8, 32 with malformed requests mixed in).

    # a synthetic model the size of the default shop (random weights: latency only)
    python bench/bench_serving.py --items 12000 --max-len 50 --hidden 64 --layers 2
    # the real packaged model of the pipeline
    python bench/bench_serving.py --package models/mlflow_model --sequences data/sequences

Writes bench/results/serving.json (machine description included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, print_table, write_result  # noqa: E402

PERCENTILES = (50, 90, 99)
EXAMPLE_START_S = 1_767_225_600  # 2026-01-01
EVENT_TYPES = ["view", "cart", "purchase"]
FIRST_ITEM = 3


def synthetic_package(root: Path, args) -> tuple[Path, Path]:
    """A random-weight model folder of the requested size, packaged like the pipeline does."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pipeline.model.config import ModelConfig
    from pipeline.model.folder import save_model_dir
    from pipeline.model.transformer import SeqRecModel
    from pipeline.params import parse_params
    from pipeline.serving.package import package_model

    rng = np.random.default_rng(args.seed)
    sequences = root / "sequences"
    sequences.mkdir(parents=True)
    item_ids = [f"i{k}" for k in range(args.items)]
    pd.DataFrame(
        {
            "item_id": item_ids,
            "index": np.arange(FIRST_ITEM, FIRST_ITEM + args.items, dtype="int32"),
        }
    ).to_parquet(sequences / "vocab.parquet", index=False)
    n_users, length = 1000, args.max_len
    items = rng.zipf(1.2, size=(n_users, length)) % args.items + FIRST_ITEM
    types = rng.integers(1, 4, size=(n_users, length))
    pq.write_table(
        pa.table(
            {
                "user_id": [f"u{u}" for u in range(n_users)],
                "items": pa.array(items.astype("int32").tolist(), pa.list_(pa.int32())),
                "types": pa.array(types.astype("int8").tolist(), pa.list_(pa.int8())),
            }
        ),
        sequences / "train.parquet",
    )
    (sequences / "meta.json").write_text(
        json.dumps(
            {
                "event_types": EVENT_TYPES,
                "target_event_types": ["cart", "purchase"],
                "max_len": args.max_len,
            }
        )
    )
    torch.manual_seed(args.seed)
    config = ModelConfig(
        vocab_size=FIRST_ITEM + args.items,
        max_len=args.max_len,
        event_types=EVENT_TYPES,
        hidden_dim=args.hidden,
        n_layers=args.layers,
        n_heads=2,
        ffn_dim=args.hidden,
        dropout=0.0,
        target_event_types=["cart", "purchase"],
        positive_event_type="purchase",
    )
    model_dir = save_model_dir(
        SeqRecModel(config), root / "finetuned", sequences / "vocab.parquet", {"synthetic": True}
    )
    package = package_model(model_dir, sequences, root / "mlflow_model", parse_params({}).registry)
    return package, sequences


def requests(sequences: Path, n_users: int, history_len: int, seed: int) -> pd.DataFrame:
    """Histories of known items drawn from the vocabulary, oldest first, a view a minute
    (models with time gaps need the timestamps; the others ignore them)."""
    vocab = pd.read_parquet(sequences / "vocab.parquet")["item_id"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    picks = vocab[rng.integers(0, len(vocab), size=(n_users, history_len))]
    stamps = [EXAMPLE_START_S + 60 * i for i in range(history_len)]
    return pd.DataFrame({"history": list(picks), "event_types": [["view"] * history_len] * n_users,
                         "timestamps": [stamps] * n_users})


def timed(fn, repeats: int) -> np.ndarray:
    times_ms = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        times_ms[i] = (time.perf_counter() - start) * 1e3
    return times_ms


def summary(times_ms: np.ndarray) -> dict:
    return {f"p{p}_ms": round(float(np.percentile(times_ms, p)), 3) for p in PERCENTILES} | {
        "mean_ms": round(float(times_ms.mean()), 3),
        "n": int(times_ms.size),
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", help="packaged pyfunc folder (default: build a synthetic one)")
    parser.add_argument("--sequences", help="sequences folder of --package (request item ids; "
                        "its test.parquet gives each variant's NDCG@10)")
    parser.add_argument("--params", default="params.yaml",
                        help="params (registry.serve_workers, evaluate.*); absent = defaults")
    parser.add_argument("--items", type=int, default=12000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--history-len", type=int, default=20, help="events per request")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--single-repeats", type=int, default=300)
    parser.add_argument("--batch-users", type=int, default=1000)
    parser.add_argument("--batch-repeats", type=int, default=5)
    parser.add_argument("--variants", default="fp32,int8",
                        help="serving variants to compare; add `compiled` for torch.compile "
                             "(minutes of compiling on 2 cores)")
    parser.add_argument("--load-levels", default="1,8,32", help="concurrent clients per level")
    parser.add_argument("--load-seconds", type=float, default=8.0, help="per level; 0 = no load")
    parser.add_argument("--workers", type=int, default=None,
                        help="server workers (default: registry.serve_workers)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the package's registry.serve_threads; 0 = all cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/serving.json")
    return parser.parse_args(argv)


def load_params(path: str):
    from pipeline.params import load_params as load
    from pipeline.params import parse_params

    return load(path) if Path(path).is_file() else parse_params({})


def explain_cost(model, one, batch, k: int, args) -> dict:
    """Latency with `explain` against without, same requests, same run."""
    plain = timed(lambda: model.predict(one, params={"k": k}), args.single_repeats)
    explained = timed(lambda: model.predict(one, params={"k": k, "explain": True}),
                      args.single_repeats)
    # Each explained user is len(history) more rows through the model: fewer repeats keep
    # the whole bench within a few minutes on 2 cores.
    batch_explained = timed(lambda: model.predict(batch, params={"k": k, "explain": True}),
                            max(1, min(args.batch_repeats, 2)))
    return {
        "single_user": {"plain": summary(plain), "explain": summary(explained)},
        "ratio_single_p99": round(float(np.percentile(explained, 99)
                                        / np.percentile(plain, 99)), 2),
        "batch_explain": summary(batch_explained),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow.pyfunc

    from bench.explain_faithfulness import faithfulness
    from bench.load_serving import load_test
    from bench.serving_variants import choose, measure_variants

    info = machine(("mlflow",))
    params = load_params(args.params)
    workers = args.workers or params.registry.serve_workers

    with tempfile.TemporaryDirectory() as tmp:
        if args.package:
            package, sequences = Path(args.package), Path(args.sequences)
        else:
            package, sequences = synthetic_package(Path(tmp), args)
        overrides = {} if args.threads is None else {"threads": args.threads}
        model = mlflow.pyfunc.load_model(str(package), model_config=overrides or None)
        recommender = model.unwrap_python_model().recommender
        one = requests(sequences, 1, args.history_len, args.seed)
        batch = requests(sequences, args.batch_users, args.history_len, args.seed + 1)
        params_k = {"k": args.k}
        for _ in range(10):  # warm-up: first calls allocate and pick kernels
            model.predict(one, params=params_k)
        single_pyfunc = timed(lambda: model.predict(one, params=params_k), args.single_repeats)
        single_core = timed(lambda: recommender.recommend(one, k=args.k), args.single_repeats)
        batch_pyfunc = timed(lambda: model.predict(batch, params=params_k), args.batch_repeats)
        batch_core = timed(lambda: recommender.recommend(batch, k=args.k), args.batch_repeats)
        explain = explain_cost(model, one, batch, args.k, args)
        explain["faithfulness_top3"] = faithfulness(
            model, requests(sequences, 30, args.history_len, args.seed + 2), 3,
            recommender.max_k)
        variants = measure_variants(
            package, sequences if args.package else None, args.variants.split(","), one, batch,
            args.k, args.single_repeats, args.batch_repeats, params, args.threads)
        load = None
        if args.load_seconds > 0:
            row = one.iloc[0]
            good = {"dataframe_records": [{name: [v.item() if hasattr(v, "item") else v
                                                  for v in row[name]] for name in one.columns}],
                    "params": params_k}
            load = load_test(package, workers, good, Path(tmp),
                             levels=[int(c) for c in args.load_levels.split(",")],
                             duration_s=args.load_seconds)

    result = {
        "machine": info,
        "model": {
            "items": len(recommender.vocab_index),
            "max_len": recommender.max_len,
            "package": args.package or "synthetic",
            "hidden": args.hidden if not args.package else None,
            "layers": args.layers if not args.package else None,
        },
        "request": {"history_len": args.history_len, "k": args.k},
        "single_user": {"pyfunc": summary(single_pyfunc), "recommender": summary(single_core)},
        f"batch_{args.batch_users}_users": {
            "pyfunc": summary(batch_pyfunc),
            "recommender": summary(batch_core),
            "pyfunc_users_per_s": round(args.batch_users / (batch_pyfunc.mean() / 1e3), 1),
        },
        "target_single_user_p99_ms": 10.0,
        "meets_target": bool(np.percentile(single_pyfunc, 99) <= 10.0),
        "explain": explain,
        "variants": variants,
        "variant_chosen": choose(variants),
        "load": load,
    }
    # baseline: our own Recommender.recommend on the same requests (no MLflow schema layer)
    result["ratio_pyfunc_vs_recommender_p50"] = round(
        float(np.percentile(single_pyfunc, 50) / np.percentile(single_core, 50)), 2)
    rows = [{"what": name, **stats} for name, stats in result["single_user"].items()]
    rows += [{"what": f"{name} (explain cost)", **stats}
             for name, stats in explain["single_user"].items()]
    print_table(rows, ["what", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "n"],
                title="one user, top-k (pyfunc vs the Recommender baseline; explain)")
    if load:
        print_table(load["levels"], ["concurrency", "requests", "p50_ms", "p99_ms", "ok_per_s",
                                     "malformed", "malformed_400", "errors"],
                    title=f"load: {load['server']}, workers survived: {load['workers_survived']}")
    write_result("serving", result, Path(args.out))


if __name__ == "__main__":
    main()

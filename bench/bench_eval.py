"""Benchmark: full ranking of every test user over the whole catalogue.

Target: 22k users x 12k items in <= 15 s on 2 CPU cores (the evaluate stage ranks the model,
the from-scratch ablation and four baselines, so each must be fast).

    # the full-size run (the lead's command; a few minutes of CPU)
    nice -n 10 python bench/bench_eval.py --users 22000 --items 12000 --threads 2
    # smoke size
    python bench/bench_eval.py --users 2000 --items 3000 --threads 2

Measures, over identical random histories:
- `model`: `rank_examples` with a real `SeqRecModel` of the default size (random weights,
  saved and reloaded through the model folder, so the exact evaluate code path) when
  `pipeline.model.transformer` is importable,
  else a matmul of random embeddings of the same cost shape;
- `ranking_only`: the same loop on precomputed random scores (ranking + top-k cost alone);
- `bare_matmul`: just `hidden (B, D) @ item_emb (V, D).T` per batch: the floor any full-ranking
  evaluation pays. `ratio_model_vs_matmul` = model / bare_matmul.
Writes JSON (with a machine description) to `bench/results/eval.json`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, print_table, write_result  # noqa: E402
from pipeline.evaluation.ranking import Examples, HistoryBatch, rank_examples  # noqa: E402

N_RESERVED = 3
EVENT_TYPES = ["view", "cart", "purchase"]
ZIPF_A = 1.2  # item popularity skew of the fake histories


def fake_examples(n_users: int, n_items: int, max_len: int, seed: int) -> Examples:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_len + 1, n_users)
    items = np.minimum(rng.zipf(ZIPF_A, (n_users, max_len)), n_items) - 1 + N_RESERVED
    items[np.arange(max_len)[None, :] < (max_len - lengths)[:, None]] = 0  # left padding
    types = np.where(items > 0, rng.integers(1, len(EVENT_TYPES) + 1, items.shape), 0)
    return Examples(
        user_ids=np.array([f"u{i}" for i in range(n_users)], dtype=object),
        items=items.astype(np.int64),
        types=types.astype(np.int64),
        ts=np.zeros_like(items),
        lengths=lengths,
        target_item=rng.integers(N_RESERVED, n_items + N_RESERVED, n_users),
        target_type=rng.integers(2, 4, n_users),
        target_ts=np.zeros(n_users, dtype=np.int64),
    )


class MatmulRecommender:
    """Stand-in with the model's output cost: mean of history embeddings @ item_emb.T."""

    name = "matmul_model"

    def __init__(self, vocab_size: int, hidden_dim: int, seed: int):
        import torch

        gen = torch.Generator().manual_seed(seed)
        self.item_emb = torch.randn(vocab_size, hidden_dim, generator=gen)

    def score(self, batch: HistoryBatch) -> np.ndarray:
        import torch

        hidden = self.item_emb[torch.from_numpy(batch.items)].mean(dim=1)  # (B, D)
        return (hidden @ self.item_emb.T).numpy()  # (B, V)


class RandomScores:
    name = "ranking_only"

    def __init__(self, batch_size: int, vocab_size: int, seed: int):
        self.scores = np.random.default_rng(seed).standard_normal(
            (batch_size, vocab_size), dtype=np.float32
        )

    def score(self, batch: HistoryBatch) -> np.ndarray:
        return self.scores[: len(batch)].copy()


def real_model(vocab_size: int, max_len: int, folder: Path):
    """A default-size SeqRecModel saved as a model folder and wrapped like evaluate does."""
    import pandas as pd
    import torch

    from pipeline.evaluation.model_scorer import ModelRecommender
    from pipeline.model.config import ModelConfig
    from pipeline.model.folder import save_model_dir
    from pipeline.model.transformer import SeqRecModel
    from pipeline.params import ModelParams

    defaults = ModelParams()
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=vocab_size,
        max_len=max_len,
        event_types=EVENT_TYPES,
        hidden_dim=defaults.hidden_dim,
        n_layers=defaults.n_layers,
        n_heads=defaults.n_heads,
    )
    vocab = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(vocab_size - N_RESERVED)],
            "index": np.arange(N_RESERVED, vocab_size, dtype="int32"),
        }
    )
    vocab.to_parquet(folder / "vocab.parquet", index=False)
    save_model_dir(SeqRecModel(config), folder / "model", folder / "vocab.parquet", {})
    return ModelRecommender("model", folder / "model", vocab, EVENT_TYPES), config.hidden_dim


def bare_matmul_s(n_users: int, vocab_size: int, hidden_dim: int, batch_size: int) -> float:
    import torch

    item_emb = torch.randn(vocab_size, hidden_dim)
    hidden = torch.randn(batch_size, hidden_dim)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n_users, batch_size):
            _ = hidden[: min(batch_size, n_users - start)] @ item_emb.T  # (B, V)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=22_000)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--target-s", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/eval.json"))
    args = parser.parse_args(argv)

    import importlib.util

    import torch

    torch.set_num_threads(args.threads)
    info = machine()
    vocab_size = args.items + N_RESERVED
    examples = fake_examples(args.users, args.items, args.max_len, seed=0)
    common = {"batch_size": args.batch_size, "exclude_history": False, "coverage_k": 10}
    with tempfile.TemporaryDirectory() as tmp:
        if importlib.util.find_spec("pipeline.model.transformer") is not None:
            model, hidden_dim = real_model(vocab_size, args.max_len, Path(tmp))
        else:
            hidden_dim = 64
            model = MatmulRecommender(vocab_size, hidden_dim, seed=0)
        rank_examples(
            model,
            examples.__class__(**{k: v[: args.batch_size] for k, v in vars(examples).items()}),
            vocab_size,
            **common,
        )  # warm-up (allocator, threads)
        cpu_started = time.process_time()
        model_s = rank_examples(model, examples, vocab_size, **common).seconds
        model_cpu_s = time.process_time() - cpu_started
    ranking_s = rank_examples(
        RandomScores(args.batch_size, vocab_size, 0), examples, vocab_size, **common
    ).seconds
    matmul_s = bare_matmul_s(args.users, vocab_size, hidden_dim, args.batch_size)
    result = {
        "users": args.users,
        "items": args.items,
        "max_len": args.max_len,
        "hidden_dim": hidden_dim,
        "batch_size": args.batch_size,
        "recommender": model.name,
        "model_s": round(model_s, 3),
        "ranking_only_s": round(ranking_s, 3),
        "bare_matmul_s": round(matmul_s, 3),
        "ratio_model_vs_matmul": round(model_s / max(matmul_s, 1e-9), 2),
        # CPU seconds over all threads: on a shared machine, model_cpu_s / threads is the
        # wall time the run would take alone (wall clocks include other jobs' time slices).
        "model_cpu_s": round(model_cpu_s, 3),
        "users_per_s": round(args.users / model_s),
        "target_s": args.target_s,
        "meets_target": model_s <= args.target_s,
        "machine": info,
    }
    print_table(
        [{"what": "model (evaluate's path)", "seconds": result["model_s"]},
         {"what": "ranking only (random scores)", "seconds": result["ranking_only_s"]},
         {"what": "baseline: bare matmul", "seconds": result["bare_matmul_s"]}],
        ["what", "seconds"], title=f"{args.users} users x {args.items} items, full ranking")
    print(f"model / bare matmul: {result['ratio_model_vs_matmul']}x; target <= {args.target_s} s: "
          f"{'met' if result['meets_target'] else 'missed'}")
    write_result("eval", result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput: the Lightning path vs a bare PyTorch loop over the same model and batches.

Both loops run the same `SeqRecModule.batch_losses` on the same pre-collated batches, in the
same order, with AdamW, the warmup+cosine schedule and gradient clipping; the first
`--warmup` steps of each are not timed. Reports sequences/s, real (non-padding) tokens/s and
the Lightning overhead in percent (target <= 10%). On a GPU it also runs bf16 autocast and
reports tokens/s and MFU (model FLOPs utilisation, FLOPs estimated like nanoGPT's
`estimate_mfu`; H200 dense bf16 peak 989 TFLOP/s, `--peak-tflops`).

    # the lead's CPU run (2 cores, Toys-sized synthetic data), a few minutes:
    nice -n 10 python bench/bench_training.py --users 20000 --items 12000 --steps 60 \\
        --threads 2 --out bench/results/training.json
    # on real sequences (after build_sequences):
    python bench/bench_training.py --sequences data/sequences --steps 60
    # tiny check:
    python bench/bench_training.py --users 500 --items 300 --steps 6 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, write_result  # noqa: E402
from pipeline.model.batches import SequenceData, TrainCollate, load_sequences  # noqa: E402
from pipeline.model.fitting import build_config  # noqa: E402
from pipeline.model.training import SeqRecModule, warmup_cosine  # noqa: E402
from pipeline.params import parse_params  # noqa: E402

H200_BF16_DENSE_TFLOPS = 989.0
ZIPF_EXPONENT = 1.1  # item popularity skew of the synthetic histories
GRAD_CLIP = 1.0


def synthetic_sequences(users: int, items: int, max_len: int, seed: int) -> SequenceData:
    """Amazon-like histories: lengths ~ 5 + geometric, Zipf item popularity, purchases only."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(5 + rng.geometric(0.25, users), max_len + 1)
    width = max_len + 1
    popularity = 1.0 / np.arange(1, items + 1) ** ZIPF_EXPONENT
    flat = 3 + rng.choice(items, size=int(lengths.sum()), p=popularity / popularity.sum())
    arrays = {k: np.zeros((users, width), dtype=np.int64) for k in ("items", "types", "ts")}
    rows = np.repeat(np.arange(users), lengths)
    cols = width - np.repeat(lengths, lengths) + (np.arange(len(flat)) - np.repeat(
        np.cumsum(lengths) - lengths, lengths))
    arrays["items"][rows, cols] = flat
    arrays["types"][rows, cols] = 3
    arrays["ts"][rows, cols] = 1_700_000_000 + cols * 3600
    val = {"items": arrays["items"][:, 1:], "types": arrays["types"][:, 1:],
           "ts": arrays["ts"][:, 1:], "target_item": arrays["items"][:, -1],
           "target_type": arrays["types"][:, -1]}
    return SequenceData(Path(), ["view", "cart", "purchase"], ["purchase"], max_len,
                        items + 3, arrays, val)


def make_batches(data: SequenceData, batch_size: int, n: int, seed: int) -> list[dict]:
    collate = TrainCollate(data.train, data.target_type_ids, data.type_id("purchase"))
    order = np.random.default_rng(seed).permutation(len(data.train["items"]))
    starts = [(i * batch_size) % max(1, len(order) - batch_size) for i in range(n)]
    return [collate(order[s : s + batch_size].tolist()) for s in starts]


def new_module(args, data: SequenceData) -> SeqRecModule:
    torch.manual_seed(args.seed)
    params = parse_params({"model": {"hidden_dim": args.hidden, "n_layers": args.layers,
                                     "n_heads": args.heads, "dropout": args.dropout}})
    return SeqRecModule(config=asdict(build_config(params, data)), lr=1e-3, weight_decay=0.0,
                        warmup_steps=args.warmup)


def batch_stats(batches: list[dict]) -> tuple[int, int]:
    return (sum(len(b["items"]) for b in batches),
            sum(int((b["items"] != 0).sum()) for b in batches))


def bare_loop(args, data, batches, device: str, bf16: bool) -> float:
    """Seconds for the timed steps of a plain PyTorch loop."""
    module = new_module(args, data).to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, args.warmup, len(batches)))
    start = 0.0
    for step, batch in enumerate(batches):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = module.batch_losses(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
    _sync(device)
    return time.perf_counter() - start


def lightning_loop(args, data, batches, device: str, bf16: bool) -> float:
    import pytorch_lightning as pl

    class Timer(pl.Callback):
        start = end = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == args.warmup:
                _sync(device)
                self.start = time.perf_counter()

        def on_train_end(self, trainer, pl_module):
            _sync(device)
            self.end = time.perf_counter()

    timer = Timer()
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=len(batches),
        precision="bf16-mixed" if bf16 else "32-true", gradient_clip_val=GRAD_CLIP,
        limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(new_module(args, data), loader)
    return timer.end - timer.start


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def gpu_info() -> dict:
    return {"gpu": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=Path, help="a sequences folder; default: synthetic")
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--items", type=int, default=12000)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60, help="steps per loop, warmup included")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench/results/training.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = (load_sequences(args.sequences) if args.sequences else
            synthetic_sequences(args.users, args.items, args.max_len, args.seed))
    batches = make_batches(data, args.batch_size, args.steps, args.seed)
    sequences, tokens = batch_stats(batches[args.warmup :])
    result = {"machine": {**machine(), **gpu_info()},
              "args": {k: str(v) for k, v in vars(args).items()},
              "timed_steps": args.steps - args.warmup, "sequences": sequences, "tokens": tokens}
    # CPU always fp32 (bf16 is far slower there, DESIGN.md section 4); on GPU both in bf16.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = device == "cuda"
    for name, loop in (("bare_pytorch", bare_loop), ("lightning", lightning_loop)):
        seconds = loop(args, data, batches, device, bf16)
        result[name] = {"seconds": round(seconds, 3), "sequences_per_s": round(
            sequences / seconds, 1), "tokens_per_s": round(tokens / seconds, 1),
            "precision": "bf16-mixed" if bf16 else "32-true"}
    bare, lit = result["bare_pytorch"]["seconds"], result["lightning"]["seconds"]
    result["lightning_overhead_pct"] = round(100.0 * (lit - bare) / bare, 1)
    if device == "cuda":
        model = new_module(args, data).model
        flops = sum(model.estimate_train_flops(b["items"].numel(), b["items"].shape[1],
                                               int(b["item_mask"].sum()))
                    for b in batches[args.warmup :])
        result["gpu_bf16"] = {"tokens_per_s": result["bare_pytorch"]["tokens_per_s"],
                              "achieved_tflops": round(flops / bare / 1e12, 2),
                              "mfu": round(flops / bare / (args.peak_tflops * 1e12), 4)}
    write_result("training", result, args.out)
    print(json.dumps({k: result[k] for k in result if k not in ("args",)}, indent=2))


if __name__ == "__main__":
    main()

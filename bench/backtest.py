"""`python -m bench backtest`: how often to retrain, measured on a shop that changes.

Replays weekly snapshots of a drifting synthetic shop (`bench/backtest_shop.py`: new items
every week, old ones retired, tastes moving) under four policies, each week training on the
data up to the end of the week (the same temporal split as production: validation on the
week's last days) and scoring NDCG@10 on the next week's targets:

- `never`: train once on the first snapshot, keep that model;
- `full_weekly`: rebuild every week (pretrain from random weights, fine-tune);
- `warm_weekly`: warm start from last week's model (`pipeline.model.warm`), re-fine-tune on
  the last `--window-days` (the first week rebuilds: there is nothing to start from);
- `warm_rebuild_on_drift`: what the retrain DAG does (`pipeline.orchestration.freshness`):
  warm, unless the drift report against last week's model trips or
  `retrain.rebuild_every_n_runs` warm runs happened.

The training code is the pipeline's own (`run_stage`, `warm_start`, `drift_report`,
`evaluate`) on one CPU thread. `train_seconds` is the wall time of the pretrain and
finetune stages (data loading and MLflow logging included). Writes
`bench/results/backtest.json` and the plot `docs/img/backtest.png` (docs/retraining.md).

    nice -n 10 python -m bench backtest            # ~10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.backtest_shop import drifting_shop
from bench.common import REPO_ROOT, print_table, write_result

POLICIES = ("never", "full_weekly", "warm_weekly", "warm_rebuild_on_drift")
PLOT = REPO_ROOT / "docs" / "img" / "backtest.png"
FEATURES = ["category", "brand", "price"]


def backtest_params(pretrain_epochs: int, window_days: float, warm_pretrain_epochs: int):
    """A small model on one thread; validation on each week's last two days."""
    from pipeline.params import parse_params

    return parse_params({
        "sequences": {"split": "temporal", "val_days": 2.0, "test_days": 7.0, "max_len": 30,
                      "max_examples_per_user": 3},
        "model": {"hidden_dim": 32, "n_layers": 1, "n_heads": 2, "dropout": 0.2,
                  "time_gap_buckets": 16},
        "pretrain": {"epochs": pretrain_epochs, "batch_size": 64, "lr": 0.002,
                     "warmup_steps": 20, "balance_types": True},
        "finetune": {"epochs": 1, "batch_size": 64, "lr": 0.002, "warmup_steps": 10},
        "trainer": {"cpu_threads": 1, "accelerator": "cpu", "devices": 1},
        "retrain": {"window_days": window_days, "warm_pretrain_epochs": warm_pretrain_epochs},
    })


def build_week(shop, week: int, params, previous_vocab, folder: Path):
    """Sequences of weeks 0..week+1 (test = week+1); the profile of what training saw."""
    import pyarrow as pa

    from pipeline.drift.profile import with_categories
    from pipeline.sequences.build import build_sequences, write_outputs
    from pipeline.sequences.features import build_item_features

    catalog = pa.Table.from_pandas(shop.catalog, preserve_index=False)
    events = shop.events[shop.events["timestamp"] < shop.week_ends[week + 1]]
    seq, types = params.sequences, params.data.event_types
    build = build_sequences(pa.Table.from_pandas(events, preserve_index=False), seq, types,
                            previous_vocab)
    seen = events[events["timestamp"] < shop.week_ends[week]]
    profile = build_sequences(pa.Table.from_pandas(seen, preserve_index=False), seq, types,
                              previous_vocab, profile_window_days=params.drift.window_days).profile
    build = replace(build, profile=with_categories(profile, catalog), features=build_item_features(
        catalog, build.vocab, FEATURES, ["price"], seq.numeric_buckets, "catalog"))
    write_outputs(build, folder, None)
    return build.vocab


def train(params, params_path: Path, folder: Path, out: Path, warm_from: Path | None) -> float:
    """Pretrain (or carry `warm_from` over) and fine-tune; the two stages' wall seconds."""
    from pipeline.model.fitting import StageSpec, run_stage

    window = params.retrain.window_days if warm_from is not None else None
    warm_epochs = params.retrain.warm_pretrain_epochs
    pre = run_stage(params, StageSpec("pretrain", False, warm_from=warm_from, window_days=window,
                                      epochs=warm_epochs if warm_from is not None else None),
                    folder, out / "pretrained", str(params_path))
    fine = run_stage(params, StageSpec("finetune", True, init_dir=out / "pretrained",
                                       checkpoints=out / "checkpoints", window_days=window),
                     folder, out / "finetuned", str(params_path))
    return round(pre["wall_seconds"] + fine["wall_seconds"], 2)


def ndcg_at_10(model_dir: Path, folder: Path, params, work: Path) -> float:
    from pipeline.evaluation.evaluate import evaluate, load_sequence_data

    document, _ = evaluate(str(model_dir), load_sequence_data(folder), params,
                           with_baselines=False, work_dir=work)
    return round(document["model"]["ndcg@10"], 5)


def step(policy: str, week: int, state: dict, params, params_path, folder, out) -> dict:
    """One policy's week: which start (if any), train, and the model to score."""
    from pipeline.drift.report import drift_report
    from pipeline.orchestration.freshness import WARM, choose

    previous = state.get("model")
    if policy == "never" and previous is not None:
        return {"train_seconds": 0.0, "mode": "kept", "model": previous}
    mode, reason = "rebuild", "first week" if previous is None else "policy"
    if previous is not None and policy == "warm_weekly":
        mode, reason = WARM, "policy"
    if previous is not None and policy == "warm_rebuild_on_drift":
        drift = drift_report(folder, previous, params.drift)
        decision = choose(params.retrain, str(week - 1), state.get("warm_runs", 0), drift)
        mode, reason = decision["mode"], decision["reason"]
        state["warm_runs"] = decision["warm_runs"]
    seconds = train(params, params_path, folder, out, previous if mode == WARM else None)
    state["model"] = out / "finetuned"
    return {"train_seconds": seconds, "mode": mode, "reason": reason, "model": out / "finetuned"}


def summarise(results: dict[str, list[dict]]) -> dict:
    def mean(policy: str) -> float:
        return round(sum(r["ndcg@10"] for r in results[policy]) / len(results[policy]), 5)

    def total(policy: str) -> float:
        return round(sum(r["train_seconds"] for r in results[policy]), 1)

    summary = {p: {"mean_ndcg@10": mean(p), "total_train_seconds": total(p)} for p in results}
    full, warm = summary["full_weekly"], summary["warm_weekly"]
    summary["warm_vs_full"] = {
        "ndcg_gap": round(warm["mean_ndcg@10"] - full["mean_ndcg@10"], 5),
        "time_ratio": round(warm["total_train_seconds"] / full["total_train_seconds"], 3),
        "target": "gap >= -0.01 at time_ratio <= 0.333",
    }
    never = results["never"]
    summary["never_decay"] = round(never[-1]["ndcg@10"] - never[0]["ndcg@10"], 5)
    return summary


def plot(weeks: list[int], results: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for policy, rows in results.items():
        left.plot(weeks, [r["ndcg@10"] for r in rows], marker="o", label=policy)
        seconds = [r["train_seconds"] for r in rows]
        right.plot(weeks, [sum(seconds[: i + 1]) for i in range(len(seconds))], marker="o",
                   label=policy)
    left.set(title="NDCG@10 on the next week's targets", xlabel="week", ylabel="NDCG@10")
    right.set(title="cumulative training wall seconds", xlabel="week", ylabel="seconds")
    left.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench backtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weeks", type=int, default=8, help="weekly snapshots (at least 8)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--new-share", type=float, default=0.1,
                        help="share of live items replaced by a new one each week")
    parser.add_argument("--swap-share", type=float, default=0.2,
                        help="share of items per category whose popularity swaps each week")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--window-days", type=float, default=7.0)
    parser.add_argument("--warm-pretrain-epochs", type=int, default=0,
                        help="pretraining epochs on the window after a warm start")
    parser.add_argument("--out", type=Path,
                        help="result file (default bench/results/backtest.json)")
    parser.add_argument("--plot", type=Path, default=PLOT)
    args = parser.parse_args(argv)
    import logging

    import yaml

    from pipeline.cli import quiet_libraries

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # before Lightning loads
    quiet_libraries()
    started = time.perf_counter()
    shop = drifting_shop(args.users, args.items, args.weeks, args.seed, args.new_share,
                         args.swap_share)
    params = backtest_params(args.pretrain_epochs, args.window_days, args.warm_pretrain_epochs)
    weeks = list(range(1, args.weeks + 1))
    results: dict[str, list[dict]] = {p: [] for p in POLICIES}
    states: dict[str, dict] = {p: {} for p in POLICIES}
    with tempfile.TemporaryDirectory(prefix="seqrec-backtest-") as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        params_path = root / "params.yaml"
        params_path.write_text(yaml.safe_dump(params.model_dump(by_alias=True)))
        import mlflow  # the tracking store's one-off setup is nobody's training time

        mlflow.set_experiment(params.registry.experiment)
        vocab = None
        for week in weeks:
            folder = root / f"week{week}" / "sequences"
            vocab = build_week(shop, week, params, vocab, folder)
            for policy in POLICIES:
                out = root / f"week{week}" / policy
                row = step(policy, week, states[policy], params, params_path, folder, out)
                ndcg = ndcg_at_10(row.pop("model"), folder, params, out / "eval")
                results[policy].append({"week": week, "ndcg@10": ndcg, **row})
                print(f"week {week} {policy:<22} NDCG@10 {ndcg:.4f}  train "
                      f"{row['train_seconds']:6.1f} s  {row['mode']}", flush=True)
    summary = summarise(results)
    path = plot(weeks, results, args.plot)
    print_table([{"policy": p, **summary[p]} for p in POLICIES],
                ["policy", "mean_ndcg@10", "total_train_seconds"], "backtest")
    print(summary["warm_vs_full"], "never decay:", summary["never_decay"])
    write_result("backtest", {
        "weeks": weeks, "policies": results, "summary": summary, "plot": str(
            path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "plot")},
        "wall_seconds": round(time.perf_counter() - started, 1)}, args.out)
    return 0

"""DVC plot files (CSV) and PNG figures of the evaluation.

- `metrics_at_k.csv`: long format (model, k, ndcg, hr, mrr), one row per recommender and k.
- `ndcg_at_k.csv`, `hr_at_k.csv`: wide format (k, one column per recommender) so that
  `dvc plots show` draws one line per recommender (see the top-level `plots:` of dvc.yaml).
- `png/metrics_at_k.png`, `png/slices.png`, `png/training_curves.png` (matplotlib, Agg).
"""

from __future__ import annotations

import csv
from pathlib import Path

RANK_METRICS = ("ndcg", "hr", "mrr")
FIGURE_DPI = 110
WIDE_METRICS = ("ndcg", "hr")  # the ones dvc.yaml plots per recommender


def recommenders_in(document: dict) -> dict[str, dict]:
    """{name: metrics} for the model and every baseline, model first."""
    return {"model": document["model"], **document.get("baselines", {})}


def ks_in(metrics: dict) -> list[int]:
    return sorted(int(key.split("@")[1]) for key in metrics if key.startswith("ndcg@"))


def write_csvs(document: dict, plots_dir: Path) -> list[Path]:
    recommenders = recommenders_in(document)
    ks = ks_in(document["model"])
    long_path = plots_dir / "metrics_at_k.csv"
    with long_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "k", *RANK_METRICS])
        for name, metrics in recommenders.items():
            for k in ks:
                writer.writerow([name, k, *(metrics[f"{m}@{k}"] for m in RANK_METRICS)])
    paths = [long_path]
    for metric in WIDE_METRICS:
        path = plots_dir / f"{metric}_at_k.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["k", *recommenders])
            for k in ks:
                writer.writerow([k, *(m[f"{metric}@{k}"] for m in recommenders.values())])
        paths.append(path)
    return paths


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, same output on CI and laptops
    import matplotlib.pyplot as plt

    return plt


def plot_metrics_at_k(document: dict, path: Path) -> Path:
    plt = _pyplot()
    recommenders = recommenders_in(document)
    ks = ks_in(document["model"])
    fig, axes = plt.subplots(
        1, len(RANK_METRICS), figsize=(12, 4.0), dpi=FIGURE_DPI, layout="constrained"
    )
    for axis, metric in zip(axes, RANK_METRICS, strict=True):
        for name, metrics in recommenders.items():
            style = {"linewidth": 2.6} if name == "model" else {"linewidth": 1.2, "alpha": 0.85}
            axis.plot(ks, [metrics[f"{metric}@{k}"] for k in ks], marker="o", label=name, **style)
        axis.set_title(f"{metric.upper()}@k")
        axis.set_xlabel("k")
        axis.set_xticks(ks)
        axis.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=min(len(labels), 6), fontsize=8)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_slices(document: dict, k: int, path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    slices = document.get("slices", {})
    names = list(slices)
    recommenders = [r for r in recommenders_in(document) if any(r in s for s in slices.values())]
    width = 0.8 / max(len(recommenders), 1)
    fig, axis = plt.subplots(
        figsize=(max(6.0, 1.1 * len(names) + 2), 4.2), dpi=FIGURE_DPI, layout="constrained"
    )
    positions = np.arange(len(names))
    for offset, rec in enumerate(recommenders):
        values = [slices[s].get(rec, {}).get(f"ndcg@{k}", 0.0) for s in names]
        axis.bar(positions + offset * width, values, width, label=rec)
    axis.set_xticks(positions + width * (len(recommenders) - 1) / 2)
    axis.set_xticklabels([f"{s}\n(n={slices[s]['examples']})" for s in names], fontsize=8)
    axis.set_ylabel(f"NDCG@{k}")
    fig.legend(loc="outside upper center", ncols=min(len(recommenders), 6), fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_training_curves(logs: list[Path], path: Path) -> Path | None:
    """Validation NDCG and train loss per epoch for each existing log; None if there is none."""
    import pandas as pd

    frames = {p.stem.removesuffix("_log"): pd.read_csv(p) for p in logs if p.is_file()}
    frames = {name: f for name, f in frames.items() if "epoch" in f.columns and len(f)}
    if not frames:
        return None
    plt = _pyplot()
    columns = ("val_ndcg@10", "train_loss")
    fig, axes = plt.subplots(1, len(columns), figsize=(10, 3.6), dpi=FIGURE_DPI)
    for axis, column in zip(axes, columns, strict=True):
        for name, frame in frames.items():
            if column in frame.columns:
                rows = frame.dropna(subset=[column])
                axis.plot(rows["epoch"], rows[column], marker="o", label=name)
        axis.set_title(column)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

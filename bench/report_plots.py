"""PNG plots of docs/benchmarks.md (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

MIB_PER_GIB = 1024
FIGSIZE = (7.5, 4.0)
DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quality_vs_published(quality: dict[str, dict], path: Path) -> Path | None:
    """Grouped bars of NDCG@10 per dataset with published numbers (their scale differs from
    the synthetic and Taobao rows, which the tables show): ours, scratch, baseline, published."""
    quality = {name: result for name, result in quality.items() if result.get("published")}
    if not quality:
        return None
    plt = _pyplot()
    datasets = sorted(quality)
    series = {"ours (pretrained + finetuned)": [], "ours from scratch": [],
              "best simple baseline": [], "best published": []}
    for name in datasets:
        result = quality[name]
        baselines = result["eval"].get("baselines", {})
        simple = [v["ndcg@10"] for k, v in baselines.items() if k != "transformer_scratch"]
        published = [v["ndcg@10"] for v in result.get("published", {}).values()]
        series["ours (pretrained + finetuned)"].append(result["eval"]["model"]["ndcg@10"])
        series["ours from scratch"].append(baselines.get("transformer_scratch", {}).get("ndcg@10"))
        series["best simple baseline"].append(max(simple) if simple else None)
        series["best published"].append(max(published) if published else None)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [d + (i - (len(series) - 1) / 2) * width for d in range(len(datasets))]
        ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=label)
    for d, name in enumerate(datasets):
        bar = quality[name].get("bar_ndcg@10")
        if bar is not None:
            ax.hlines(bar, d - 0.45, d + 0.45, colors="black", linestyles="dashed")
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel("NDCG@10 (test, full ranking)")
    ax.set_title("Quality vs baselines and published numbers (dashed: the bar)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def validation_curves(quality: dict[str, dict], path: Path) -> Path | None:
    """Validation NDCG@10 per epoch, pretrained vs from scratch, one panel per dataset."""
    curves = {k: v for k, v in quality.items() if v.get("finetune_log")}
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), squeeze=False)
    for ax, (name, result) in zip(axes[0], sorted(curves.items()), strict=True):
        for key, label in (("finetune_log", "pretrained"), ("scratch_log", "from scratch")):
            rows = [r for r in result.get(key, []) if r.get("val_ndcg@10") is not None]
            ax.plot([r["epoch"] for r in rows], [r["val_ndcg@10"] for r in rows], marker=".",
                    label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
    axes[0][0].set_ylabel("validation NDCG@10")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def scaling(rows: list[dict], path: Path) -> Path | None:
    """Wall time and peak RSS vs events for each data stage (log-log)."""
    rows = [r for r in rows if r.get("seconds") is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=FIGSIZE)
    for stage in sorted({r["stage"] for r in rows}):
        mine = sorted((r for r in rows if r["stage"] == stage), key=lambda r: r["events"])
        events = [r["events"] for r in mine]
        left.plot(events, [r["seconds"] for r in mine], marker="o", label=stage)
        right.plot(events, [r["peak_rss_mib"] / MIB_PER_GIB for r in mine], marker="o",
                   label=stage)
    for ax, label in ((left, "wall time, s"), (right, "peak RSS, GiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(label)
    left.legend(fontsize=8)
    fig.suptitle("Data stages: time and memory vs events")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path

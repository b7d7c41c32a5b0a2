"""What a training stage reports: its one summary line, and the folder of a stage that
trains no epoch (a warm start only carried over, or `retrain.init: scratch`).
"""

from __future__ import annotations

from pathlib import Path


def export_untrained(model, spec, data, out_dir: Path, precision: str, started: float) -> dict:
    """No epochs (a warm start only carried over, or `retrain.init: scratch`): write the
    starting weights as the model folder, with no Trainer and no MLflow run of its own (the
    fine-tuning run that follows records `init_from`)."""
    import time

    from pytorch_lightning.utilities import rank_zero_only

    from pipeline.model.fitting import init_name
    from pipeline.model.folder import save_model_dir

    summary = {"stage": spec.name, "init": init_name(spec), "epochs": 0, "global_step": 0,
               "precision": precision, "world_size": 1, "device": "cpu", "train_steps": 0,
               "train_seconds": 0.0, "sequences_per_s": 0.0, "tokens_per_s": 0.0,
               "wall_seconds": round(time.perf_counter() - started, 2), **spec.extra}
    if rank_zero_only.rank == 0:
        save_model_dir(model, out_dir, data.vocab_path, summary)
    return summary


def print_summary(stage: str, summary: dict, out_dir: Path) -> None:
    """Print the stage's summary line once: under DDP every rank returns from `run_stage`
    and shares the terminal, so only global rank zero prints."""
    from pytorch_lightning.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(summary_line(stage, summary, out_dir))


def summary_line(stage: str, summary: dict, out_dir: Path) -> str:
    """The stage's one-line result: epochs, time, throughput, where it ran, best validation."""
    best = summary.get("best_val_ndcg@10")
    best_text = "" if best is None else f", best val NDCG@10 {best:.4f}"
    return (f"{stage}: {summary['epochs']} epochs, {summary['global_step']} steps in "
            f"{summary['train_seconds']:.1f} s at {summary['sequences_per_s']:.0f} sequences/s "
            f"({summary['device']}, {summary['precision']}, {summary['world_size']} process(es))"
            f"{best_text} -> {out_dir}")

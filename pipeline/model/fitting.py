"""Run one training stage: Trainer from params, resume from checkpoints, export the model folder.

Shared by `pretrain` (every next event, fixed epochs) and `finetune` (target events + the
purchase head, early stopping and best-on-validation checkpoints that a killed run resumes).

Resume: `checkpoints/last.ckpt` is rewritten every `finetune.checkpoint_every_n_steps`
optimizer steps and at the end. A re-run resumes from it only if the fingerprint stored in
it (params, data and initial-weights hashes) matches this run; otherwise the folder is
cleared and training starts afresh. Checkpoints are read with `torch.load(weights_only=True)`,
ours and Lightning's (`trainer.fit(..., weights_only=True)`).

Imported only by the stage commands' `run`, never by `--help`: it pulls in Lightning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch

from pipeline.errors import ModelError
from pipeline.model.batches import FEATURE_VOCAB_FILE, ITEM_FEATURES_FILE
from pipeline.model.config import ModelConfig
from pipeline.model.folder import save_model_dir
from pipeline.model.transformer import SeqRecModel
from pipeline.params import Params, ParamsError

log = logging.getLogger(__name__)
LAST_CKPT, BEST_NAME = "last.ckpt", "best"
FINGERPRINT_KEY = "seqrec_fingerprint"
HASH_CHUNK_BYTES = 1 << 20


@dataclass
class StageSpec:
    """What differs between the pretrain and finetune stages."""

    name: str  # MLflow stage name and `training.json` "stage"
    finetune: bool  # target events + purchase head + early stopping + checkpoints
    init_dir: Path | None = None  # pretrained model folder to start from
    checkpoints: Path | None = None
    log_path: Path | None = None
    extra: dict = field(default_factory=dict)  # recorded in training.json
    warm_from: Path | None = None  # model folder to warm-start from (`pipeline.model.warm`)
    epochs: int | None = None  # overrides the section's epochs; 0 = export the start as is
    init_name: str | None = None  # training.json "init" (default: init_dir or "scratch")
    window_days: float | None = None  # fine-tune only on targets of the last this many days


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_precision(requested: str) -> str:
    """`auto` -> bf16-mixed on a bf16-capable GPU, else 32-true. bf16 on CPU is refused:
    measured 15-500x slower than fp32 there (DESIGN.md section 4)."""
    has_bf16_gpu = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if requested == "auto":
        return "bf16-mixed" if has_bf16_gpu else "32-true"
    if "bf16" in requested and not torch.cuda.is_available():
        raise ParamsError(f"trainer.precision: {requested} on CPU is far slower than fp32")
    return requested


def build_config(params: Params, data) -> ModelConfig:
    m = params.model
    features = m.item_features and data.item_features is not None
    return ModelConfig(
        vocab_size=data.vocab_size, max_len=data.max_len, event_types=data.event_types,
        hidden_dim=m.hidden_dim, n_layers=m.n_layers, n_heads=m.n_heads,
        ffn_dim=m.ffn_dim or m.hidden_dim, dropout=m.dropout, time_gap_buckets=m.time_gap_buckets,
        repeat_head=m.repeat_head, positions=m.positions, transition_top_k=m.transition_top_k,
        explore_novel=m.explore_novel,
        n_features=data.n_features if features else 0,
        features_per_item=data.item_features.shape[1] if features else 0,
        n_feature_columns=int(data.feature_columns.max()) if features else 0,
        target_event_types=data.target_event_types, positive_event_type=data.positive_event_type,
    )


def load_initial_weights(model: SeqRecModel, init_dir: Path, data) -> str:
    """Copy a pretrained folder's weights into `model`; mismatches -> one-line ModelError."""
    import pandas as pd

    from pipeline.model.folder import (
        CONFIG_FILE,
        VOCAB_FILE,
        WEIGHTS_FILE,
        load_weights,
        read_config,
    )

    if not init_dir.is_dir():
        raise ModelError(f"{init_dir}: pretrained model folder not found")
    pretrained = read_config(init_dir)
    ours, theirs = model.config.architecture(), pretrained.architecture()
    diff = [f"{k}={theirs[k]} (params/data: {ours[k]})" for k in ours if ours[k] != theirs[k]]
    if diff:
        raise ModelError(f"{init_dir / CONFIG_FILE}: pretrained model does not match: "
                         + ", ".join(diff))
    vocab_path = init_dir / VOCAB_FILE
    if not vocab_path.is_file():
        raise ModelError(f"{vocab_path}: vocabulary not found")
    if not pd.read_parquet(vocab_path).equals(pd.read_parquet(data.vocab_path)):
        raise ModelError(f"{vocab_path}: vocabulary differs from {data.vocab_path}; "
                         "re-run pretrain on these sequences")
    load_weights(model, init_dir / WEIGHTS_FILE)
    return file_sha256(init_dir / WEIGHTS_FILE)


def fingerprint(params: Params, spec: StageSpec, data, init_hash: str | None) -> str:
    """Hash of everything that makes a checkpoint resumable by this run."""
    names = ["train.parquet", "val.parquet", "vocab.parquet", ITEM_FEATURES_FILE,
             FEATURE_VOCAB_FILE]
    files = {n: file_sha256(data.root / n) for n in names if (data.root / n).is_file()}
    section = params.finetune if spec.finetune else params.pretrain
    payload = {"stage": spec.name, "model": params.model.model_dump(),
               "stage_params": section.model_dump(), "trainer": params.trainer.model_dump(),
               "exclude_history": params.evaluate.exclude_history, "data": files,
               "init": init_hash, "window_days": spec.window_days}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def resumable_checkpoint(checkpoints: Path, expected: str) -> Path | None:
    """`last.ckpt` if it exists, loads safely and carries `expected`; else clear the folder."""
    last = checkpoints / LAST_CKPT
    if not last.is_file():
        return None
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        found = ckpt.get(FINGERPRINT_KEY)
    except Exception as exc:  # a kill during a write or a foreign file: start afresh
        log.warning("%s: cannot be read (%s); starting afresh", last, exc)
        found = None
    if found == expected:
        log.info("resuming from %s (epoch %s, global step %s)", last, ckpt.get("epoch"),
                 ckpt.get("global_step"))
        return last
    if found is not None:
        log.warning("%s: params, data or initial weights changed; starting afresh", last)
    shutil.rmtree(checkpoints, ignore_errors=True)  # DDP ranks may race here
    return None


def checkpoint_finished(path: Path) -> bool:
    """True when the checkpoint was written after early stopping ended the run."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return any(name.startswith("EarlyStopping") and state.get("stopped_epoch", 0) > 0
               for name, state in ckpt.get("callbacks", {}).items())


def init_name(spec: StageSpec) -> str:
    return spec.init_name or (str(spec.init_dir) if spec.init_dir else "scratch")


def flat_params(params: Params, spec: StageSpec) -> dict:
    section = "finetune" if spec.finetune else "pretrain"
    out = {"init": init_name(spec)}
    if spec.extra.get("init_from"):  # where the weights came from, e.g. models:/seqrec/3
        out["init_from"] = spec.extra["init_from"]
    for name in ("model", section, "trainer"):
        out.update({f"{name}.{k}": v for k, v in getattr(params, name).model_dump().items()})
    return out


def run_stage(params: Params, spec: StageSpec, sequences_dir: Path, out_dir: Path,
              params_path: str) -> dict:
    """Train one stage end to end and write the model folder; returns training.json's dict."""
    import sys
    import time
    import warnings
    from dataclasses import asdict
    from datetime import timedelta

    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    from pipeline.model.batches import load_sequences, make_loaders, window_start
    from pipeline.model.callbacks import (
        BestWeights,
        EpochLine,
        EpochLog,
        FreezePolicy,
        MLflowStage,
        Throughput,
        cpu_state,
    )
    from pipeline.model.training import (
        VAL_METRIC,
        SeqRecModule,
        calibrate_gate,
        validation_score,
    )

    started = time.perf_counter()
    section = params.finetune if spec.finetune else params.pretrain
    pl.seed_everything(params.trainer.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision(params.trainer.float32_matmul_precision)
    if params.trainer.cpu_threads:
        torch.set_num_threads(params.trainer.cpu_threads)
    precision = resolve_precision(params.trainer.precision)
    data = load_sequences(sequences_dir)
    config = build_config(params, data)
    module = SeqRecModule(
        config=asdict(config), lr=section.lr, weight_decay=section.weight_decay,
        warmup_steps=section.warmup_steps, loss=params.model.loss,
        n_negatives=params.model.n_negatives,
        purchase_loss_weight=params.finetune.purchase_loss_weight if spec.finetune else 0.0,
        balance_types=params.pretrain.balance_types and not spec.finetune,
        exclude_history=params.evaluate.exclude_history,
        item_counts=data.item_counts() if params.model.loss == "sampled_softmax" else None,
        time_budget_s=section.max_time_minutes * 60 if section.max_time_minutes else None,
        horizon=1 if spec.finetune else params.pretrain.horizon,
        explore_steps=0 if spec.finetune else params.pretrain.explore_steps,
    )
    if config.n_features:
        module.model.set_item_features(torch.from_numpy(data.item_features),
                                       torch.from_numpy(data.feature_columns))
    init_hash = load_initial_weights(module.model, spec.init_dir, data) if spec.init_dir else None
    if spec.warm_from is not None:
        from pipeline.model.warm import warm_start

        spec.extra.update(warm_start(module.model, spec.warm_from, data))
        init_hash = file_sha256(spec.warm_from / "model.safetensors")
    if config.transition_top_k:  # after the initial weights: this stage's training data counts
        from pipeline.model.transitions import successor_table

        table = successor_table(data.train["items"], config.vocab_size, config.transition_top_k)
        module.model.set_transitions(*(torch.from_numpy(part) for part in table))
    if spec.epochs == 0:
        from pipeline.model.summary import export_untrained

        return export_untrained(module.model, spec, data, out_dir, precision, started)
    since_ts = window_start(data, spec.window_days) if spec.window_days else None
    if since_ts is not None:
        spec.extra.update(window_days=spec.window_days, window_start_unix=since_ts)
    train_loader, val_loader = make_loaders(data, section.batch_size, spec.finetune,
                                            params.trainer.num_workers, params.trainer.seed,
                                            since_ts)
    throughput = Throughput()
    tracker = MLflowStage(spec.name, params.registry.experiment, params_path,
                          flat_params(params, spec))
    callbacks: list = [throughput, tracker]
    callbacks += [EpochLog(spec.log_path)] if spec.log_path else []
    # A live bar on a terminal; in a log file (CI, Airflow, `make run > log`) one line per epoch.
    progress_bar = sys.stdout.isatty()
    callbacks += [] if progress_bar else [EpochLine(spec.name)]
    # Lightning 2.x builds torch's LeafSpec, deprecated in torch 2.13: not our call to fix.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    resume, best_cb, early = None, None, None
    best_weights = None if spec.finetune else BestWeights(VAL_METRIC)
    callbacks += [best_weights] if best_weights is not None else []
    if spec.finetune:
        expected = fingerprint(params, spec, data, init_hash)
        resume = resumable_checkpoint(spec.checkpoints, expected)
        spec.checkpoints.mkdir(parents=True, exist_ok=True)
        best_cb = ModelCheckpoint(dirpath=spec.checkpoints, filename=BEST_NAME,
                                  monitor=VAL_METRIC, mode="max", save_top_k=1,
                                  enable_version_counter=False)
        last_cb = ModelCheckpoint(dirpath=spec.checkpoints, save_top_k=0, save_last=True,
                                  every_n_train_steps=params.finetune.checkpoint_every_n_steps,
                                  enable_version_counter=False)
        early = EarlyStopping(monitor=VAL_METRIC, mode="max", patience=params.finetune.patience)
        callbacks += [FreezePolicy(params.finetune.freeze, params.finetune.unfreeze_top_k),
                      best_cb, last_cb, early, Fingerprint(expected)]
    t = params.trainer
    epochs = section.epochs if spec.epochs is None else spec.epochs
    trainer = pl.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=precision, gradient_clip_val=t.gradient_clip_val or None,
        # "warn": deterministic kernels wherever torch has them, a warning (not a crash
        # mid-run) for a CUDA op without one.
        deterministic="warn" if t.deterministic else False, max_epochs=epochs,
        max_time=timedelta(minutes=section.max_time_minutes) if section.max_time_minutes
        else None,
        check_val_every_n_epoch=section.val_every_n_epochs,
        limit_train_batches=t.limit_train_batches, limit_val_batches=t.limit_val_batches,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=spec.finetune,
        callbacks=callbacks, default_root_dir=spec.checkpoints or out_dir,
        enable_model_summary=False, enable_progress_bar=progress_bar,
    )
    finished = resume is not None and checkpoint_finished(resume)
    resumed_from_step = _ckpt_step(resume) if resume else None
    start = None  # a started model is a candidate too: fine-tuning never ends below it
    if finished:
        log.info("%s: training had already finished (early stopping); exporting", resume)
        tracker.setup(trainer, module, "fit")
    else:
        if spec.finetune and init_hash is not None and resume is None:
            start = (validation_score(module, val_loader, t.limit_val_batches),
                     cpu_state(module))
            spec.extra[f"start_{VAL_METRIC}"] = start[0]
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
        if spec.checkpoints is not None:  # the final state, so a re-run knows it is done
            trainer.save_checkpoint(spec.checkpoints / LAST_CKPT, weights_only=False)
    best_path = spec.checkpoints / f"{BEST_NAME}.ckpt" if spec.checkpoints else None
    if best_path is not None and best_path.is_file():
        state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    if best_weights is not None and best_weights.state is not None:
        module.load_state_dict(best_weights.state)
    best_score = best_cb.best_model_score if best_cb is not None else None
    if start is not None and (best_score is None or start[0] > best_score):
        module.load_state_dict(start[1])  # no epoch beat the start on validation: keep it
        best_score = start[0]
        spec.extra["kept_start"] = True
        if best_path is not None:  # a re-run that finds training finished exports the same
            trainer.save_checkpoint(best_path, weights_only=True)
    if spec.finetune and params.finetune.calibrate_gate:
        shift, best_score, unshifted = calibrate_gate(module, val_loader, t.limit_val_batches)
        spec.extra.update(gate_shift=shift, **{f"unshifted_{VAL_METRIC}": unshifted})
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    summary = {
        "stage": spec.name, "init": init_name(spec),
        "epochs": trainer.current_epoch, "global_step": trainer.global_step,
        "resumed_from": str(resume) if resume else None,
        "resumed_from_step": resumed_from_step,
        "best_checkpoint": str(best_path) if best_path and best_path.is_file() else None,
        f"best_{VAL_METRIC}": float(best_score) if best_score is not None else
        best_weights.best if best_weights is not None and best_weights.best is not None
        else metrics.get(VAL_METRIC),
        "stopped_early": bool(early is not None and early.stopped_epoch > 0) or finished,
        "last_metrics": metrics, "precision": precision, "world_size": trainer.world_size,
        "device": trainer.strategy.root_device.type,
        "wall_seconds": round(time.perf_counter() - started, 2), **throughput.summary(),
        **spec.extra,
    }
    if trainer.is_global_zero:
        save_model_dir(module.model, out_dir, data.vocab_path, summary)
        tracker.finish(out_dir, summary)
    return summary


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


class Fingerprint(pl.Callback):
    """Writes the run's fingerprint into every checkpoint, so a re-run knows it may resume."""

    def __init__(self, expected: str) -> None:
        self.expected = expected

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[FINGERPRINT_KEY] = self.expected

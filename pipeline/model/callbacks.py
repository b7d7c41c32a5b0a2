"""Lightning callbacks of the training stages: freezing, epoch CSV log and line, throughput,
MLflow.

Anything that writes or logs runs on rank zero only (`rank_zero_only`), so DDP on several
GPUs or nodes logs once.
"""

from __future__ import annotations

import csv
import logging
import time
from contextlib import ExitStack
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BaseFinetuning
from pytorch_lightning.utilities import rank_zero_only

from pipeline.model.training import VAL_K, real_tokens

log = logging.getLogger(__name__)
LOG_COLUMNS = ("epoch", "train_loss", f"val_ndcg@{VAL_K}", f"val_hr@{VAL_K}")


class FreezePolicy(BaseFinetuning):
    """`finetune.freeze`: none | embeddings | all_but_top_k (Lightning's BaseFinetuning).

    `embeddings` freezes the item, event-type, position and time-gap tables; because the
    output layer is tied to the item table, the item scores' weights stay fixed too.
    `all_but_top_k` also freezes every transformer block except the top `unfreeze_top_k`;
    the final norm and the purchase head always train.
    """

    def __init__(self, policy: str, unfreeze_top_k: int = 1) -> None:
        super().__init__()
        self.policy = policy
        self.unfreeze_top_k = unfreeze_top_k

    def frozen_modules(self, pl_module: pl.LightningModule) -> list:
        model = pl_module.model
        if self.policy == "none":
            return []
        embeddings = [model.item_emb, model.type_emb, model.pos_emb]
        embeddings += [model.gap_emb] if model.gap_emb is not None else []
        embeddings += [model.feature_emb] if model.feature_emb is not None else []
        if self.policy == "embeddings":
            return embeddings
        layers = list(model.encoder.layers)
        return embeddings + layers[: max(0, len(layers) - self.unfreeze_top_k)]

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(self.frozen_modules(pl_module), train_bn=True)

    def finetune_function(self, pl_module, current_epoch, optimizer) -> None:
        """The policy is fixed for the whole run: nothing is unfrozen later."""


class EpochLog(pl.Callback):
    """One CSV row per epoch at `path` (columns `LOG_COLUMNS`); DVC plots read it.

    On resume, rows of epochs at or after the resumed epoch are dropped, so the file has
    each epoch once.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._validated = False

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning restored the loops, so current_epoch is the resumed epoch.
        kept = []
        if trainer.ckpt_path and self.path.is_file():
            with self.path.open(newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["epoch"]) < trainer.current_epoch]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._validated = not trainer.sanity_checking

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch,
               "train_loss": _value(metrics.get("train_loss_epoch"))}
        for column in LOG_COLUMNS[2:]:
            row[column] = _value(metrics.get(column)) if self._validated else ""
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=LOG_COLUMNS).writerow(row)
        self._validated = False


def _value(tensor) -> float | str:
    return "" if tensor is None else round(float(tensor), 6)


class Throughput(pl.Callback):
    """Training throughput: sequences/s and real (non-padding) tokens/s, of all processes.

    Time runs from the start of each training epoch to the end of its last batch, so data
    loading counts and validation does not. Under DDP each process counts its own batches;
    the distributed sampler gives every rank the same number of rows, so the total is this
    rank's count times the world size.
    """

    def __init__(self) -> None:
        self.sequences = self.tokens = self.steps = 0
        self.seconds = 0.0
        self._mark = 0.0
        self.world_size = 1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        # A mid-epoch resume skips on_train_epoch_start for the resumed epoch.
        self._mark = time.perf_counter()
        self.world_size = trainer.world_size

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        self.seconds += now - self._mark
        self._mark = now
        self.sequences += len(batch["items"])
        self.tokens += real_tokens(batch)
        self.steps += 1

    def summary(self) -> dict:
        seconds = max(self.seconds, 1e-9)
        return {"train_steps": self.steps, "train_seconds": round(self.seconds, 3),
                "sequences_per_s": round(self.sequences * self.world_size / seconds, 1),
                "tokens_per_s": round(self.tokens * self.world_size / seconds, 1)}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        summary = self.summary()
        pl_module.log("sequences_per_s", summary["sequences_per_s"], rank_zero_only=True)
        pl_module.log("tokens_per_s", summary["tokens_per_s"], rank_zero_only=True)


def cpu_state(module) -> dict:
    """A detached CPU copy of `module`'s state dict (a candidate to restore later)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class BestWeights(pl.Callback):
    """Keeps, in memory, the weights of the best validation so far (pretraining exports them:
    a time budget may run past the best epoch, and fine-tuning should start from the best)."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best: float | None = None
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        if self.best is None or float(value) > self.best:
            self.best = float(value)
            self.state = cpu_state(pl_module)


class EpochLine(pl.Callback):
    """One line per epoch (loss, validation NDCG@10, seconds) for logs that are not a terminal,
    where Lightning's live progress bar would wrap into fragments."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        parts = [f"{name} {float(metrics[name]):.4f}"
                 for name in ("train_loss_epoch", f"val_ndcg@{VAL_K}") if name in metrics]
        print(f"{self.stage} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: "
              f"{', '.join(parts)} ({time.perf_counter() - self._start:.1f} s)", flush=True)


def mlflow_name(metric: str) -> str:
    """MLflow metric names allow no '@': `val_ndcg@10` -> `val_ndcg_at_10`."""
    return metric.replace("@", "_at_")


class MLflowStage(pl.Callback):
    """The stage's nested MLflow run, opened on rank zero once the strategy knows the rank.

    Logs params at setup, epoch metrics at each epoch end; `finish` logs the exported model
    folder once (not every checkpoint) and closes the run.
    """

    def __init__(self, stage: str, experiment: str, params_path: str, params: dict) -> None:
        self.stage, self.experiment, self.params_path = stage, experiment, params_path
        self.params = params
        self._stack: ExitStack | None = None

    @rank_zero_only
    def setup(self, trainer, pl_module, stage: str) -> None:
        import mlflow

        from pipeline.tracking import stage_run

        if self._stack is not None:
            return
        self._stack = ExitStack()
        self._stack.enter_context(stage_run(self.stage, self.experiment, self.params_path))
        mlflow.log_params(self.params)

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import mlflow

        metrics = {mlflow_name(k): float(v) for k, v in trainer.callback_metrics.items()
                   if v.numel() == 1 and not k.endswith("_step")}
        mlflow.log_metrics(metrics, step=trainer.current_epoch)

    @rank_zero_only
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._stack is not None:
            self._stack.__exit__(type(exception), exception, exception.__traceback__)
            self._stack = None

    @rank_zero_only
    def finish(self, model_dir: Path, summary: dict) -> None:
        import mlflow

        if self._stack is None:
            return
        mlflow.log_metrics({mlflow_name(k): float(v) for k, v in summary.items()
                            if isinstance(v, int | float) and not isinstance(v, bool)})
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        self._stack.close()
        self._stack = None

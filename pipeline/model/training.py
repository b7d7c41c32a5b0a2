"""Lightning module: next-item losses, the purchase head, validation NDCG/HR@10, optimiser.

Losses are computed only at positions with a target (`item_mask`): the hidden states of
those positions are gathered *before* the `hidden @ item_emb.T` product, so padding and
non-target events cost nothing in the most expensive matmul (DESIGN.md section 4).

- `full_ce`: softmax cross-entropy over every real item (SASRec + CE, Klenitskiy & Vasilev,
  RecSys 2023).
- `sampled_softmax`: the positive against `n_negatives` items shared by the batch, drawn by
  training popularity q, each logit corrected by `- log q(item)` (logQ correction; Yi et al.,
  RecSys 2019) so the sampled loss estimates the full softmax; accidental hits are masked.

Validation ranks all items for each validation example (full ranking, no sampled
negatives), optionally excluding items already in the history, and logs `val_ndcg@10` and
`val_hr@10`. `ndcg_hr_at_k` is the in-training metric; `pipeline/evaluation/metrics.py` (evaluate
stage) owns the reported ones.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from pipeline.model.config import N_RESERVED, PAD, ModelConfig
from pipeline.model.heads import mix, repeat_log_prob_of
from pipeline.model.transformer import SeqRecModel

VAL_K = 10  # early stopping and model selection use NDCG@10
VAL_METRIC = f"val_ndcg@{VAL_K}"


def ndcg_hr_at_k(scores: torch.Tensor, targets: torch.Tensor, k: int = VAL_K):
    """Per-example NDCG@k and HR@k of one relevant item under full ranking.

    Args:
        scores: (B, V) scores; excluded items at -inf.
        targets: (B,) item ids.

    Returns:
        (ndcg (B,), hit (B,)) float tensors. Ties count against the target (pessimistic).
    """
    target_score = scores.gather(1, targets[:, None])  # (B, 1)
    rank = (scores >= target_score).sum(1) - 1  # (B,) items ranked at or above the target
    hit = rank < k
    ndcg = torch.where(hit, 1.0 / torch.log2(rank.float() + 2.0), torch.zeros_like(rank,
                                                                                 dtype=torch.float))
    return ndcg, hit.float()


def warmup_cosine(step: int, warmup_steps: int, total_steps: int,
                  time_progress: float = 0.0) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to 0 at `total_steps`.

    `time_progress` (elapsed / time budget) decays it on the clock instead when that is
    further along: a run cut by `max_time_minutes` still ends its cosine at a low rate.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, max((step - warmup_steps) / max(1, total_steps - warmup_steps),
                            time_progress))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class SeqRecModule(pl.LightningModule):
    """Trains `SeqRecModel` on next-item targets (and, when fine-tuning, the purchase head).

    Hyper-parameters are plain JSON values, so Lightning checkpoints load with
    `torch.load(weights_only=True)`.
    """

    def __init__(
        self,
        config: dict,
        lr: float,
        weight_decay: float,
        warmup_steps: int,
        loss: str = "full_ce",
        n_negatives: int = 256,
        purchase_loss_weight: float = 0.0,
        balance_types: bool = False,
        exclude_history: bool = False,
        item_counts: list[float] | None = None,
        time_budget_s: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["item_counts"])
        self.model = SeqRecModel(ModelConfig(**config))
        counts = torch.tensor(item_counts if item_counts is not None else
                              [0.0] * N_RESERVED + [1.0] * (config["vocab_size"] - N_RESERVED))
        # Buffers are not saved: popularity is rebuilt from the data, weights stay pure.
        self.register_buffer("sample_prob", counts / counts.sum(), persistent=False)

    # ---- losses -------------------------------------------------------------------------
    def generate_log_prob(self, queried: torch.Tensor, targets: torch.Tensor,
                          last_items: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """Queried hidden (N, D) at target positions, targets (N,) -> (N,) log P_generate.

        `last_items`/`next_types` (N,): the input event at each position and the type
        predicted (the transition prior's inputs)."""
        if self.hparams.loss == "sampled_softmax":
            return self._sampled_log_prob(queried, targets)
        logits = self.model.item_logits(queried, last_items, next_types,
                                        leave_out=targets)  # (N, V - 3)
        return -F.cross_entropy(logits.float(), targets - N_RESERVED, reduction="none")

    def _sampled_log_prob(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weights = self.model.item_table()  # (V, D), tied output
        negatives = torch.multinomial(self.sample_prob, self.hparams.n_negatives,
                                      replacement=True)  # (S,)
        log_q = torch.log(self.sample_prob)  # (V,)
        pos = (hidden * weights[targets]).sum(-1).float() - log_q[targets]  # (N,)
        neg = (hidden @ weights[negatives].T).float() - log_q[negatives]  # (N, S)
        neg = neg.masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
        logits = torch.cat([pos[:, None], neg], dim=1)  # (N, 1 + S)
        return -F.cross_entropy(logits, torch.zeros_like(targets), reduction="none")

    def batch_losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`loss` (what is optimised), `item_loss` and, when weighted, `purchase_loss`."""
        items = batch["items"]  # (B, T)
        hidden = self.model(items, batch["types"], batch["ts"])  # (B, T, D)
        mask = batch["item_mask"]  # (B, T)
        targets = batch["next_items"][mask]  # (N,)
        queried = self.model.query(hidden, batch["next_types"])  # (B, T, D)
        at_targets = queried[mask]  # (N, D): only positions with a target reach the logits
        log_p = self.generate_log_prob(at_targets, targets, items[mask],
                                       batch["next_types"][mask])  # (N,)
        cfg = self.model.config
        if cfg.repeat_head:
            rows, positions = mask.nonzero(as_tuple=True)  # (N,), (N,)
            features = self.model.repeat_inputs(items, batch["types"], batch["ts"],
                                                last_only=False).at(rows, positions)  # (N, 1, T)
            history = items[rows]  # (N, T)
            next_types = batch["next_types"][mask]  # (N,)
            vectors = self.model.item_vectors(items)[rows]  # (N, T, D): one lookup per batch
            log_repeat = self.model.head.repeat(
                at_targets[:, None], features, vectors, next_types[:, None])[:, 0]  # (N, T)
            log_p = mix(self.model.head.explore_logit(at_targets, next_types), log_p,
                        repeat_log_prob_of(log_repeat, history, targets))
        losses = {"item_loss": self._mean_loss(-log_p, batch["next_types"][mask])}
        losses["loss"] = losses["item_loss"]
        if self.hparams.purchase_loss_weight > 0:
            losses["purchase_loss"] = F.binary_cross_entropy_with_logits(
                self.model.purchase_logit(hidden[mask]).float(), batch["purchase_label"][mask])
            losses["loss"] = losses["loss"] + (self.hparams.purchase_loss_weight
                                               * losses["purchase_loss"])
        return losses

    def _mean_loss(self, losses: torch.Tensor, next_types: torch.Tensor) -> torch.Tensor:
        """The mean over targets, or (`balance_types`) the mean over event types of each
        type's mean: on a view-dominated log, carts and purchases then weigh as much as views
        in pretraining instead of a tenth of it."""
        if not self.hparams.balance_types:
            return losses.mean()
        present = torch.unique(next_types)
        return torch.stack([losses[next_types == t].mean() for t in present]).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        losses = self.batch_losses(batch)
        n = int(batch["item_mask"].sum())
        for name, value in losses.items():
            self.log(f"train_{name}", value, on_step=name == "loss", on_epoch=True,
                     prog_bar=name == "loss", batch_size=n)
        return losses["loss"]

    # ---- validation ---------------------------------------------------------------------
    def validation_ranks(self, batch: dict[str, torch.Tensor]):
        """Per-example NDCG@10 and hit@10 of a validation batch (full ranking)."""
        scores, _ = self.model.score_last(batch["items"], batch["types"], batch["ts"])  # (B, V)
        scores = scores.float()
        if self.hparams.exclude_history:
            history = batch["items"]  # (B, T); PAD (0) is already -inf
            scores = scores.scatter(1, history, float("-inf"))
        return ndcg_hr_at_k(scores, batch["target_item"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        ndcg, hit = self.validation_ranks(batch)
        size = len(ndcg)
        self.log(VAL_METRIC, ndcg.mean(), prog_bar=True, batch_size=size, sync_dist=True)
        self.log(f"val_hr@{VAL_K}", hit.mean(), batch_size=size, sync_dist=True)

    # ---- optimiser ----------------------------------------------------------------------
    def configure_optimizers(self):
        """AdamW with warmup + cosine decay per step. Weight decay applies to matrices and
        embedding tables (nanoGPT-style; on sparse catalogues the item table is what
        overfits), never to biases and norms."""
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        decay = [p for n, p in trainable if p.dim() >= 2]
        no_decay = [p for n, p in trainable if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr,
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = min(self.hparams.warmup_steps, max(0, total - 1))
        time_progress = self._time_progress_fn()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, warmup, total, time_progress())
        )
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _time_progress_fn(self):
        """() -> training time spent / `time_budget_s` (0 without a budget). Lightning's
        Timer (present when the Trainer has `max_time`) keeps the elapsed time across
        resumes; it is looked up once, here, not at every step."""
        from pytorch_lightning.callbacks import Timer

        budget = self.hparams.time_budget_s
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        if not budget or timer is None:
            return lambda: 0.0
        return lambda: timer.time_elapsed() / budget

def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Non-padding input events in a training batch (for tokens/s)."""
    return int((batch["items"] != PAD).sum())


@torch.no_grad()
def validation_score(module: SeqRecModule, loader, limit_batches: int | float | None = None
                     ) -> float:
    """Mean validation NDCG@10 of `module` as it is (fine-tuning's starting point), on the
    module's current device; `limit_batches` as the Trainer's `limit_val_batches`."""
    if isinstance(limit_batches, float):
        limit = max(1, int(len(loader) * limit_batches)) if limit_batches < 1 else len(loader)
    else:
        limit = len(loader) if limit_batches is None else limit_batches
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    total, count = 0.0, 0
    for index, batch in enumerate(loader):
        if index >= limit:
            break
        ndcg, _ = module.validation_ranks({k: v.to(device) for k, v in batch.items()})
        total, count = total + float(ndcg.sum()), count + len(ndcg)
    module.train(was_training)
    return total / max(count, 1)

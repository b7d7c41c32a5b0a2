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
from pipeline.model.transformer import SeqRecModel, seen_columns

VAL_K = 10  # early stopping and model selection use NDCG@10
VAL_METRIC = f"val_ndcg@{VAL_K}"
NO_MASS = -1e4  # log-prob standing for "none" where -inf would poison a gradient
GATE_SHIFTS = (-2.0, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)  # `calibrate_gate`'s grid


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
        horizon: int = 1,
        explore_steps: int = 0,
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
                          last_items: torch.Tensor, next_types: torch.Tensor,
                          leave_out: torch.Tensor | None = None,
                          seen: torch.Tensor | None = None) -> torch.Tensor:
        """Queried hidden (N, D) at target positions, targets (N,) -> (N,) log P_generate.

        `last_items`/`next_types` (N,): the input event at each position and the type
        predicted (the transition prior's inputs). `seen` (N, T) item ids: the softmax runs
        over the items outside them (`explore_novel`), and a target among them gets a very
        low finite log-prob (the mixture's repeat part scores it: a -inf here would give NaN
        gradients through logaddexp)."""
        if self.hparams.loss == "sampled_softmax":
            return self._sampled_log_prob(queried, targets)
        logits = self.model.item_logits(queried, last_items, next_types,
                                        leave_out=leave_out).float()  # (N, V - 3)
        if seen is None:
            return -F.cross_entropy(logits, targets - N_RESERVED, reduction="none")
        logits = logits.masked_fill(seen_columns(seen, logits.shape[1]), float("-inf"))
        log_p = torch.log_softmax(logits, 1).gather(1, (targets - N_RESERVED)[:, None])[:, 0]
        return torch.where(torch.isfinite(log_p), log_p, torch.full_like(log_p, NO_MASS))

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
        """`loss` (what is optimised), `item_loss` and, when weighted, `purchase_loss`.

        With `horizon` > 1 (pretraining), each position also predicts the events 2 ..
        `horizon` steps later, weighted 1 / steps: what else the session holds, not only
        what comes next."""
        items = batch["items"]  # (B, T)
        hidden = self.model(items, batch["types"], batch["ts"])  # (B, T, D)
        mask = batch["item_mask"]  # (B, T)
        next_items, next_types = batch["next_items"], batch["next_types"]
        nll, kinds, weights = [], [], []
        exploring = self.exploring()
        for ahead in range(1, self.hparams.horizon + 1):
            if ahead > 1:  # the event `ahead` steps later: shift the next-event columns left
                next_items = F.pad(next_items[:, 1:], (0, 1), value=PAD)
                next_types = F.pad(next_types[:, 1:], (0, 1), value=PAD)
                mask = mask & (next_items != PAD)
                if not mask.any():
                    break
            log_p = self._target_log_prob(hidden, batch, mask, next_items[mask], next_types,
                                          leave_out=ahead == 1,
                                          explore_only=exploring or ahead > 1)
            nll.append(-log_p)
            kinds.append(next_types[mask])
            weights.append(torch.full_like(log_p, 1.0 / ahead))
        losses = {"item_loss": self._mean_loss(torch.cat(nll), torch.cat(kinds),
                                               torch.cat(weights) if len(nll) > 1 else None)}
        losses["loss"] = losses["item_loss"]
        if self.hparams.purchase_loss_weight > 0:
            mask = batch["item_mask"]
            losses["purchase_loss"] = F.binary_cross_entropy_with_logits(
                self.model.purchase_logit(hidden[mask]).float(), batch["purchase_label"][mask])
            losses["loss"] = losses["loss"] + (self.hparams.purchase_loss_weight
                                               * losses["purchase_loss"])
        return losses

    def exploring(self) -> bool:
        """Whether training is still in its first `explore_steps` optimizer steps, where only
        the catalogue softmax trains: the repeat scorer and the gate join afterwards."""
        return self.hparams.explore_steps > 0 and self.global_step < self.hparams.explore_steps

    def _target_log_prob(self, hidden: torch.Tensor, batch: dict[str, torch.Tensor],
                         mask: torch.Tensor, targets: torch.Tensor, next_types: torch.Tensor,
                         leave_out: bool, explore_only: bool) -> torch.Tensor:
        """(N,) log P(target | history up to each masked position, queried with its type).

        `explore_only`: the catalogue softmax alone, without the repeat scorer and the gate.
        `leave_out`: the transition prior leaves the predicted pair out."""
        items = batch["items"]
        queried = self.model.query(hidden, next_types)  # (B, T, D)
        at_targets = queried[mask]  # (N, D): only positions with a target reach the logits
        types = next_types[mask]  # (N,)
        cfg = self.model.config
        left_out = targets if leave_out else None
        if not cfg.repeat_head or explore_only:
            return self.generate_log_prob(at_targets, targets, items[mask], types, left_out)
        rows, positions = mask.nonzero(as_tuple=True)  # (N,), (N,)
        history = items[rows]  # (N, T)
        seen = None
        if cfg.explore_novel:  # explore ranks only what the history (up to here) lacks
            seen = history.masked_fill(
                torch.arange(history.shape[1], device=history.device) > positions[:, None], PAD)
        log_explore = self.generate_log_prob(at_targets, targets, items[mask], types, left_out,
                                             seen)
        features = self.model.repeat_inputs(items, batch["types"], batch["ts"],
                                            last_only=False).at(rows, positions)  # (N, 1, T)
        vectors = self.model.item_vectors(items)[rows]  # (N, T, D): one lookup per batch
        log_repeat = self.model.head.repeat(
            at_targets[:, None], features, vectors, types[:, None])[:, 0]  # (N, T)
        return mix(self.model.head.explore_logit(at_targets, types), log_explore,
                   repeat_log_prob_of(log_repeat, history, targets))

    def _mean_loss(self, losses: torch.Tensor, next_types: torch.Tensor,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
        """The (weighted) mean over targets, or (`balance_types`) the mean over event types of
        each type's mean: on a view-dominated log, carts and purchases then weigh as much as
        views in pretraining instead of a tenth of it."""
        def mean(values: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
            return values.mean() if w is None else (values * w).sum() / w.sum()

        if not self.hparams.balance_types:
            return mean(losses, weights)
        present = torch.unique(next_types)
        return torch.stack([mean(losses[next_types == t],
                                 None if weights is None else weights[next_types == t])
                            for t in present]).mean()

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


def calibrate_gate(module: SeqRecModule, loader, limit_batches: int | float | None = None
                   ) -> tuple[float, float, float]:
    """Shift the explore gate's logit by the value of `GATE_SHIFTS` (or 0) with the best
    validation NDCG@10; returns (shift, that NDCG, the NDCG unshifted). Temperature
    scaling's idea (Guo et al., ICML 2017): one scalar fitted on held-out data. An explore
    softmax learnt on a small log is surer of itself on training histories than on new ones,
    and its share, learnt on the same histories, ranks its guesses above the history items
    too often."""
    bias = module.model.head.explore_gate.bias
    original = bias.detach().clone()
    best_shift, best = 0.0, validation_score(module, loader, limit_batches)
    unshifted = best
    for shift in GATE_SHIFTS:
        with torch.no_grad():
            bias.copy_(original - shift)
        score = validation_score(module, loader, limit_batches)
        if score > best:
            best_shift, best = shift, score
    with torch.no_grad():
        bias.copy_(original - best_shift)
    return best_shift, best, unshifted

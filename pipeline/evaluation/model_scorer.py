"""A trained model folder (local or from the MLflow registry) as a `Recommender`.

The model may have been trained on another snapshot (the champion scored on new test data),
so its vocabulary is mapped onto the current one by `item_id` strings: history items it does
not know become UNK, and current items it does not know score -inf (a target among them is
a miss). Event types map by name. Nothing here crashes on a vocabulary mismatch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ModelError
from pipeline.evaluation.metrics import N_RESERVED_TOKENS
from pipeline.evaluation.ranking import HistoryBatch

log = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "model.safetensors", "vocab.parquet")
UNK_INDEX = 2
LENGTH_CHUNK_ROWS = 256  # rows per forward pass; small enough that lengths within one are close
URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:", "s3:", "gs:", "http:", "https:")


def is_mlflow_uri(spec: str) -> bool:
    return spec.startswith(URI_SCHEMES)


def find_model_folder(root: Path) -> Path:
    """The shallowest folder under `root` holding config.json, model.safetensors, vocab.parquet."""
    candidates = sorted(
        (
            path.parent
            for path in root.rglob(MODEL_FILES[0])
            if all((path.parent / name).is_file() for name in MODEL_FILES)
        ),
        key=lambda folder: (len(folder.relative_to(root).parts), str(folder)),
    )
    if not candidates:
        raise ModelError(f"{root}: no folder with {', '.join(MODEL_FILES)} inside")
    return candidates[0]


def resolve_model_dir(spec: str, download_dir: Path, tracking_uri: str | None = None) -> Path:
    """A local model folder, or download an MLflow model/run URI and find the folder in it.

    `tracking_uri`: the store to resolve the URI against; None = `pipeline.tracking`'s
    default (which is also made the process-wide MLflow default).
    """
    if not is_mlflow_uri(spec):
        folder = Path(spec)
        missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
        if missing:
            raise ModelError(f"{folder}: not a model folder, missing {missing}")
        return folder
    import mlflow

    from pipeline.tracking import configure

    if tracking_uri is None:
        configure()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=spec, dst_path=str(download_dir),
                                                    tracking_uri=tracking_uri)
    except Exception as exc:  # MLflow raises many types; the user needs the URI and the reason
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{spec}: cannot download the model: {reason}") from None
    return find_model_folder(Path(local))


@dataclass(frozen=True)
class VocabMapping:
    """Current token index -> the model's token index."""

    history_map: np.ndarray  # (V_cur,) int64: model index, UNK where the model lacks the item
    score_columns: np.ndarray  # (V_cur,) int64: model column to read, -1 = unknown (-inf)
    identity: bool  # same vocabulary: no remapping needed
    n_unknown: int  # current catalogue items the model has never seen


def map_vocab(current: pd.DataFrame, model: pd.DataFrame) -> VocabMapping:
    """Map by `item_id` strings; reserved tokens map to themselves."""
    cur_size = int(current["index"].max()) + 1 if len(current) else N_RESERVED_TOKENS
    model_size = int(model["index"].max()) + 1 if len(model) else N_RESERVED_TOKENS
    merged = current[["item_id", "index"]].merge(
        model[["item_id", "index"]], on="item_id", how="left", suffixes=("_cur", "_model")
    )
    score_columns = np.full(cur_size, -1, dtype=np.int64)
    score_columns[:N_RESERVED_TOKENS] = np.arange(N_RESERVED_TOKENS)
    known = merged["index_model"].notna().to_numpy()
    cur_index = merged["index_cur"].to_numpy(np.int64)
    score_columns[cur_index[known]] = merged["index_model"].to_numpy()[known].astype(np.int64)
    history_map = np.where(score_columns >= 0, score_columns, UNK_INDEX)
    identity = cur_size == model_size and bool(np.array_equal(score_columns, np.arange(cur_size)))
    n_unknown = int((score_columns[N_RESERVED_TOKENS:] < 0).sum())
    return VocabMapping(history_map, score_columns, identity, n_unknown)


def map_event_types(current: list[str], model: list[str]) -> np.ndarray:
    """(1 + len(current),) current type id -> model type id (0 = PAD for unknown names)."""
    lookup = {name: 1 + position for position, name in enumerate(model)}
    return np.array([0] + [lookup.get(name, 0) for name in current], dtype=np.int64)


class ModelRecommender:
    """Wraps `model.score_last` (docs/interfaces.md "Model folders") as a recommender."""

    def __init__(
        self, name: str, folder: Path, current_vocab: pd.DataFrame, event_types: list[str]
    ):
        import torch

        from pipeline.model.folder import load_model_dir

        self.name = name
        self.folder = folder
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.model, _, _ = load_model_dir(folder)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.max_len = int(config.get("max_len", 0)) or None
        self.mapping = map_vocab(current_vocab, pd.read_parquet(folder / "vocab.parquet"))
        self.type_map = map_event_types(event_types, list(config.get("event_types", event_types)))
        self.vocab_size = len(self.mapping.history_map)
        if self.mapping.n_unknown:
            log.warning(
                "%s: %d current items unknown to the model; they score -inf",
                name,
                self.mapping.n_unknown,
            )

    def score_with_purchase(self, batch: HistoryBatch) -> tuple[np.ndarray, np.ndarray]:
        """((B, V_cur) float32 item scores, (B,) float32 purchase logits).

        Rows are sorted by history length and run in chunks cut to their own longest
        history: padding costs as much as real events, and the model's output does not
        depend on how much left padding a batch adds (right-aligned positions).
        """
        items, types, ts = batch.items, batch.types, batch.ts
        if self.max_len is not None:
            items, types, ts = (a[:, -self.max_len :] for a in (items, types, ts))
        if not self.mapping.identity:
            items = self.mapping.history_map[items]
        types = self.type_map[np.clip(types, 0, len(self.type_map) - 1)]
        lengths = np.count_nonzero(items, axis=1)  # (B,)
        order = np.argsort(lengths, kind="stable")
        logits = purchase = None
        for first in range(0, len(order), LENGTH_CHUNK_ROWS):
            rows = order[first : first + LENGTH_CHUNK_ROWS]
            width = max(int(lengths[rows].max()), 1)
            chunk_logits, chunk_purchase = self._forward(
                items[rows, -width:], types[rows, -width:], ts[rows, -width:]
            )  # (b, V_model), (b,)
            if logits is None:
                logits = np.empty((len(items), chunk_logits.shape[1]), dtype=np.float32)
                purchase = np.empty(len(items), dtype=np.float32)
            logits[rows], purchase[rows] = chunk_logits, chunk_purchase
        if self.mapping.identity:
            return logits, purchase
        scores = np.full((len(items), self.vocab_size), -np.inf, dtype=np.float32)
        known = self.mapping.score_columns >= 0
        scores[:, known] = logits[:, self.mapping.score_columns[known]]
        return scores, purchase

    def _forward(self, items, types, ts) -> tuple[np.ndarray, np.ndarray]:
        import torch

        def tensor(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64)).to(self.device)

        with torch.inference_mode():
            logits, purchase = self.model.score_last(tensor(items), tensor(types), tensor(ts))
        return logits.float().cpu().numpy(), purchase.float().cpu().numpy()

    def score(self, batch: HistoryBatch) -> np.ndarray:
        return self.score_with_purchase(batch)[0]

"""Warm start: carry a trained model's weights into a model built for a newer vocabulary.

A retrain's vocabulary extends the champion's (`sequences.previous_vocab`: known items keep
their token index, new items are appended, items no longer seen stay), so most of what the
champion learnt can be reused instead of thrown away each week:

- every tensor whose shape does not depend on the catalogue (blocks, heads, type, position
  and time-gap tables) is copied as is;
- item rows are copied by `item_id` (not by index, so a folder built without the champion's
  vocabulary still maps correctly): known and retired items keep their rows;
- a new item's row starts as the mean of the known items sharing its side features
  (category, brand, price bucket: the catalogue of the new data), else as the mean of all
  known rows, so it scores like its neighbours rather than like noise;
- side-feature rows are copied by token name (`feature_vocab.parquet` in both folders);
  new tokens keep their random start.

The architecture (widths, layers, heads, window, time buckets, heads' use) must match; a
difference is one `ModelError` line naming every differing field.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.model.config import ARCHITECTURE_FIELDS, N_RESERVED
from pipeline.model.origin import ORIGIN_FILE, is_uri, origin_of
from pipeline.model.transformer import SeqRecModel

log = logging.getLogger(__name__)
CATALOGUE_FIELDS = ("vocab_size", "n_features", "features_per_item")  # may grow between runs
ITEM_TABLE, FEATURE_TABLE = "item_emb.weight", "feature_emb.weight"
# Buffers filled from the new data, never copied from the source model.
DATA_BUFFERS = ("item_features", "feature_columns", "successors", "successor_counts")


def check_architecture(ours: dict, theirs: dict, where: Path) -> None:
    """Every architecture field but the catalogue sizes must agree; else one line."""
    diff = [f"{k}={theirs[k]} (params/data: {ours[k]})" for k in ARCHITECTURE_FIELDS
            if k not in CATALOGUE_FIELDS and ours[k] != theirs[k]]
    if diff:
        raise ModelError(f"{where}: cannot warm-start from a different architecture: "
                         + ", ".join(diff))


def _index_map(new_vocab, old_vocab) -> tuple[np.ndarray, np.ndarray]:
    """(new indices, old indices) of the items both vocabularies hold."""
    old = dict(zip(old_vocab["item_id"], old_vocab["index"], strict=True))
    pairs = [(int(i), int(old[item])) for item, i in zip(new_vocab["item_id"], new_vocab["index"],
                                                         strict=True) if item in old]
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def new_item_rows(table: torch.Tensor, known: torch.Tensor, new: torch.Tensor,
                  features: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Rows for `new` item indices: the mean of known items sharing a feature token.

    Args:
        table: (V, D) item rows, known ones already filled.
        known, new: item indices (int64).
        features: (V, K) feature token ids of every item in the new data (0 = none), or None.
    Returns: (len(new), D) rows and how many came from side features.
    """
    fallback = table[known].mean(0) if len(known) else torch.zeros(table.shape[1])
    rows = fallback.expand(len(new), -1).clone()
    if features is None or not len(known) or not len(new):
        return rows, 0
    n_tokens = int(features.max()) + 1
    known_tokens = features[known]  # (Nk, K)
    sums = torch.zeros(n_tokens, table.shape[1])
    counts = torch.zeros(n_tokens)
    flat = known_tokens.reshape(-1)
    sums.index_add_(0, flat, table[known].repeat_interleave(known_tokens.shape[1], 0))
    counts.index_add_(0, flat, torch.ones(len(flat)))
    counts[0] = 0  # padding token: no feature
    token_mean = sums / counts.clamp(min=1)[:, None]
    new_tokens = features[new]  # (Nn, K)
    has = counts[new_tokens] > 0  # (Nn, K)
    n_has = has.sum(1)
    from_features = (token_mean[new_tokens] * has[..., None]).sum(1) / n_has.clamp(min=1)[:, None]
    use = n_has > 0
    rows[use] = from_features[use]
    return rows, int(use.sum())


def _feature_map(new_dir: Path, old_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(new ids, old ids) of feature tokens both folders name; None without both vocabularies."""
    import pandas as pd

    from pipeline.model.batches import FEATURE_VOCAB_FILE

    if not ((new_dir / FEATURE_VOCAB_FILE).is_file() and (old_dir / FEATURE_VOCAB_FILE).is_file()):
        return None
    new = pd.read_parquet(new_dir / FEATURE_VOCAB_FILE)
    old = dict(zip(*pd.read_parquet(old_dir / FEATURE_VOCAB_FILE)[["feature", "id"]].T.values,
                   strict=True))
    pairs = [(int(i), int(old[f])) for f, i in zip(new["feature"], new["id"], strict=True)
             if f in old]
    pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def warm_start(model: SeqRecModel, source_dir: Path, data) -> dict:
    """Fill `model` (built for `data`, item features set) from the folder `source_dir`.

    Returns what happened, for `training.json` and the MLflow run: `init_from`, counts of
    known, new (from features) and dropped items (the new vocabulary lacks them), and
    copied feature tokens.
    """
    import pandas as pd
    from safetensors.torch import load_file

    from pipeline.model.folder import CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE, read_config

    source_dir = Path(source_dir)
    if not (source_dir / CONFIG_FILE).is_file():
        raise ModelError(f"{source_dir}: no model folder to warm-start from (config.json "
                         "missing); put one there or set retrain.init: pretrained")
    theirs = read_config(source_dir)
    check_architecture(model.config.architecture(), theirs.architecture(),
                       source_dir / CONFIG_FILE)
    old_state = load_file(str(source_dir / WEIGHTS_FILE))
    state = model.state_dict()
    for name, tensor in old_state.items():
        if name in (ITEM_TABLE, FEATURE_TABLE, *DATA_BUFFERS) or name not in state:
            continue
        if tensor.shape != state[name].shape:
            raise ModelError(f"{source_dir / WEIGHTS_FILE}: weight {name} has shape "
                             f"{tuple(tensor.shape)}, this model {tuple(state[name].shape)}")
        state[name] = tensor
    new_vocab = pd.read_parquet(data.vocab_path)
    old_vocab = pd.read_parquet(source_dir / VOCAB_FILE)
    new_idx, old_idx = _index_map(new_vocab, old_vocab)
    items = state[ITEM_TABLE].clone()
    items[:N_RESERVED] = old_state[ITEM_TABLE][:N_RESERVED]
    items[new_idx] = old_state[ITEM_TABLE][old_idx]
    known = torch.from_numpy(new_idx)
    is_new = torch.ones(len(items), dtype=torch.bool)
    is_new[:N_RESERVED] = False
    is_new[known] = False
    new = torch.nonzero(is_new).squeeze(1)
    features = state.get("item_features")
    items[new], from_features = new_item_rows(items, known, new, features)
    state[ITEM_TABLE] = items
    copied_tokens = 0
    if FEATURE_TABLE in state and FEATURE_TABLE in old_state:
        mapping = _feature_map(data.root, source_dir)
        if mapping is None and old_state[FEATURE_TABLE].shape == state[FEATURE_TABLE].shape:
            # A folder from before feature_vocab.parquet travelled: the same number of
            # tokens means the same sorted catalogue values, so the same ids (a guess).
            log.warning("%s has no feature_vocab.parquet: feature rows copied by id",
                        source_dir)
            state[FEATURE_TABLE] = old_state[FEATURE_TABLE]
            copied_tokens = len(state[FEATURE_TABLE]) - 1
        elif mapping is not None:
            table = state[FEATURE_TABLE].clone()
            table[torch.from_numpy(mapping[0])] = old_state[FEATURE_TABLE][mapping[1]]
            state[FEATURE_TABLE], copied_tokens = table, len(mapping[0])
    model.load_state_dict(state)
    summary = {"init_from": origin_of(source_dir), "known_items": len(new_idx),
               "new_items": len(new), "new_items_from_features": from_features,
               "dropped_items": len(old_vocab) - len(new_idx),
               "feature_tokens_copied": copied_tokens}
    log.info("warm start from %s: %d known items, %d new (%d from side features), %d "
             "dropped", summary["init_from"], len(new_idx), len(new), from_features,
             summary["dropped_items"])
    return summary


@contextmanager
def resolved_source(spec: str | None, wanted: bool) -> Iterator[Path | None]:
    """The local folder to warm-start from (None when not `wanted`).

    A `models:/` or `runs:/` URI is downloaded into a temporary folder (with an
    `origin.json` naming it) that lives as long as the context.
    """
    if not wanted:
        yield None
        return
    if not spec:
        from pipeline.params import ParamsError

        raise ParamsError("params.yaml: retrain.init is champion but retrain.init_from is "
                          "null; name a model folder (or pass --init-from)")
    if not is_uri(spec):
        yield Path(spec)
        return
    from pipeline.evaluation.model_scorer import resolve_model_dir  # only for a URI

    with tempfile.TemporaryDirectory(prefix="seqrec-warm-") as tmp:
        folder = resolve_model_dir(spec, Path(tmp))
        (folder / ORIGIN_FILE).write_text(json.dumps({"uri": spec}) + "\n")
        yield folder


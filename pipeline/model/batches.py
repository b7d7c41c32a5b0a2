"""Sequences folder -> padded arrays -> batches for pretraining, fine-tuning and validation.

Reads the contract of `docs/interfaces.md` ("Sequences"): `train.parquet` (one row per user,
`items`/`types`/`ts` lists, last `max_len + 1` events), `val.parquet` (history lists and the
target), `vocab.parquet`, `meta.json`. Lists are LEFT-padded once, vectorised with pyarrow;
each batch is then cut to its own longest history, so short-history data sets (Amazon: ~9
events) do not pay for `max_len` positions.

Training batches are length-bucketed (`LengthBucketSampler`): rows are shuffled, cut into
pools of `BUCKET_POOL_BATCHES` batches, sorted by length inside each pool, and the resulting
batches are shuffled. Each batch then holds histories of similar length, so the transformer
pays for ~1.2x the real events instead of ~6x on Amazon-like data (median 6 events, some 50).

Training positions: input events `0..L-1` predict events `1..L`. Pretraining uses every
position with a next event; fine-tuning only those whose next event is a target type
(cart/purchase; all events when the data has a single type).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import ModelError
from pipeline.model.config import N_RESERVED, PAD

META_KEYS = ("event_types", "target_event_types", "max_len", "vocab_size")
TRAIN_COLUMNS = ("items", "types", "ts")
VAL_COLUMNS = ("history_items", "history_types", "history_ts", "target_item", "target_type")
VAL_BATCH_FACTOR = 4  # scoring keeps no activations for backward: larger batches fit
POPULARITY_PRIOR = 1.0  # added to item counts so items unseen in train keep a finite log q
ITEM_FEATURES_FILE = "item_features.parquet"  # optional: side features of catalogue items
FEATURE_VOCAB_FILE = "feature_vocab.parquet"  # its tokens (`column=value`) and their ids
SECONDS_PER_DAY = 86400
BUCKET_POOL_BATCHES = 50  # batches sorted together by length: larger = less padding, less mixing


def pad_left(column, width: int) -> np.ndarray:
    """A pyarrow list column -> (N, width) int64, the last `width` values right-aligned."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64)
    ends = np.cumsum(lengths)
    keep = np.minimum(lengths, width)
    rows = np.repeat(np.arange(len(lengths)), keep)
    within = np.arange(keep.sum()) - np.repeat(np.cumsum(keep) - keep, keep)  # 0..keep-1
    out = np.zeros((len(lengths), width), dtype=np.int64)
    out[rows, width - np.repeat(keep, keep) + within] = flat[np.repeat(ends - keep, keep) + within]
    return out


@dataclass
class SequenceData:
    """Padded arrays of one sequences folder plus what the model needs from its meta."""

    root: Path
    event_types: list[str]
    target_event_types: list[str]
    max_len: int
    vocab_size: int
    train: dict[str, np.ndarray]  # items/types/ts: (N, max_len + 1)
    val: dict[str, np.ndarray]  # items/types/ts: (M, max_len); target_item/target_type: (M,)
    item_features: np.ndarray | None = None  # (vocab_size, K) feature token ids, 0 = none
    n_features: int = 0  # size of the feature vocabulary (0 = padding included)
    feature_columns: np.ndarray | None = None  # (n_features,) column of each token, 1-based

    @property
    def vocab_path(self) -> Path:
        return self.root / "vocab.parquet"

    def type_id(self, name: str) -> int:
        return 1 + self.event_types.index(name)

    @property
    def target_type_ids(self) -> list[int]:
        return [self.type_id(name) for name in self.target_event_types]

    @property
    def positive_event_type(self) -> str:
        """Deepest funnel stage among the targets (purchase); the purchase head's positive."""
        return max(self.target_event_types, key=self.event_types.index)

    def item_counts(self) -> np.ndarray:
        """(vocab_size,) training-event counts plus a prior; reserved tokens at 0."""
        counts = np.bincount(self.train["items"].ravel(), minlength=self.vocab_size)
        counts = counts.astype(np.float64) + POPULARITY_PRIOR
        counts[:N_RESERVED] = 0.0
        return counts


def _read_table(path: Path, columns: tuple[str, ...]):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ModelError(f"{path}: sequences file not found")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for bad files
        raise ModelError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ModelError(f"{path}: missing columns {missing} (see docs/interfaces.md)")
    return table


def load_sequences(root: str | Path) -> SequenceData:
    """Read a sequences folder into padded arrays; contract violations -> ModelError."""
    root = Path(root)
    meta_path = root / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{meta_path}: sequences meta not found") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{meta_path}: not valid JSON ({exc})") from None
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ModelError(f"{meta_path}: missing keys {missing}")
    event_types = list(meta["event_types"])
    targets = [t for t in meta["target_event_types"] if t in event_types] or event_types
    max_len = int(meta["max_len"])
    train_table = _read_table(root / "train.parquet", TRAIN_COLUMNS)
    train = {c: pad_left(train_table.column(c), max_len + 1) for c in TRAIN_COLUMNS}
    val_table = _read_table(root / "val.parquet", VAL_COLUMNS)
    val = {c: pad_left(val_table.column(f"history_{c}"), max_len) for c in TRAIN_COLUMNS}
    for c in ("target_item", "target_type"):
        val[c] = val_table.column(c).to_numpy().astype(np.int64)
    data = SequenceData(root, event_types, targets, max_len, int(meta["vocab_size"]), train, val)
    if (root / ITEM_FEATURES_FILE).is_file():
        data.item_features, data.feature_columns = load_item_features(root, data.vocab_size)
        data.n_features = len(data.feature_columns)
    for split, arrays in (("train", train), ("val", val)):
        top = int(arrays["items"].max(initial=0))
        if top >= data.vocab_size:
            raise ModelError(f"{root / (split + '.parquet')}: item id {top} >= vocab_size "
                             f"{data.vocab_size} of {meta_path}")
    return data


def load_item_features(root: Path, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`item_features.parquet` + `feature_vocab.parquet` -> ((vocab_size, K) token ids of each
    item, (n_features,) column id of each token: 1.. in sorted column-name order, 0 = padding).

    Items without a row (not in the catalogue) get no features: they still score, from their
    own embedding alone."""
    import pyarrow.compute as pc

    table = _read_table(root / ITEM_FEATURES_FILE, ("index", "features"))
    names = _read_table(root / FEATURE_VOCAB_FILE, ("feature", "id"))
    index = table.column("index").to_numpy().astype(np.int64)
    if len(index) and (index.min() < 0 or index.max() >= vocab_size):
        raise ModelError(f"{root / ITEM_FEATURES_FILE}: item index outside 0..{vocab_size - 1}")
    width = int(pc.max(pc.list_value_length(table.column("features"))).as_py() or 0)
    padded = pad_left(table.column("features"), max(width, 1))
    out = np.zeros((vocab_size, padded.shape[1]), dtype=np.int64)
    out[index] = padded
    ids = names.column("id").to_numpy().astype(np.int64)
    column_of_name = [name.split("=", 1)[0] for name in names.column("feature").to_pylist()]
    column_ids = {c: i + 1 for i, c in enumerate(sorted(set(column_of_name)))}
    columns = np.zeros(int(max(ids.max(initial=0), out.max(initial=0))) + 1, dtype=np.int64)
    columns[ids] = [column_ids[c] for c in column_of_name]
    return out, columns


class IndexDataset(torch.utils.data.Dataset):
    """Row indices; the collate function slices the padded arrays (one copy per batch)."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, index: int) -> int:
        return index


class LengthBucketSampler(torch.utils.data.Sampler):
    """Every row once per epoch, ordered so that consecutive `batch_size` rows have similar
    lengths; the order of the batches is random. Deterministic given (seed, epoch).

    A plain index sampler (not a batch sampler): the DataLoader still batches it, and under
    DDP Lightning wraps it in a `DistributedSamplerWrapper` that deals rows to the ranks.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0,
                 pool_batches: int = BUCKET_POOL_BATCHES) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.pool = batch_size * pool_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at each epoch start
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i : i + self.batch_size] for i in range(0, len(pool),
                                                                      self.batch_size)]
        for index in rng.permutation(len(batches)):
            yield from batches[index].tolist()


def _trim(arrays: dict[str, torch.Tensor], items_key: str) -> dict[str, torch.Tensor]:
    """Drop the leading columns that are padding in every row of the batch."""
    width = int((arrays[items_key] != PAD).sum(1).max().clamp(min=1))
    return {k: (v[:, -width:] if v.dim() == 2 else v) for k, v in arrays.items()}


class TrainCollate:
    """Batch of training rows -> inputs, next-event targets and the loss masks."""

    def __init__(self, arrays: dict[str, np.ndarray], target_type_ids: list[int] | None,
                 positive_type_id: int | None, since_ts: int | None = None) -> None:
        self.arrays = {k: torch.from_numpy(v) for k, v in arrays.items()}
        self.target_type_ids = torch.tensor(target_type_ids) if target_type_ids else None
        self.positive_type_id = positive_type_id
        self.since_ts = since_ts  # targets before it are history only (the warm window)

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(indices)
        rows = _trim({k: v[index] for k, v in self.arrays.items()}, "items")  # (B, T+1)
        next_items, next_types = rows["items"][:, 1:], rows["types"][:, 1:]  # (B, T)
        is_target = (next_items != PAD) & (rows["items"][:, :-1] != PAD)
        if self.target_type_ids is not None:
            is_target = is_target & torch.isin(next_types, self.target_type_ids)
        if self.since_ts is not None:
            is_target = is_target & (rows["ts"][:, 1:] >= self.since_ts)
        return {
            "items": rows["items"][:, :-1], "types": rows["types"][:, :-1],
            "ts": rows["ts"][:, :-1], "next_items": next_items,
            "next_types": next_types,  # (B, T) the query: which kind of event is predicted
            "item_mask": is_target,  # (B, T) positions scored by the item loss
            "purchase_label": (next_types == (self.positive_type_id or -1)).float(),
        }


class ValCollate:
    """Batch of validation examples: left-padded history and the target."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = {k: torch.from_numpy(v) for k, v in arrays.items()}

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        index = torch.tensor(indices)
        return _trim({k: v[index] for k, v in self.arrays.items()}, "items")


def rows_with_targets(data: SequenceData, target_type_ids: list[int] | None,
                      since_ts: int | None = None) -> np.ndarray:
    """Indices of training rows with at least one scored position (others only cost time)."""
    items, types = data.train["items"], data.train["types"]
    has_next = (items[:, 1:] != PAD) & (items[:, :-1] != PAD)
    if target_type_ids is not None:
        has_next &= np.isin(types[:, 1:], target_type_ids)
    if since_ts is not None:
        has_next &= data.train["ts"][:, 1:] >= since_ts
    return np.flatnonzero(has_next.any(1))


def window_start(data: SequenceData, window_days: float) -> int:
    """Unix seconds `window_days` before the newest training event: the warm window."""
    return int(data.train["ts"].max(initial=0) - window_days * SECONDS_PER_DAY)


def make_loaders(data: SequenceData, batch_size: int, finetune: bool, num_workers: int,
                 seed: int = 0, since_ts: int | None = None):
    """(train DataLoader, val DataLoader). Lightning adds DistributedSamplers under DDP.

    `since_ts`: only targets at or after it are scored (older events stay as history).
    """
    from torch.utils.data import DataLoader

    target_ids = data.target_type_ids if finetune else None
    keep = rows_with_targets(data, target_ids, since_ts)
    if not len(keep):
        raise ModelError(f"{data.root / 'train.parquet'}: no training target in the window "
                         f"(since unix {since_ts}); widen retrain.window_days")
    train_arrays = {k: v[keep] for k, v in data.train.items()}
    positive = data.type_id(data.positive_event_type)
    common = {"num_workers": num_workers, "persistent_workers": num_workers > 0}
    lengths = (train_arrays["items"] != PAD).sum(1)
    sampler = LengthBucketSampler(lengths, batch_size, seed)
    train = DataLoader(IndexDataset(len(keep)), batch_size=batch_size, sampler=sampler,
                       collate_fn=TrainCollate(train_arrays, target_ids, positive, since_ts),
                       **common)
    val = DataLoader(IndexDataset(len(data.val["items"])), batch_size=batch_size *
                     VAL_BATCH_FACTOR, shuffle=False, collate_fn=ValCollate(data.val), **common)
    return train, val

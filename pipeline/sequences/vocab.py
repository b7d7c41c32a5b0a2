"""Item vocabulary that stays stable across retrains.

Token ids 0 PAD, 1 MASK, 2 UNK are reserved; items start at 3. Given the previous
vocabulary (the champion's, shipped with every model), every known item keeps its index
and items never seen before are appended after the largest known index, ordered by first
appearance in the data (earliest timestamp), then by item id, so the same data always
gives the same vocabulary. Items of the previous vocabulary that are absent from the new
data stay in it: their embeddings exist in the champion and their indices must not move.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import InputError

PAD_TOKEN = 0
MASK_TOKEN = 1
UNK_TOKEN = 2
FIRST_ITEM_TOKEN = 3
VOCAB_FILE = "vocab.parquet"
VOCAB_SCHEMA = pa.schema([("item_id", pa.string()), ("index", pa.int32())])


@dataclass(frozen=True)
class Vocabulary:
    """`table` (item_id string, index int32, sorted by index) and the data's token ids.

    Attributes:
        table: the full vocabulary as written to `vocab.parquet`.
        token_of_code: (n_data_items,) int32 token of each item code of the current data.
        n_known: data items already in the previous vocabulary.
        n_new: data items appended now.
    """

    table: pa.Table
    token_of_code: np.ndarray
    n_known: int
    n_new: int

    @property
    def vocab_size(self) -> int:
        """`max(index) + 1` (the reserved tokens count even without items)."""
        if self.table.num_rows == 0:
            return FIRST_ITEM_TOKEN
        return int(pc.max(self.table.column("index")).as_py()) + 1

    @property
    def oov_share(self) -> float:
        """Share of the data's distinct items that the previous vocabulary lacked."""
        total = self.n_known + self.n_new
        return self.n_new / total if total else 0.0


def resolve_vocab_path(path: str | Path | None) -> Path | None:
    """The vocabulary file a `previous_vocab` setting points to, or None.

    A folder stands for its `vocab.parquet`; an empty folder (first training, no champion
    yet) means no previous vocabulary. A file path must exist.
    """
    if path is None or str(path) == "":
        return None
    path = Path(path)
    if path.is_dir():
        candidate = path / VOCAB_FILE
        return candidate if candidate.is_file() else None
    if not path.is_file():
        raise InputError(f"{path}: previous vocabulary not found (sequences.previous_vocab)")
    return path


def read_vocab(path: Path) -> pa.Table:
    """Read and check a `vocab.parquet`.

    Raises:
        InputError: missing columns, duplicate ids or indices, or reserved indices used.
    """
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a readable parquet vocabulary: {exc}") from None
    missing = [name for name in VOCAB_SCHEMA.names if name not in table.column_names]
    if missing:
        raise InputError(f"{path}: vocabulary lacks column(s) {missing} (rule: vocab schema)")
    table = table.select(VOCAB_SCHEMA.names).cast(VOCAB_SCHEMA)
    for column in VOCAB_SCHEMA.names:
        if table.column(column).null_count:
            raise InputError(f"{path}: null {column} in vocabulary (rule: vocab schema)")
        if pc.count_distinct(table.column(column)).as_py() != table.num_rows:
            raise InputError(f"{path}: duplicate {column} in vocabulary (rule: unique {column})")
    if table.num_rows and pc.min(table.column("index")).as_py() < FIRST_ITEM_TOKEN:
        raise InputError(
            f"{path}: vocabulary uses reserved index < {FIRST_ITEM_TOKEN} (rule: reserved tokens)"
        )
    return table.sort_by("index")


def build_vocab(
    item_ids: pa.Array, first_seen_ns: np.ndarray, previous: pa.Table | None = None
) -> Vocabulary:
    """Vocabulary over the data's items, extending `previous` when given.

    Args:
        item_ids: (n_data_items,) distinct item ids of the current data, by item code.
        first_seen_ns: (n_data_items,) earliest timestamp of each item, by item code.
        previous: a checked previous vocabulary (`read_vocab`), or None.
    """
    previous = previous if previous is not None else VOCAB_SCHEMA.empty_table()
    n_items = len(item_ids)
    position = pc.index_in(item_ids, value_set=previous.column("item_id").combine_chunks())
    known = position.is_valid().to_numpy(zero_copy_only=False)
    token = np.zeros(n_items, dtype=np.int32)
    previous_index = previous.column("index").to_numpy()
    token[known] = previous_index[position.filter(position.is_valid()).to_numpy()]

    new_codes = np.flatnonzero(~known)
    new_items = pa.table(
        {
            "code": pa.array(new_codes, pa.int64()),
            "first_seen": pa.array(first_seen_ns[new_codes], pa.int64()),
            "item_id": item_ids.take(pa.array(new_codes, pa.int64())),
        }
    ).sort_by([("first_seen", "ascending"), ("item_id", "ascending")])
    start = int(previous_index.max()) + 1 if len(previous_index) else FIRST_ITEM_TOKEN
    sorted_codes = new_items.column("code").to_numpy()
    token[sorted_codes] = start + np.arange(len(sorted_codes), dtype=np.int32)

    appended = pa.table(
        {"item_id": new_items.column("item_id"), "index": pa.array(token[sorted_codes])},
        schema=VOCAB_SCHEMA,
    )
    table = pa.concat_tables([previous, appended]).combine_chunks()
    return Vocabulary(table, token, n_known=int(known.sum()), n_new=len(new_codes))


def first_seen(item: np.ndarray, ts_ns: np.ndarray, n_items: int) -> np.ndarray:
    """(n_items,) earliest timestamp of each item code."""
    earliest = np.full(n_items, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(earliest, item, ts_ns)
    return earliest

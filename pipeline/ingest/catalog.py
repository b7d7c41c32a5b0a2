"""The item catalogue: side features of items (category, brand, price...), when a source has one.

Three ways in, merged on `item_id` into `<out>/catalog.parquet` by the ingest stage:
- the synthetic shop's own catalogue;
- `data.catalog_path`: a csv, parquet or json file (or a folder holding exactly one) with an
  `item_id` column plus attribute columns; json is the S3-Rec `item2attributes` layout,
  `{item_id: [attribute, ...]}`, read as one list column `attributes`;
- `data.item_columns`: event columns that describe the item (Taobao's `category_id`): each
  item takes the value of its first event (file order).
Which columns become model features, and how numbers are bucketed, is `build_sequences`'
business (`sequences.item_features`); ingest keeps what it read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.params import DataParams

CATALOG_SUFFIXES = (".csv", ".parquet", ".json")
LIST_COLUMN = "attributes"  # the json layout's one column


def catalog_file(path: str | None) -> Path | None:
    """The catalogue file named by `data.catalog_path`; None when there is none.

    A folder stands for the one catalogue file in it (an empty folder, or only a README, means
    no catalogue: the default `data/catalog/`)."""
    if not path:
        return None
    where = Path(path)
    if where.is_file():
        return where
    if not where.is_dir():
        raise InputError(f"{where}: data.catalog_path does not exist (rule catalog_not_found)")
    found = sorted(p for p in where.iterdir() if p.suffix in CATALOG_SUFFIXES)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(f"{where}: {len(found)} catalogue files ({names}); keep one "
                         "(rule catalog_ambiguous)")
    return found[0] if found else None


def read_catalog_file(path: Path) -> pd.DataFrame:
    """One catalogue file as a frame with an `item_id` string column."""
    import pandas as pd

    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise InputError(f"{path}: json catalogue must map item_id -> [attributes] "
                                 "(rule catalog_layout)")
            frame = pd.DataFrame({
                "item_id": list(raw),
                LIST_COLUMN: [[str(v) for v in (a if isinstance(a, list) else [a])]
                              for a in raw.values()],
            })
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, sep=None, engine="python", dtype={"item_id": str})
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(
            f"{path}: not a readable catalogue ({exc}) (rule catalog_unreadable)") from None
    if "item_id" not in frame.columns:
        raise InputError(f"{path}: catalogue has no item_id column (columns: "
                         f"{list(frame.columns)}) (rule catalog_no_item_id)")
    frame["item_id"] = frame["item_id"].astype("string")
    return frame


def items_from_events(events: pd.DataFrame, columns: list[str], where: str) -> pd.DataFrame:
    """Per item, the value of `columns` at its first event (file order)."""
    missing = [c for c in columns if c not in events.columns]
    if missing:
        raise InputError(f"{where}: data.item_columns {missing} are not event columns "
                         f"(columns: {list(events.columns)}) (rule item_column_missing)")
    first = events.drop_duplicates("item_id", keep="first")
    return first[["item_id", *columns]].astype({"item_id": "string"}).reset_index(drop=True)


def build_catalog(data: DataParams, events: pd.DataFrame,
                  own: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """Merge the source's own catalogue, `data.catalog_path` and `data.item_columns`."""
    parts = [] if own is None else [own.astype({"item_id": "string"})]
    path = catalog_file(data.catalog_path)
    if path is not None:
        parts.append(read_catalog_file(path))
    if data.item_columns:
        parts.append(items_from_events(events, list(data.item_columns), str(data.path)))
    if not parts:
        return None
    catalog = parts[0]
    for part in parts[1:]:
        extra = [c for c in part.columns if c == "item_id" or c not in catalog.columns]
        catalog = catalog.merge(part[extra], on="item_id", how="outer")
    return catalog

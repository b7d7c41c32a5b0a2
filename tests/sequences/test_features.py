"""Item side features: catalogue columns -> feature tokens per vocabulary item."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.errors import InputError
from pipeline.sequences.features import build_item_features

VOCAB = pa.table({"item_id": ["a", "b", "c", "d"], "index": pa.array([3, 4, 5, 6], pa.int32())})
CATALOG = pa.table({
    "item_id": ["b", "a", "c", "z"],  # d is not in the catalogue, z is not in the vocabulary
    "brand": ["Korex", "Korex", None, "Astra"],
    "price": [1.0, 10.0, 100.0, None],
    "attributes": [["7", "9"], [], ["9"], ["1"]],
})


def test_tokens_per_item_with_unknowns_buckets_and_lists():
    built = build_item_features(CATALOG, VOCAB, ["brand", "price", "attributes"], ["price"],
                                n_buckets=2, source="catalog.parquet")
    names = dict(zip(built.vocab["id"].to_pylist(), built.vocab["feature"].to_pylist(),
                     strict=True))
    rows = {i: sorted(names[t] for t in toks) for i, toks in
            zip(built.table["index"].to_pylist(), built.table["features"].to_pylist(),
                strict=True)}
    assert rows == {
        3: ["attributes=?", "brand=Korex", "price=q1"],  # a: 10.0 is above the median
        4: ["attributes=7", "attributes=9", "brand=Korex", "price=q0"],
        5: ["attributes=9", "brand=?", "price=q1"],  # a missing brand is its own token
    }  # d has no row (not in the catalogue): it scores from its own embedding
    assert 0 not in names and built.stats["items_with_features"] == 3


def test_the_same_catalogue_gives_the_same_ids():
    first = build_item_features(CATALOG, VOCAB, ["brand"], [], 4, "c")
    second = build_item_features(CATALOG.take([3, 2, 1, 0]), VOCAB, ["brand"], [], 4, "c")
    assert first.table.equals(second.table) and first.vocab.equals(second.vocab)


def test_a_feature_column_missing_from_the_catalogue_is_named():
    with pytest.raises(InputError, match=r"catalog.parquet: sequences.item_features names "
                                         r"\['colour'\]"):
        build_item_features(CATALOG, VOCAB, ["brand", "colour"], [], 4, "catalog.parquet")

"""The synthetic shop's catalogue: items with category, brand, price, title and relations.

Built once per run from `SyntheticParams` and a seeded generator; the shopper simulation in
`pipeline.ingest.synthetic` walks these relations:

- popularity: Zipf-like within each category (an item's weight is `1 / rank**zipf_exponent`,
  ranks shuffled so item ids carry no popularity information);
- similar items: each item sits on a ring of its category's items (in an order unrelated to
  popularity) and its `n_similar` nearest ring neighbours are "similar" (what a shopper
  compares it with);
- complement: each category has a complement category (phones -> phone cases) and each item
  one fixed complement item drawn uniformly from it, so the pair is invisible to popularity;
- consumables: a share of categories is bought again and again (coffee, pet food).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.params import SyntheticParams

# fmt: off
CONSUMABLE_NAMES = (
    "Coffee", "Tea", "Snacks", "Pet Food", "Shampoo", "Vitamins", "Detergent", "Diapers",
    "Toothpaste", "Batteries", "Printer Ink", "Cat Litter",
)
DURABLE_NAMES = (
    "Headphones", "Phones", "Phone Cases", "Laptops", "Chargers", "Sneakers", "Jackets",
    "Backpacks", "Lamps", "Cookware", "Kettles", "Toys", "Books", "Watches", "Cameras",
    "Tripods", "Desk Chairs", "Monitors", "Keyboards", "Mice", "Bikes", "Helmets", "Tents",
    "Yoga Mats",
)
# fmt: on
BRAND_HEADS = ("Nor", "Vel", "Astra", "Blu", "Kor", "Zen", "Lum", "Oro", "Pix", "Terra")
BRAND_TAILS = ("a", "ex", "ion", "ora", "ix", "wave", "line", "co")

# Category sizes: Dirichlet shares with this concentration (higher = more even sizes).
CATEGORY_SIZE_CONCENTRATION = 2.0
# Category appeal (sessions, interests) = size share x lognormal noise of this sigma.
CATEGORY_APPEAL_SIGMA = 0.5
# Brands are Zipf-distributed too: a few big brands, a long tail.
BRAND_ZIPF_EXPONENT = 1.0
# Typical prices (median, log-sigma across categories; log-sigma of items within a category).
DURABLE_PRICE_MEDIAN, DURABLE_PRICE_SIGMA = 40.0, 1.0
CONSUMABLE_PRICE_MEDIAN, CONSUMABLE_PRICE_SIGMA = 8.0, 0.5
ITEM_PRICE_SIGMA = 0.35
MIN_PRICE = 0.99


@dataclass(frozen=True)
class Catalog:
    """Items and their relations; arrays are indexed by item index `0..n_items-1`."""

    item_ids: pa.Array  # (n_items,) string, e.g. "i0042"
    category: np.ndarray  # (n_items,) int32
    brand: np.ndarray  # (n_items,) int32
    price: np.ndarray  # (n_items,) float64
    titles: pa.Array  # (n_items,) string, e.g. "Korex Headphones #12"
    category_names: pa.Array  # (n_categories,) string
    brand_names: pa.Array  # (n_brands,) string
    category_appeal: np.ndarray  # (n_categories,) float64, sums to 1
    consumable: np.ndarray  # (n_categories,) bool
    similar: np.ndarray  # (n_items, n_similar) int32
    complement: np.ndarray  # (n_items,) int32
    zipf_key: np.ndarray  # (n_items,) float64, increasing: category + within-category CDF
    zipf_item: np.ndarray  # (n_items,) int32, item at each `zipf_key` position

    def draw_items(self, rng: np.random.Generator, categories: np.ndarray) -> np.ndarray:
        """One Zipf-popular item per entry of `categories` (inverse-CDF, one searchsorted)."""
        keys = categories + rng.random(categories.shape[0])
        return self.zipf_item[np.searchsorted(self.zipf_key, keys, side="left")]

    def draw_categories(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` categories drawn by appeal."""
        return rng.choice(self.category_appeal.shape[0], size=n, p=self.category_appeal)

    def frame(self) -> pd.DataFrame:
        """The catalogue table: item_id, title, category, brand, price."""
        table = pa.table(
            {
                "item_id": self.item_ids,
                "title": self.titles,
                "category": self.category_names.take(self.category),
                "brand": self.brand_names.take(self.brand),
                "price": self.price,
            }
        )
        return table.to_pandas()


def padded_ids(prefix: str, n: int) -> pa.Array:
    """`prefix` + zero-padded 0..n-1, so string order equals numeric order."""
    width = len(str(max(n - 1, 0)))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _names(pool: tuple[str, ...], n: int) -> list[str]:
    """`n` distinct names from `pool`, numbered once the pool is used up."""
    return [
        pool[j % len(pool)] + (f" {j // len(pool) + 1}" if j >= len(pool) else "") for j in range(n)
    ]


def _category_names(consumable: np.ndarray) -> pa.Array:
    n_consumable = int(consumable.sum())
    consumables = iter(_names(CONSUMABLE_NAMES, n_consumable))
    durables = iter(_names(DURABLE_NAMES, consumable.shape[0] - n_consumable))
    return pa.array([next(consumables) if flag else next(durables) for flag in consumable])


def _brand_names(n: int) -> pa.Array:
    pool = tuple(head + tail for head in BRAND_HEADS for tail in BRAND_TAILS)
    return pa.array(_names(pool, n))


def _group_starts(sorted_groups: np.ndarray, n_groups: int) -> np.ndarray:
    """First position of each group in an array sorted by group (n_groups + 1 offsets)."""
    return np.searchsorted(sorted_groups, np.arange(n_groups + 1))


def _zipf_table(category, n_categories, exponent, rng) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF table: items grouped by category, in a random popularity order."""
    order = np.lexsort((rng.random(category.shape[0]), category))
    grouped = category[order]
    starts = _group_starts(grouped, n_categories)
    rank = np.arange(order.shape[0]) - starts[grouped]  # 0 = most popular in its category
    weight = (rank + 1.0) ** -exponent
    cumulative = np.cumsum(weight)
    before = np.concatenate(([0.0], cumulative))[starts[grouped]]
    totals = cumulative[starts[1:] - 1] - before[starts[1:] - 1]
    cdf = (cumulative - before) / totals[grouped]
    cdf[starts[1:] - 1] = 1.0  # exact ends so a draw never spills into the next category
    return grouped + cdf, order.astype(np.int32)


def _similar_items(category, n_categories, n_similar, rng) -> np.ndarray:
    """Ring neighbours (+1, -1, +2, -2, ...) in a random order of each category's items."""
    order = np.lexsort((rng.random(category.shape[0]), category))
    grouped = category[order]
    starts = _group_starts(grouped, n_categories)
    size = np.diff(starts)[grouped]
    ring_pos = np.arange(order.shape[0]) - starts[grouped]
    steps = np.arange(1, n_similar + 1)
    offsets = np.where(steps % 2 == 1, (steps + 1) // 2, -(steps // 2))  # 1, -1, 2, -2, ...
    neighbour_pos = starts[grouped][:, None] + (ring_pos[:, None] + offsets) % size[:, None]
    similar = np.empty((order.shape[0], n_similar), dtype=np.int32)
    similar[order] = order[neighbour_pos]
    return similar


def _complements(category, n_categories, rng) -> np.ndarray:
    """Each item's complement: a uniform item of its category's complement category."""
    cycle = rng.permutation(n_categories)
    complement_category = np.empty(n_categories, dtype=np.int64)
    complement_category[cycle] = np.roll(cycle, -1)  # a derangement when n_categories > 1
    order = np.argsort(category, kind="stable")
    starts = _group_starts(category[order], n_categories)
    target = complement_category[category]
    size = starts[target + 1] - starts[target]
    pick = starts[target] + (rng.random(category.shape[0]) * size).astype(np.int64)
    return order[pick].astype(np.int32)


def build_catalog(params: SyntheticParams, rng: np.random.Generator) -> Catalog:
    """Draw the catalogue for `params` (every category gets at least one item)."""
    n_items, n_categories = params.n_items, params.n_categories
    shares = rng.dirichlet(np.full(n_categories, CATEGORY_SIZE_CONCENTRATION))
    sizes = 1 + rng.multinomial(n_items - n_categories, shares)
    category = rng.permutation(np.repeat(np.arange(n_categories, dtype=np.int32), sizes))
    appeal = sizes * rng.lognormal(0.0, CATEGORY_APPEAL_SIGMA, n_categories)
    consumable = np.zeros(n_categories, dtype=bool)
    n_consumable = round(params.consumable_share * n_categories)
    consumable[rng.permutation(n_categories)[:n_consumable]] = True

    brand_weight = np.arange(1, params.n_brands + 1) ** -BRAND_ZIPF_EXPONENT
    brand = rng.choice(params.n_brands, size=n_items, p=brand_weight / brand_weight.sum())
    median = np.where(consumable, CONSUMABLE_PRICE_MEDIAN, DURABLE_PRICE_MEDIAN)
    sigma = np.where(consumable, CONSUMABLE_PRICE_SIGMA, DURABLE_PRICE_SIGMA)
    category_price = median * rng.lognormal(0.0, sigma)
    raw_price = category_price[category] * rng.lognormal(0.0, ITEM_PRICE_SIGMA, n_items)
    price = np.maximum(np.ceil(raw_price) - 0.01, MIN_PRICE).round(2)  # shop prices end in .99

    category_names = _category_names(consumable)
    brand_names = _brand_names(params.n_brands)
    numbers = pc.cast(pa.array(rng.integers(1, 100, n_items)), pa.string())
    titles = pc.binary_join_element_wise(
        brand_names.take(brand),
        category_names.take(category),
        pc.binary_join_element_wise("#", numbers, ""),
        " ",
    )
    zipf_key, zipf_item = _zipf_table(category, n_categories, params.zipf_exponent, rng)
    return Catalog(
        item_ids=padded_ids("i", n_items),
        category=category,
        brand=brand.astype(np.int32),
        price=price,
        titles=titles,
        category_names=category_names,
        brand_names=brand_names,
        category_appeal=appeal / appeal.sum(),
        consumable=consumable,
        similar=_similar_items(category, n_categories, params.n_similar, rng),
        complement=_complements(category, n_categories, rng),
        zipf_key=zipf_key,
        zipf_item=zipf_item,
    )

"""Shoppers' taste in the synthetic shop: a favourite brand and a price band per user.

Recency alone says a cart is of an item viewed in the session; taste says *which* one.
Each user has a favourite brand (drawn by brand size: big brands have more fans) and a
preferred price level within a category (`z`, in standard deviations of the item prices
around their category's typical price). A user's affinity for an item is

    a(u, i) = brand_affinity * [brand(i) == favourite(u)] - price_affinity * (r(i) - z(u))**2 / 2

with `r(i)` the item's relative price. Taste acts where a shopper chooses:

- which popular item of a category they click (the best of a `consideration_set` of drawn
  items, by affinity plus Gumbel noise: a listing page, one click);
- which viewed items they cart and which carts they buy: each with probability
  `base_rate * exp(a) / mean(exp(a))` over the batch, so the funnel rates stay at
  `cart_rate` / `purchase_rate` on average while carts and purchases skew to the taste.

A model that reads a user's history can learn their brand and price band (from views,
carts and purchases) and rank the session's viewed items better than recency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.ingest.synthetic_catalog import Catalog
from pipeline.params import SyntheticParams

MIN_PRICE_SPREAD = 1e-9  # a category whose items all cost the same has no price spread


@dataclass(frozen=True)
class Taste:
    """Per-user taste and per-item features it is matched against."""

    favourite_brand: np.ndarray  # (n_users,) int
    price_band: np.ndarray  # (n_users,) float, preferred relative price (std units)
    item_brand: np.ndarray  # (n_items,) int
    relative_price: np.ndarray  # (n_items,) float, log-price vs. category mean (std units)
    expected_weight: np.ndarray  # (n_users,) mean exp(a) over the catalogue, per user
    brand_affinity: float
    price_affinity: float
    consideration_set: int

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """a(u, i) for aligned (or broadcastable) user and item index arrays."""
        loyal = self.item_brand[items] == self.favourite_brand[users]
        gap = self.relative_price[items] - self.price_band[users]
        return self.brand_affinity * loyal - self.price_affinity * gap**2 / 2

    def choose(self, rng, users, items, base_rate: float, per_user: bool) -> np.ndarray:
        """Bool mask: each (user, item) kept with probability base_rate * exp(a) / norm.

        `per_user`: norm = the user's mean weight over the catalogue, so each shopper keeps
        about the same number of carts and taste decides which; otherwise the mean over
        these rows (for purchases: carts already lean to the taste, the mean keeps the rate).
        """
        if items.shape[0] == 0:
            return np.zeros(0, dtype=bool)
        weight = np.exp(self.affinity(users, items))
        norm = self.expected_weight[users] if per_user else weight.mean()
        probability = np.minimum(1.0, base_rate * weight / norm)
        return rng.random(items.shape[0]) < probability

    def pick(self, rng, users: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """One item per row of `candidates` (n, k): the best by affinity + Gumbel noise."""
        score = self.affinity(users[:, None], candidates) + rng.gumbel(size=candidates.shape)
        return candidates[np.arange(candidates.shape[0]), score.argmax(1)]


def draw_taste(params: SyntheticParams, catalog: Catalog, rng: np.random.Generator) -> Taste:
    """Favourite brands by brand size, price bands standard normal."""
    n_brands = int(catalog.brand.max()) + 1
    brand_size = np.bincount(catalog.brand, minlength=n_brands).astype(float)
    favourite = rng.choice(n_brands, size=params.n_users, p=brand_size / brand_size.sum())
    log_price = np.log(catalog.price)
    n_categories = catalog.category_appeal.shape[0]
    count = np.bincount(catalog.category, minlength=n_categories)
    mean = np.bincount(catalog.category, log_price, n_categories) / np.maximum(count, 1)
    spread = log_price - mean[catalog.category]
    sd = np.sqrt(np.bincount(catalog.category, spread**2, n_categories) / np.maximum(count, 1))
    relative = spread / np.maximum(sd[catalog.category], MIN_PRICE_SPREAD)
    price_band = rng.standard_normal(params.n_users)
    # E[exp(a)] over a uniform catalogue item, brand and price taken as independent; the
    # price term is the Gaussian integral for a standard normal relative price.
    fan_share = brand_size[favourite] / brand_size.sum()
    brand_term = 1.0 + fan_share * np.expm1(params.brand_affinity)
    c = params.price_affinity
    price_term = np.exp(-c * price_band**2 / (2 * (1 + c))) / np.sqrt(1 + c)
    return Taste(
        favourite_brand=favourite,
        price_band=price_band,
        expected_weight=brand_term * price_term,
        item_brand=catalog.brand,
        relative_price=relative,
        brand_affinity=params.brand_affinity,
        price_affinity=params.price_affinity,
        consideration_set=params.consideration_set,
    )

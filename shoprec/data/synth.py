"""A simulated shop: the built-in data that ``make demo`` and the tests run on.

The simulation has structure a model can learn, so a trained model beats popularity:

- every shopper likes two or three categories (a sparse Dirichlet taste vector);
- every product has a few "next" products (same category, plus one complement from a
  neighbouring category) that shoppers browse to from it, so item-to-item transitions carry signal;
- searches are built from the words of the product the shopper wants; the result list is ranked by
  word overlap plus noise, and clicks depend on relevance, taste and position (a position bias).

Everything is drawn from one ``numpy`` generator, so a seed gives the same shop byte for byte.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.data.schema import CATALOG_SCHEMA, partition_name

log = logging.getLogger(__name__)

CATEGORIES = {
    "coffee": ["espresso", "beans", "grinder", "mug", "filter", "kettle", "roast", "capsules"],
    "running": ["shoes", "socks", "shorts", "jacket", "watch", "bottle", "cap", "insoles"],
    "skincare": ["serum", "cream", "cleanser", "toner", "mask", "sunscreen", "balm", "oil"],
    "garden": ["hose", "shovel", "gloves", "seeds", "planter", "pruner", "soil", "sprinkler"],
    "kitchen": ["pan", "knife", "board", "pot", "whisk", "blender", "spatula", "tray"],
    "gaming": ["controller", "headset", "keyboard", "mouse", "chair", "monitor", "console", "pad"],
    "baby": ["stroller", "bottle", "diaper", "blanket", "crib", "onesie", "pacifier", "carrier"],
    "camping": ["tent", "lantern", "stove", "sleeping-bag", "backpack", "compass", "tarp", "cooler"],
    "office": ["notebook", "pen", "stapler", "lamp", "desk", "binder", "marker", "organizer"],
    "pets": ["leash", "collar", "kibble", "litter", "toy", "bed", "bowl", "brush"],
    "audio": ["speaker", "earbuds", "turntable", "amplifier", "cable", "microphone", "radio", "soundbar"],
    "cycling": ["helmet", "lock", "pump", "saddle", "light", "tyre", "bell", "gloves"],
}
ADJECTIVES = ["classic", "pro", "mini", "organic", "wireless", "compact", "deluxe", "eco", "ultra",
              "soft", "steel", "bamboo", "smart", "travel", "premium", "basic"]
BRANDS = ["acme", "northwind", "fjord", "kestrel", "lumen", "orca", "tundra", "zephyr", "maple",
          "vega", "atlas", "nimbus"]
SIZES = ["s", "m", "l", "xl", "250g", "500g", "1kg", "2-pack", "3-pack", "1l"]


@dataclass
class Catalog:
    item_ids: list[str]
    titles: list[str]
    categories: np.ndarray  # category index per item
    words: list[set[str]]
    popularity: np.ndarray  # relative popularity within its category
    next_items: np.ndarray  # (n_items, n_next) item indices


def make_catalog(rng: np.random.Generator, n_items: int, n_next: int = 3) -> Catalog:
    cat_names = list(CATEGORIES)
    n_cat = len(cat_names)
    categories = np.arange(n_items) % n_cat
    rng.shuffle(categories)
    item_ids, titles, words = [], [], []
    for i, c in enumerate(categories):
        noun = rng.choice(CATEGORIES[cat_names[c]])
        brand, adj, size = rng.choice(BRANDS), rng.choice(ADJECTIVES), rng.choice(SIZES)
        title = f"{brand} {adj} {noun} {size}"
        item_ids.append(f"p{i:05d}")
        titles.append(title)
        words.append(set(title.split()))
    popularity = rng.pareto(1.2, size=n_items) + 1.0
    next_items = np.zeros((n_items, n_next), dtype=np.int64)
    by_cat = [np.flatnonzero(categories == c) for c in range(n_cat)]
    for i, c in enumerate(categories):
        same = by_cat[c][by_cat[c] != i]
        if len(same) == 0:
            same = np.delete(np.arange(n_items), i)
        complement = by_cat[(c + 1) % n_cat]
        picks = list(rng.choice(same, size=n_next - 1, replace=len(same) < n_next - 1))
        picks.append(rng.choice(complement))
        next_items[i] = picks
    return Catalog(item_ids, titles, categories, words, popularity, next_items)


def write_catalog(catalog: Catalog, rng: np.random.Generator, path: Path) -> None:
    cat_names = list(CATEGORIES)
    table = pa.table(
        {
            "item_id": catalog.item_ids,
            "title": catalog.titles,
            "category": [cat_names[c] for c in catalog.categories],
            "brand": [t.split()[0] for t in catalog.titles],
            "price": np.round(rng.lognormal(3.0, 0.8, size=len(catalog.item_ids)), 2),
        },
        schema=CATALOG_SCHEMA,
    )
    pq.write_table(table, path)


class _Shop:
    """Draws sessions for one catalog; kept as a class only to hold the precomputed lookups."""

    def __init__(self, catalog: Catalog, rng: np.random.Generator):
        self.c, self.rng = catalog, rng
        n_cat = len(CATEGORIES)
        self.by_cat = [np.flatnonzero(catalog.categories == k) for k in range(n_cat)]
        self.cat_probs = []
        for members in self.by_cat:
            p = catalog.popularity[members]
            self.cat_probs.append(p / p.sum())

    def draw_item(self, taste: np.ndarray) -> int:
        k = self.rng.choice(len(taste), p=taste)
        return int(self.rng.choice(self.by_cat[k], p=self.cat_probs[k]))

    def search_results(self, query_words: set[str], n: int = 10) -> list[int]:
        overlap = np.fromiter((len(query_words & w) for w in self.c.words), dtype=float)
        score = overlap + 0.05 * np.log(self.c.popularity) + self.rng.gumbel(0, 0.3, len(overlap))
        return list(np.argsort(-score)[:n])

    def session(self, taste: np.ndarray, last_item: int | None) -> list[tuple[str, int | None, str | None, int | None]]:
        """One session as (event, item, query, position) tuples in time order."""
        rng, events = self.rng, []
        if rng.random() < 0.35:
            target = self.draw_item(taste)
            brand, adj, noun, _size = self.c.titles[target].split()
            query_words = {noun} | ({str(rng.choice([brand, adj]))} if rng.random() < 0.6 else set())
            query = " ".join(sorted(query_words))
            events.append(("search", None, query, None))
            results = self.search_results(query_words)
            clicked = []
            for pos, item in enumerate(results, start=1):
                events.append(("view", item, query, pos))
                relevance = len(query_words & self.c.words[item]) / len(query_words)
                liking = taste[self.c.categories[item]]
                p_click = (0.15 + 0.6 * relevance) * (0.4 + 0.6 * min(1.0, 3 * liking)) / pos**0.6
                if item == target:
                    p_click = max(p_click, 0.6)
                if rng.random() < p_click:
                    clicked.append((item, pos))
            for item, pos in clicked:
                events.append(("click", item, query, pos))
                self._funnel(events, item)
            current = clicked[-1][0] if clicked else None
        else:
            current = last_item if last_item is not None and rng.random() < 0.5 else self.draw_item(taste)
            events.append(("view", current, None, None))
            self._funnel(events, current)
        n_more = rng.geometric(0.3) - 1
        for _ in range(int(n_more)):
            if current is not None and rng.random() < 0.75:
                current = int(rng.choice(self.c.next_items[current]))
            else:
                current = self.draw_item(taste)
            events.append(("view", current, None, None))
            self._funnel(events, current)
        return events

    def _funnel(self, events: list, item: int) -> None:
        if self.rng.random() < 0.15:
            events.append(("add_to_cart", item, None, None))
            if self.rng.random() < 0.5:
                events.append(("purchase", item, None, None))


def synthesize(out: str | Path, users: int = 2000, items: int = 400, days: int = 14, seed: int = 0,
               start: str = "2026-11-01", p_active: float = 0.3) -> dict:
    """Write ``catalog.parquet`` and ``events/dt=DAY/events.jsonl.gz`` under ``out``; return counts."""
    if items < len(CATEGORIES) or users < 1 or days < 1:
        raise ValueError(f"need at least {len(CATEGORIES)} items, 1 user and 1 day (got {items}, {users}, {days})")
    out = Path(out)
    rng = np.random.default_rng(seed)
    catalog = make_catalog(rng, items)
    out.mkdir(parents=True, exist_ok=True)
    write_catalog(catalog, rng, out / "catalog.parquet")
    shop = _Shop(catalog, rng)
    n_cat = len(CATEGORIES)
    tastes = np.zeros((users, n_cat))
    for u in range(users):
        liked = rng.choice(n_cat, size=int(rng.integers(2, 4)), replace=False)
        tastes[u, liked] = rng.dirichlet(np.ones(len(liked)))
        tastes[u] = 0.9 * tastes[u] + 0.1 / n_cat
    last_item: dict[int, int] = {}
    day0 = datetime.fromisoformat(start).replace(tzinfo=timezone.utc)
    n_events, session_no = 0, 0
    for d in range(days):
        day = day0 + timedelta(days=d)
        rows = []
        for u in np.flatnonzero(rng.random(users) < p_active):
            session_no += 1
            t = day + timedelta(seconds=float(rng.uniform(0, 86000)))
            for event, item, query, pos in shop.session(tastes[u], last_item.get(u)):
                t += timedelta(seconds=float(rng.exponential(20.0)) + 1.0)
                if t >= day + timedelta(days=1):
                    break
                rows.append((t, {
                    "ts": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
                    "user_id": f"u{u:06d}",
                    "session_id": f"s{session_no:08d}",
                    "event": event,
                    "item_id": None if item is None else catalog.item_ids[item],
                    "query": query,
                    "position": pos,
                }))
                if item is not None and query is None:
                    last_item[u] = item
        rows.sort(key=lambda r: r[0])
        folder = out / "events" / partition_name(day.strftime("%Y-%m-%d"))
        folder.mkdir(parents=True, exist_ok=True)
        # mtime=0 keeps the gzip bytes identical for a seed.
        with open(folder / "events.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            for _, row in rows:
                f.write((json.dumps(row, separators=(",", ":")) + "\n").encode())
        n_events += len(rows)
    stats = {"users": users, "items": items, "days": days, "events": n_events, "seed": seed}
    log.info("synthesized shop: %s", stats)
    return stats

"""Features from accepted events: what the trainers and the evaluator read.

Writes to one folder:

- ``items.parquet``: the item vocabulary, ``idx`` 1..N (0 is padding), with title, category, count and
  ``attributes`` (category, brand and catalog attributes as tokens, see :func:`item_attribute_tokens`);
- ``sequences.parquet``: per shopper, the chronological item indices they interacted with
  (product views outside search, clicks, add-to-cart, purchases; a repeat of the previous item is
  dropped). Leave-one-out: the last item is the test target, the second last the validation target,
  the rest is training data. Shoppers with fewer than 3 items are left out (counted in ``stats.json``);
- ``search_pairs.parquet``: one row per (search, shown item): query, item, position, clicked, purchased;
- ``click_samples.parquet``: (recent history titles, item title, clicked) with sampled negatives, for
  the recommendation ranker;
- ``stats.json``: the counts above.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.data.ingest import read_events

log = logging.getLogger(__name__)

MIN_SEQUENCE = 3
HISTORY_TITLES = 5


def interactions(events: pd.DataFrame) -> pd.DataFrame:
    """The events that make up shoppers' sequences: product views outside search, clicks, carts, purchases."""
    is_interaction = events["event"].isin(["click", "add_to_cart", "purchase"]) | (
        (events["event"] == "view") & events["query"].isna())
    return events.loc[is_interaction, ["user_id", "ts", "item_id"]]


def interaction_sequences(rows: pd.DataFrame) -> pd.Series:
    """user_id -> list of item_id, chronological, consecutive repeats dropped."""
    df = rows[["user_id", "ts", "item_id"]].sort_values(["user_id", "ts"], kind="stable")
    repeat = (df["user_id"] == df["user_id"].shift()) & (df["item_id"] == df["item_id"].shift())
    df = df[~repeat]
    return df.groupby("user_id", sort=True)["item_id"].agg(list)


def search_pairs(events: pd.DataFrame) -> pd.DataFrame:
    """(query, item) pairs shown in search results, with whether they were clicked and bought."""
    shown = events[events["query"].notna() & events["item_id"].notna() & events["event"].isin(["view", "click"])]
    pairs = (shown.assign(clicked=shown["event"] == "click")
             .groupby(["session_id", "query", "item_id"], sort=True)
             .agg(position=("position", "min"), clicked=("clicked", "any"), user_id=("user_id", "first"))
             .reset_index())
    bought = events.loc[events["event"] == "purchase", ["session_id", "item_id"]].drop_duplicates()
    bought["purchased"] = True
    pairs = pairs.merge(bought, on=["session_id", "item_id"], how="left")
    pairs["purchased"] = pairs["purchased"].astype("boolean").fillna(False).astype(bool) & pairs["clicked"]
    return pairs


def click_samples(seqs: list[list[int]], titles: list[str], n_negatives: int, rng: np.random.Generator,
                  max_per_user: int = 5) -> pd.DataFrame:
    """Positives are a shopper's next training item after a history window; negatives are random items."""
    rows = []
    n_items = len(titles) - 1
    for seq in seqs:
        train = seq[:-2]
        if len(train) < 2:
            continue
        for t in rng.choice(np.arange(1, len(train)), size=min(max_per_user, len(train) - 1), replace=False):
            history = " ; ".join(titles[i] for i in train[max(0, t - HISTORY_TITLES):t])
            rows.append((history, int(train[t]), titles[train[t]], 1))
            for neg in rng.integers(1, n_items + 1, size=n_negatives):
                if neg not in seq:
                    rows.append((history, int(neg), titles[neg], 0))
    return pd.DataFrame(rows, columns=["history", "item_idx", "title", "clicked"])


def partial_features(ingested: str | Path, out: str | Path) -> dict:
    """What one partition (a day, or everything) contributes: its interactions and its search pairs.

    Partials are independent, so a month of logs is processed by parallel pods, one per day, and
    :func:`merge_features` joins them; shoppers' sequences may span days, which is why the merge
    and not the partial builds them.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    events = read_events(ingested).to_pandas()
    rows = interactions(events)
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), out / "interactions.parquet")
    pairs = search_pairs(events)
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False), out / "search_pairs.parquet")
    return {"events": len(events), "interactions": len(rows), "search_pairs": len(pairs)}


def item_attribute_tokens(catalog: pd.DataFrame, item_ids: list[str]) -> list[list[str]]:
    """Each item's catalog category, brand and attributes as tokens (``category=...``, ``brand=...``,
    ``attr=...``): what the sequential model's ``item_attributes`` option embeds."""
    columns = {f: catalog[f].to_dict() for f in ("category", "brand", "attributes") if f in catalog}
    out = []
    for i in item_ids:
        tokens = [f"{f}={columns[f].get(i)}" for f in ("category", "brand")
                  if f in columns and isinstance(columns[f].get(i), str) and columns[f].get(i)]
        extra = columns["attributes"].get(i) if "attributes" in columns else None
        if extra is not None and len(extra):
            tokens += [f"attr={a}" for a in extra]
        out.append(tokens)
    return out


def merge_features(partials: list[str | Path], catalog: str | Path, out: str | Path, n_negatives: int = 3,
                   seed: int = 0) -> dict:
    """Sequences, vocabulary, split, search pairs and click samples from the partials of all days."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = pd.concat([pd.read_parquet(Path(p) / "interactions.parquet") for p in partials], ignore_index=True)
    pairs = pd.concat([pd.read_parquet(Path(p) / "search_pairs.parquet") for p in partials], ignore_index=True)
    catalog = pq.read_table(catalog).to_pandas().set_index("item_id")
    per_user = interaction_sequences(rows)
    counts = pd.Series([i for s in per_user for i in s]).value_counts()
    item_ids = sorted(counts.index)
    idx = {item: i for i, item in enumerate(item_ids, start=1)}
    items = pd.DataFrame({
        "idx": np.arange(1, len(item_ids) + 1, dtype=np.int32),
        "item_id": item_ids,
        "title": [catalog["title"].get(i, i) for i in item_ids],
        "category": [catalog["category"].get(i) if "category" in catalog else None for i in item_ids],
        "count": [int(counts[i]) for i in item_ids],
        "attributes": item_attribute_tokens(catalog, item_ids),
    })
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), out / "items.parquet")

    kept = per_user[per_user.map(len) >= MIN_SEQUENCE]
    seqs = [[idx[i] for i in s] for s in kept]
    pq.write_table(pa.table({"user_id": list(kept.index), "items": pa.array(seqs, pa.list_(pa.int32()))}),
                   out / "sequences.parquet")

    pairs = pairs.sort_values(["session_id", "query", "item_id"], kind="stable", ignore_index=True)
    pairs["item_idx"] = pairs["item_id"].map(idx).fillna(0).astype(np.int32)
    pairs["title"] = [catalog["title"].get(i, i) for i in pairs["item_id"]]
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False), out / "search_pairs.parquet")

    titles = [""] + list(items["title"])
    samples = click_samples(seqs, titles, n_negatives, np.random.default_rng(seed))
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), out / "click_samples.parquet")

    stats = {
        "partitions": len(partials), "interactions_in": len(rows), "items": len(items), "users": int(len(per_user)),
        "users_kept": len(seqs), "users_too_short": int(len(per_user) - len(seqs)),
        "interactions": int(sum(map(len, seqs))),
        "search_pairs": len(pairs), "search_clicks": int(pairs["clicked"].sum()),
        "click_samples": len(samples),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("features: %s", stats)
    return stats


def build_features(ingested: str | Path, out: str | Path, n_negatives: int = 3, seed: int = 0) -> dict:
    """Features of everything ingested into one folder: one partial, merged."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        partial_features(ingested, tmp)
        return merge_features([tmp], Path(ingested) / "catalog.parquet", out, n_negatives=n_negatives, seed=seed)


def load_sequences(features: str | Path) -> tuple[list[str], list[list[int]]]:
    t = pq.read_table(Path(features) / "sequences.parquet")
    return t["user_id"].to_pylist(), t["items"].to_pylist()


def load_items(features: str | Path) -> pd.DataFrame:
    return pq.read_table(Path(features) / "items.parquet").to_pandas()

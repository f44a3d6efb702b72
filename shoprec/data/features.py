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
- ``item_counts.parquet``: per item, its count in all sequences, in the kept histories and as a test target;
- ``shards.json``: the shard manifest (each shard's files and row counts); with one shard the files above
  are in the folder itself, with more in ``shard-NNNNN/`` (:mod:`shoprec.data.shards`); read sequences
  and tables through it (:func:`load_sequences`, :func:`shoprec.data.shards.read_rows`);
- ``stats.json``: the counts above.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.data.ingest import read_events
from shoprec.data.interactions import (  # noqa: F401 (the features API, as before)
    HISTORY_TITLES,
    MIN_SEQUENCE,
    interaction_sequences,
    interactions,
    item_attribute_tokens,
    search_pairs,
)
from shoprec.data.shards import finish_features, read_share, shard_features, shopper_keys

log = logging.getLogger(__name__)

ROW_GROUP = 65536  # rows per Parquet row group in the day partials: the unit a features shard skips


def partial_features(ingested: str | Path, out: str | Path) -> dict:
    """What one partition (a day, or everything) contributes: its interactions and its search pairs.

    Partials are independent, so a month of logs is processed by parallel pods, one per day, and
    :func:`merge_features` joins them; shoppers' sequences may span days, which is why the merge
    and not the partial builds them.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    events = read_events(ingested).to_pandas()
    rows = _by_shard_key(interactions(events))
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), out / "interactions.parquet",
                   row_group_size=ROW_GROUP)
    pairs = _by_shard_key(search_pairs(events))
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False), out / "search_pairs.parquet",
                   row_group_size=ROW_GROUP)
    item_ids = sorted(rows["item_id"].dropna().unique())
    pq.write_table(pa.table({"item_id": pa.array(item_ids, pa.string())}), out / "items.parquet")
    return {"events": len(events), "interactions": len(rows), "search_pairs": len(pairs)}


def _by_shard_key(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with their shopper's shard key, sorted by it (stable: a shopper's rows keep their order), so a
    features shard reads only the row groups of its key range (:mod:`shoprec.data.shards`)."""
    df = df.assign(shard_key=shopper_keys(df["user_id"]))
    return df.sort_values("shard_key", kind="stable", ignore_index=True)


def merge_features(partials: list[str | Path], catalog: str | Path, out: str | Path, n_negatives: int = 3,
                   seed: int = 0) -> dict:
    """Sequences, vocabulary, split, search pairs and click samples from the partials of all days, in one pod:
    the sharded merge (:mod:`shoprec.data.shards`) with one shard, written in place."""
    shard_features(partials, catalog, 0, 1, out, n_negatives=n_negatives, seed=seed)
    return finish_features([out], catalog, out)


def build_features(ingested: str | Path, out: str | Path, n_negatives: int = 3, seed: int = 0) -> dict:
    """Features of everything ingested into one folder: one partial, merged."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        partial_features(ingested, tmp)
        return merge_features([tmp], Path(ingested) / "catalog.parquet", out, n_negatives=n_negatives, seed=seed)


def load_sequences(features: str | Path, rank: int = 0, world: int = 1) -> tuple[list[str], list[list[int]]]:
    """Shoppers and their item index sequences over all shards (``world`` > 1: only rank ``rank``'s share)."""
    t = read_share(features, "sequences", rank, world)
    return t["user_id"].to_pylist(), t["items"].to_pylist()


def load_items(features: str | Path) -> pd.DataFrame:
    return pq.read_table(Path(features) / "items.parquet").to_pandas()

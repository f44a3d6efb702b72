"""Features sharded by shopper: the merge of the day partials as a fan-out over shopper-hash shards.

A shopper's shard is a function of the user id alone (:func:`shopper_keys`: ``pandas.util.hash_array``
with its fixed key, the same in every process and pod; never Python's ``hash``), so a shopper's events
from every day meet in one shard. Shard ``k`` of ``n`` holds the shoppers whose 32-bit key lies in
``[ceil(k * 2**32 / n), ceil((k + 1) * 2**32 / n))``: contiguous key ranges, which the day partials are
sorted by (``shard_key`` column), so a shard reads only the row groups of its range.

- :func:`shard_features` (one pod per shard): the shard's sequences, search pairs and click samples,
  and its item counts. Every shard knows the whole vocabulary (the union of the partials' small
  ``items.parquet``), so item indices are final in the shard already.
- :func:`finish_features` (one small step): sums the item counts into ``items.parquet`` (``idx`` 1..N
  over sorted item ids, as one pod writes it), writes ``item_counts.parquet`` (what the popularity
  baseline needs), ``shards.json`` (each shard's files and row counts) and ``stats.json`` (the sums of the
  shards' counts: the one-pod stats).

Readers go through the manifest: :func:`read_rows` reads rows ``[start, stop)`` of a table over all
shards, reading only the shards that overlap; :func:`rank_share` is the row range of one DDP rank or one
evaluation shard, so no process loads all sequences. Click samples are drawn per shopper, from an RNG
seeded by ``(seed, shopper key)``, so they do not depend on the shard count: one pod is shards=1.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shoprec.data.interactions import HISTORY_TITLES, MIN_SEQUENCE, interaction_sequences, item_attribute_tokens

log = logging.getLogger(__name__)

MANIFEST = "shards.json"
TABLES = ("sequences", "search_pairs", "click_samples")
KEY_BITS = 32


def shopper_hashes(user_ids) -> np.ndarray:
    """64-bit stable hash per user id (``pandas.util.hash_array`` with its fixed default key)."""
    values = np.asarray(pd.Series(user_ids, dtype=object).fillna("").astype(str).to_numpy(), dtype=object)
    return pd.util.hash_array(values, categorize=False)


def shopper_keys(user_ids) -> np.ndarray:
    """The shard key of each user id: the top 32 bits of its stable hash (int64)."""
    return (shopper_hashes(user_ids) >> np.uint64(64 - KEY_BITS)).astype(np.int64)


def key_range(shard: int, shards: int) -> tuple[int, int]:
    """Shard ``shard`` of ``shards`` holds keys in ``[lo, hi)``."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return -(-shard * 2 ** KEY_BITS // shards), -(-(shard + 1) * 2 ** KEY_BITS // shards)


def shard_of(user_ids, shards: int) -> np.ndarray:
    return ((shopper_keys(user_ids) * shards) >> KEY_BITS).astype(np.int64)


def shard_numbers(shards: int) -> list[int]:
    """0..shards-1, the fan-out of the features and evaluation tasks."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return list(range(shards))


def rank_share(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of ``n`` that rank ``rank`` of ``world`` takes (contiguous, sizes differ by at most 1)."""
    return n * rank // world, n * (rank + 1) // world


def _read_partial(path: Path, shard: int, shards: int) -> pd.DataFrame:
    lo, hi = key_range(shard, shards)
    names = pq.read_schema(path).names
    if "shard_key" in names:
        t = pq.read_table(path, filters=[("shard_key", ">=", lo), ("shard_key", "<", hi)])
        return t.to_pandas().drop(columns=["shard_key"])
    df = pq.read_table(path).to_pandas()  # a partial written before shard keys: filter here
    keys = shopper_keys(df["user_id"])
    return df[(keys >= lo) & (keys < hi)].reset_index(drop=True)


def gather_partials(partials: list[str | Path], out: str | Path) -> list[Path]:
    """The day partials copied (not parsed) into one folder, ``part-NNNNN/`` in the given order: what every
    features shard task reads (KFP cannot hand a collected list of a fan-out to the tasks of another fan-out)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = []
    for j, p in enumerate(map(Path, partials)):
        dirs.append(out / f"part-{j:05d}")
        shutil.copytree(p, dirs[-1], dirs_exist_ok=True)
    return dirs


def gathered_partials(folder: str | Path) -> list[Path]:
    """The partials of a :func:`gather_partials` folder, in their order."""
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and p.name.startswith("part-"))


def partial_vocabulary(partials: list[str | Path]) -> list[str]:
    """Sorted ids of every item any shopper interacted with, from the partials' item lists."""
    ids: set[str] = set()
    for p in map(Path, partials):
        if (p / "items.parquet").exists():
            ids.update(pq.read_table(p / "items.parquet", columns=["item_id"])["item_id"].to_pylist())
        else:
            ids.update(pq.read_table(p / "interactions.parquet", columns=["item_id"])["item_id"].drop_null()
                       .unique().to_pylist())
    return sorted(ids)


def click_samples_per_shopper(user_ids: list[str], seqs: list[list[int]], titles: list[str], n_negatives: int,
                              seed: int, max_per_user: int = 5) -> pd.DataFrame:
    """Click samples for the recommendation ranker: positives are a shopper's next training item after a window of
    recent history titles, negatives random items. One RNG per shopper, seeded by (seed, shopper hash): a shopper's
    samples are the same in any shard, so any shard count gives the same samples."""
    rows = []
    n_items = len(titles) - 1
    for user, seq, h in zip(user_ids, seqs, shopper_hashes(user_ids)):
        train = seq[:-2]
        if len(train) < 2:
            continue
        rng = np.random.default_rng([seed, int(h)])
        members = set(seq)
        for t in rng.choice(np.arange(1, len(train)), size=min(max_per_user, len(train) - 1), replace=False):
            history = " ; ".join(titles[i] for i in train[max(0, t - HISTORY_TITLES):t])
            rows.append((history, int(train[t]), titles[train[t]], 1, user))
            for neg in rng.integers(1, n_items + 1, size=n_negatives):
                if neg not in members:
                    rows.append((history, int(neg), titles[neg], 0, user))
    return pd.DataFrame(rows, columns=["history", "item_idx", "title", "clicked", "user_id"])


def shard_features(partials: list[str | Path], catalog: str | Path, shard: int, shards: int, out: str | Path,
                   n_negatives: int = 3, seed: int = 0) -> dict:
    """One shard's sequences, search pairs, click samples and item counts from all days' partials; returns its stats."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = partial_vocabulary(partials)
    idx = {item: i for i, item in enumerate(vocab, start=1)}
    cat = pq.read_table(catalog).to_pandas().set_index("item_id")
    rows = pd.concat([_read_partial(Path(p) / "interactions.parquet", shard, shards) for p in partials],
                     ignore_index=True)
    pairs = pd.concat([_read_partial(Path(p) / "search_pairs.parquet", shard, shards) for p in partials],
                      ignore_index=True)
    per_user = interaction_sequences(rows) if len(rows) else pd.Series([], dtype=object)
    kept = per_user[per_user.map(len) >= MIN_SEQUENCE]
    seqs = [[idx[i] for i in s] for s in kept]
    users = [str(u) for u in kept.index]
    pq.write_table(pa.table({"user_id": pa.array(users, pa.string()), "items": pa.array(seqs, pa.list_(pa.int32()))}),
                   out / "sequences.parquet")

    counts = pd.Series([i for s in per_user for i in s], dtype=object).value_counts()
    history = pd.Series([i for s in kept for i in s[:-1]], dtype=object).value_counts()
    target = pd.Series([s[-1] for s in kept], dtype=object).value_counts()
    item_counts = pd.DataFrame({"count": counts, "history_count": history, "target_count": target}).fillna(0)
    item_counts = item_counts.astype(np.int64).rename_axis("item_id").reset_index()
    pq.write_table(pa.Table.from_pandas(item_counts, preserve_index=False), out / "item_counts.parquet")

    pairs = pairs.sort_values(["session_id", "query", "item_id"], kind="stable", ignore_index=True)
    pairs["item_idx"] = pairs["item_id"].map(idx).fillna(0).astype(np.int32)
    pairs["title"] = [cat["title"].get(i, i) for i in pairs["item_id"]]
    pq.write_table(pa.Table.from_pandas(pairs, preserve_index=False), out / "search_pairs.parquet")

    titles = [""] + [cat["title"].get(i, i) for i in vocab]
    samples = click_samples_per_shopper(users, seqs, titles, n_negatives, seed)
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), out / "click_samples.parquet")

    stats = {"shard": shard, "shards": shards, "partitions": len(partials), "vocabulary": len(vocab),
             "interactions_in": len(rows), "users": int(len(per_user)), "users_kept": len(seqs),
             "users_too_short": int(len(per_user) - len(seqs)), "interactions": int(sum(map(len, seqs))),
             "search_pairs": len(pairs), "search_clicks": int(pairs["clicked"].sum()) if len(pairs) else 0,
             "click_samples": len(samples)}
    (out / "shard.json").write_text(json.dumps(stats, indent=2))
    log.info("features shard %d/%d: %s", shard, shards, stats)
    return stats


SUMMED = ("interactions_in", "users", "users_kept", "users_too_short", "interactions", "search_pairs", "search_clicks",
          "click_samples")


def finish_features(shard_dirs: list[str | Path], catalog: str | Path, out: str | Path) -> dict:
    """Vocabulary, item counts, the shard manifest and the stats from the shards' outputs (in shard order).

    A shard folder that is ``out`` itself (one pod) keeps its files where they are; other shards' files are
    copied (not parsed) into ``out/shard-NNNNN/``, so the features folder is one artifact."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in shard_dirs]
    infos = [json.loads((d / "shard.json").read_text()) for d in dirs]
    shards = len(dirs)
    if sorted(i["shard"] for i in infos) != list(range(shards)) or any(i["shards"] != shards for i in infos):
        raise ValueError(f"shards {[(i['shard'], i['shards']) for i in infos]} are not 0..{shards - 1} of {shards}")
    if len({i["vocabulary"] for i in infos}) != 1:
        raise ValueError(f"shards saw different vocabularies: {[i['vocabulary'] for i in infos]} items")
    order = sorted(range(shards), key=lambda j: infos[j]["shard"])
    counts = pd.concat([pd.read_parquet(dirs[j] / "item_counts.parquet") for j in order], ignore_index=True)
    counts = counts.groupby("item_id", sort=True)[["count", "history_count", "target_count"]].sum()
    counts = counts[counts["count"] > 0]
    catalog = pq.read_table(catalog).to_pandas().set_index("item_id")
    item_ids = list(counts.index)
    items = pd.DataFrame({
        "idx": np.arange(1, len(item_ids) + 1, dtype=np.int32),
        "item_id": item_ids,
        "title": [catalog["title"].get(i, i) for i in item_ids],
        "category": [catalog["category"].get(i) if "category" in catalog else None for i in item_ids],
        "count": counts["count"].astype(int).tolist(),
        "attributes": item_attribute_tokens(catalog, item_ids),
    })
    if len(items) != infos[0]["vocabulary"]:
        raise ValueError(f"{len(items)} items counted but the shards' vocabulary has {infos[0]['vocabulary']}")
    pq.write_table(pa.Table.from_pandas(items, preserve_index=False), out / "items.parquet")
    pq.write_table(pa.Table.from_pandas(counts.reset_index(), preserve_index=False), out / "item_counts.parquet")

    entries = []
    for j in order:
        src, k = dirs[j], infos[j]["shard"]
        here = src.resolve() == out.resolve()
        folder = "" if here else f"shard-{k:05d}/"
        if not here:
            (out / folder).mkdir(parents=True, exist_ok=True)
        files = {}
        for name in TABLES:
            if not here:
                shutil.copyfile(src / f"{name}.parquet", out / folder / f"{name}.parquet")
            files[name] = f"{folder}{name}.parquet"
        entries.append({"shard": k, "files": files,
                        "rows": {name: infos[j][key] for name, key in
                                 (("sequences", "users_kept"), ("search_pairs", "search_pairs"),
                                  ("click_samples", "click_samples"))}})
        if here:
            (out / "shard.json").unlink()
    manifest = {"shards": shards, "entries": entries,
                "rows": {name: sum(e["rows"][name] for e in entries) for name in TABLES}}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    stats = {"partitions": infos[0]["partitions"], **{k: sum(i[k] for i in infos) for k in SUMMED[:1]},
             "items": len(items), **{k: sum(i[k] for i in infos) for k in SUMMED[1:]}, "shards": shards}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    log.info("features: %s", stats)
    return stats


# ------------------------------------------------------------------ reading through the manifest
def manifest(features: str | Path) -> dict:
    """The shard manifest; a folder written before shards reads as one shard of its root files."""
    features = Path(features)
    path = features / MANIFEST
    if path.exists():
        return json.loads(path.read_text())
    rows = {name: pq.read_metadata(features / f"{name}.parquet").num_rows if (features / f"{name}.parquet").exists()
            else 0 for name in TABLES}
    return {"shards": 1, "entries": [{"shard": 0, "files": {n: f"{n}.parquet" for n in TABLES}, "rows": rows}],
            "rows": rows}


def read_rows(features: str | Path, name: str, start: int = 0, stop: int | None = None,
              columns: list[str] | None = None) -> pa.Table:
    """Rows ``[start, stop)`` of table ``name`` over the shards in manifest order; only overlapping shards are read."""
    features = Path(features)
    m = manifest(features)
    stop = m["rows"][name] if stop is None else stop
    parts, offset = [], 0
    for e in m["entries"]:
        n = e["rows"][name]
        lo, hi = max(start, offset), min(stop, offset + n)
        if lo < hi:
            path = features / e["files"][name]
            if not path.exists():
                continue
            t = pq.read_table(path, columns=columns)
            parts.append(t.slice(lo - offset, hi - lo))
        offset += n
    if not parts:
        path = features / m["entries"][0]["files"][name]
        return pq.read_table(path, columns=columns).slice(0, 0)
    return pa.concat_tables(parts)


def read_share(features: str | Path, name: str, rank: int = 0, world: int = 1,
               columns: list[str] | None = None) -> pa.Table:
    """This rank's contiguous share of table ``name`` (``world`` 1: all of it)."""
    start, stop = rank_share(manifest(features)["rows"][name], rank, world)
    return read_rows(features, name, start, stop, columns)


def write_all(features: str | Path, name: str, out: str | Path) -> int:
    """Table ``name`` over all shards into one Parquet file, shard by shard (never all in memory); rows written."""
    features = Path(features)
    writer, n = None, 0
    try:
        for e in manifest(features)["entries"]:
            t = pq.read_table(features / e["files"][name])
            if writer is None:
                writer = pq.ParquetWriter(str(out), t.schema)
            writer.write_table(t)
            n += len(t)
    finally:
        if writer is not None:
            writer.close()
    return n

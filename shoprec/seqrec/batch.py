"""Nightly batch recommendations: top-K for every shopper active in the data window, in shards, to Parquet.

Three steps, each a pipeline task (``components/batch_recommend.py``):

- :func:`plan_batch` splits the window's shoppers (those with a sequence in the features) into ``shards`` by the
  stable shopper hash the features are sharded by (:func:`shoprec.data.shards.shard_of`) and pins the model
  version and the date (:func:`pinned_version`: the @champion's when none is given);
- :func:`batch_recommend_shard` scores one shard's shoppers with the model (their whole window as history, seen
  items excluded) and writes ``part-NNNNN.parquet``: ``user_id, rank, item_id, title, score, model_name,
  model_version, date``, ``k`` rows per shopper (fewer only when a shopper has seen nearly every item);
- :func:`commit_batch` puts the parts under ``DEST/date=YYYY-MM-DD/version=N/`` (a folder or ``s3://``), then
  ``_manifest.json`` and ``_SUCCESS`` last. It first removes what that partition held, so a rerun for the same
  (date, version) replaces it: no duplicate rows, whatever the number of shards of the earlier run.
  :func:`load_into_store` puts the same lists in Redis (:mod:`shoprec.data.rec_store`) for the server.

A shopper's list does not depend on how many shards there are: shards are scored in batches of histories of
equal length (no padding), so the result of any shard count equals the one-shard result.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from datetime import date as Date
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from shoprec.data.features import load_items, load_sequences
from shoprec.data.rec_store import URL_ENV as REC_STORE_ENV
from shoprec.data.shards import shard_of
from shoprec.data.storage import StorageError, copy_file, join, read_bytes, remove_tree, write_bytes

log = logging.getLogger(__name__)

PART_INFO = "_part.json"
MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int16()), ("item_id", pa.string()),
                    ("title", pa.string()), ("score", pa.float32()), ("model_name", pa.string()),
                    ("model_version", pa.string()), ("date", pa.string())])


def batch_date(value: str = "") -> str:
    """``value`` checked as an ISO date, or today (UTC) when empty."""
    if not value:
        return datetime.now(timezone.utc).date().isoformat()
    try:
        return Date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"batch date {value!r} is not an ISO date (YYYY-MM-DD)") from None


def default_dest(data_uri: str) -> str:
    """Where the night's recommendations go when no destination is given: ``recommendations/`` beside the raw
    ``events/`` (ingest only reads ``events/``)."""
    return join(data_uri, "recommendations")


def partition_uri(dest_uri: str, date: str, version: str) -> str:
    return join(dest_uri, f"date={date}/version={version}")


def active_shoppers(features: str | Path) -> tuple[list[str], list[list[str]]]:
    """Every shopper with a sequence in the window, and their whole sequence as item ids (oldest first), read
    through the features' shard manifest (one file or many)."""
    users, seqs = load_sequences(features)
    item_ids = [""] + load_items(features)["item_id"].tolist()
    return users, [[item_ids[i] for i in s] for s in seqs]


def pinned_version(model_name: str, version: str = "") -> str:
    """``version``, or the version ``model_name``'s @champion points at now (so every shard scores the same one)."""
    if version:
        return str(version)
    from shoprec.registry.versions import version_by_alias

    champion = version_by_alias(model_name)
    if champion is None:
        raise RuntimeError(f"{model_name} has no @champion to make the night's recommendations with")
    return str(champion.version)


def plan_batch(features: str | Path, shards: int, model_name: str = "", version: str = "", date: str = "") -> list[dict]:
    """One spec per shard: ``{"shard", "shards", "shoppers", "model_name", "version", "date"}``."""
    if shards < 1:
        raise ValueError(f"batch shards must be >= 1, got {shards}")
    date = batch_date(date)
    users, _ = active_shoppers(features)
    counts = np.bincount(shard_of(users, shards), minlength=shards).tolist() if users else [0] * shards
    log.info("batch plan: %d shoppers in %d shards %s, %s v%s, %s", len(users), shards, counts, model_name, version,
             date)
    return [{"shard": i, "shards": shards, "shoppers": counts[i], "model_name": model_name, "version": str(version),
             "date": date} for i in range(shards)]


def batch_recommend_shard(model_dir: str | Path, features: str | Path, shard: int, shards: int, k: int,
                          out: str | Path, model_name: str = "", model_version: str = "", date: str = "",
                          batch_size: int | None = None, rec=None) -> dict:
    """Top ``k`` (seen items excluded) for the shoppers of one shard; writes ``out/part-NNNNN.parquet`` and
    ``out/_part.json`` (what the commit checks). ``rec``: an already loaded Recommender of ``model_dir``.
    ``batch_size``: shoppers per forward (default: 256, fewer for a large catalogue so that one batch's scores
    stay near 64 MB)."""
    from shoprec.seqrec.recommend import Recommender

    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    date = batch_date(date)
    started = time.monotonic()
    rec = rec or Recommender(model_dir)
    users, histories = active_shoppers(features)
    in_shard = shard_of(users, shards) == shard if users else []
    mine = [(u, rec.encode(h)[0]) for u, h, here in zip(users, histories, in_shard) if here]
    skipped = [u for u, h in mine if not h]  # nothing the model knows: no list rather than popularity in disguise
    mine = [(u, h) for u, h in mine if h]
    max_len = rec.model.cfg.max_len
    by_length: dict[int, list[int]] = defaultdict(list)  # equal lengths: no padding, the same in any batch
    for row, (_, h) in enumerate(mine):
        by_length[min(len(h), max_len)].append(row)
    top_k = min(k, rec.n_items)
    batch_size = batch_size or max(16, min(256, 2 ** 24 // (rec.n_items + 1)))
    picked: dict[int, tuple[list[float], list[int]]] = {}
    done, last_log = 0, started
    with torch.inference_mode():
        for length in sorted(by_length):
            rows = by_length[length]
            for i in range(0, len(rows), batch_size):
                chunk = rows[i:i + batch_size]
                hs = [mine[r][1] for r in chunk]
                s = rec.scores(hs)
                s[:, 0] = float("-inf")
                for j, h in enumerate(hs):
                    s[j, torch.as_tensor(h)] = float("-inf")
                top = torch.topk(s, top_k, dim=1)
                for r, vals, idx in zip(chunk, top.values.tolist(), top.indices.tolist()):
                    picked[r] = (vals, idx)
                done += len(chunk)
                if time.monotonic() - last_log > 10:
                    last_log = time.monotonic()
                    log.info("batch shard %d/%d: %d/%d shoppers (%.0f/s)", shard, shards, done, len(mine),
                             done / (last_log - started))
    cols: dict[str, list] = {name: [] for name in SCHEMA.names}
    for r, (user, _) in enumerate(mine):
        vals, idx = picked[r]
        rank = 0
        for v, j in zip(vals, idx):
            if v == float("-inf"):
                break
            rank += 1
            cols["user_id"].append(user)
            cols["rank"].append(rank)
            cols["item_id"].append(rec.item_ids[j])
            cols["title"].append(rec.titles[j])
            cols["score"].append(v)
    n = len(cols["user_id"])
    cols["model_name"], cols["model_version"], cols["date"] = [model_name] * n, [str(model_version)] * n, [date] * n
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, schema=SCHEMA), out / part_name(shard))
    seconds = time.monotonic() - started
    info = {"shard": shard, "shards": shards, "k": k, "shoppers": len(mine), "rows": n, "skipped": len(skipped),
            "model_name": model_name, "version": str(model_version), "date": date, "seconds": round(seconds, 3),
            "part": part_name(shard)}
    (out / PART_INFO).write_text(json.dumps(info))
    log.info("batch shard %d/%d: %d shoppers, %d rows, %d skipped (no known item) in %.1f s", shard, shards,
             len(mine), n, len(skipped), seconds)
    return info


def part_name(shard: int) -> str:
    return f"part-{shard:05d}.parquet"


def _read_parts(parts: list[str | Path]) -> list[dict]:
    infos = [json.loads((Path(p) / PART_INFO).read_text()) | {"dir": str(p)} for p in parts]
    if not infos:
        raise ValueError("no batch parts to commit")
    keys = {(i["model_name"], i["version"], i["date"], i["shards"], i["k"]) for i in infos}
    if len(keys) != 1:
        raise ValueError(f"batch parts disagree on (model, version, date, shards, k): {sorted(keys)}")
    shards = infos[0]["shards"]
    got = sorted(i["shard"] for i in infos)
    if got != list(range(shards)):
        raise ValueError(f"batch parts are shards {got}, expected each of 0..{shards - 1} once")
    return sorted(infos, key=lambda i: i["shard"])


def commit_batch(parts: list[str | Path], dest_uri: str) -> dict:
    """Write the shards' parts under ``dest_uri/date=D/version=N/`` (replacing what was there), then
    ``_manifest.json`` and ``_SUCCESS``; returns the manifest."""
    infos = _read_parts(parts)
    first = infos[0]
    where = partition_uri(dest_uri, first["date"], first["version"])
    removed = remove_tree(where)
    if removed:
        log.info("batch commit: replacing %d files of an earlier run at %s", removed, where)
    for info in infos:
        copy_file(Path(info["dir"]) / info["part"], join(where, info["part"]))
    manifest = {"model_name": first["model_name"], "version": first["version"], "date": first["date"],
                "k": first["k"], "shards": first["shards"], "shoppers": sum(i["shoppers"] for i in infos),
                "rows": sum(i["rows"] for i in infos), "skipped": sum(i["skipped"] for i in infos),
                "parts": [i["part"] for i in infos], "shard_seconds": [i["seconds"] for i in infos],
                "uri": where, "committed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_bytes(join(where, MANIFEST), json.dumps(manifest, indent=2).encode())
    write_bytes(join(where, SUCCESS), b"")
    log.info("batch commit: %d shoppers, %d rows of %s v%s for %s at %s", manifest["shoppers"], manifest["rows"],
             manifest["model_name"], manifest["version"], manifest["date"], where)
    return manifest


def read_manifest(dest_uri: str, date: str, version: str) -> dict | None:
    """The manifest of a committed (date, version), or None when it was not committed (no ``_SUCCESS``)."""
    where = partition_uri(dest_uri, date, version)
    try:
        read_bytes(join(where, SUCCESS))
        return json.loads(read_bytes(join(where, MANIFEST)))
    except (OSError, StorageError):
        return None


def read_batch(dest_uri: str, date: str, version: str) -> pa.Table:
    """Every row of a committed (date, version), sorted by user and rank."""
    manifest = read_manifest(dest_uri, date, version)
    if manifest is None:
        raise FileNotFoundError(f"no committed batch at {partition_uri(dest_uri, date, version)}")
    tables = [pq.read_table(pa.BufferReader(read_bytes(join(manifest["uri"], p)))) for p in manifest["parts"]]
    return pa.concat_tables(tables).sort_by([("user_id", "ascending"), ("rank", "ascending")])


def shopper_lists(table: pa.Table):
    """``(user_id, [{"item_id", "title", "score"}, ...])`` per shopper of a batch table, best first."""
    t = table.sort_by([("user_id", "ascending"), ("rank", "ascending")])
    users, items, titles, scores = (t[c].to_pylist() for c in ("user_id", "item_id", "title", "score"))
    start = 0
    for i in range(1, len(users) + 1):
        if i == len(users) or users[i] != users[start]:
            yield users[start], [{"item_id": items[j], "title": titles[j], "score": round(scores[j], 5)}
                                 for j in range(start, i)]
            start = i


def load_into_store(parts: list[str | Path], url: str, ttl_s: int = 0) -> int:
    """Put the lists of the committed parts in the store at ``url`` (one key per shopper); returns how many."""
    from shoprec.data.rec_store import RecStore

    infos = _read_parts(parts)
    first = infos[0]
    store = RecStore(url, first["model_name"])
    try:
        tables = [pq.read_table(Path(i["dir"]) / i["part"]) for i in infos]
        return store.write(shopper_lists(pa.concat_tables(tables)), first["version"], first["date"], ttl_s=ttl_s)
    finally:
        store.close()


def commit_night(parts: list[str | Path], data_uri: str, dest_uri: str = "", redis_url: str = "",
                 ttl_s: int = 2 * 86400) -> dict:
    """The pipeline's commit: :func:`commit_batch` to ``dest_uri`` (empty: :func:`default_dest` of ``data_uri``),
    then :func:`load_into_store` when a store URL is given (``redis_url``, else ``SHOPREC_REC_STORE_URL``); the
    manifest with ``store``, how many shoppers went into the store (0: none configured)."""
    manifest = commit_batch(parts, dest_uri or default_dest(data_uri))
    url = redis_url or os.environ.get(REC_STORE_ENV, "")
    manifest["store"] = load_into_store(parts, url, ttl_s=ttl_s) if url else 0
    return manifest

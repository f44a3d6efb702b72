import gzip
import hashlib
import json

import pyarrow.parquet as pq

from shoprec.data.schema import EVENT_TYPES, FIELDS
from shoprec.data.synth import synthesize


def _digest(root):
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthesize(a, users=50, items=30, days=2, seed=3)
    synthesize(b, users=50, items=30, days=2, seed=3)
    synthesize(c, users=50, items=30, days=2, seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_events_follow_the_raw_schema(tiny_shop):
    catalog = pq.read_table(tiny_shop / "catalog.parquet")
    assert set(catalog.column_names) == {"item_id", "title", "category", "brand", "price"}
    items = set(catalog["item_id"].to_pylist())
    days = sorted(p.name for p in (tiny_shop / "events").iterdir())
    assert days[0] == "dt=2026-11-01" and len(days) == 5
    seen = set()
    for f in (tiny_shop / "events").rglob("*.jsonl.gz"):
        for line in gzip.open(f, "rt"):
            row = json.loads(line)
            assert tuple(row) == FIELDS
            assert row["event"] in EVENT_TYPES
            seen.add(row["event"])
            if row["event"] == "search":
                assert row["item_id"] is None and row["query"]
            else:
                assert row["item_id"] in items
            if row["position"] is not None:
                assert row["query"] and 1 <= row["position"] <= 10
    assert seen == set(EVENT_TYPES)


def test_queries_are_made_of_product_words(tiny_shop):
    titles = pq.read_table(tiny_shop / "catalog.parquet")["title"].to_pylist()
    vocab = {w for t in titles for w in t.split()}
    queries = [json.loads(line)["query"] for f in (tiny_shop / "events").rglob("*.jsonl.gz")
               for line in gzip.open(f, "rt") if '"search"' in line]
    assert queries and all(set(q.split()) <= vocab for q in queries)

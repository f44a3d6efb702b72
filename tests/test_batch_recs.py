"""Nightly batch recommendations: shards, the committed Parquet partition, the Redis store and the server reading it.

Redis is a real ``redis-server`` started here on 127.0.0.1 and stopped by its PID (skipped without the binary:
``apt-get install redis-server``); the server is a real ``shoprec serve`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pyarrow.parquet as pq
import pytest

from shoprec.data import shards as shards_module
from shoprec.seqrec import batch
from tests.conftest import free_port, start_service

K = 7
DATE = "2026-12-05"


def _run(tiny_model, tiny_features, out, shards, version="3", date=DATE, k=K):
    from shoprec.seqrec.recommend import Recommender

    rec = Recommender(tiny_model)
    parts = []
    for spec in batch.plan_batch(tiny_features, shards, "tiny", version, date):
        part = out / f"shard-{spec['shard']}"
        batch.batch_recommend_shard(tiny_model, tiny_features, spec["shard"], spec["shards"], k, part,
                                    model_name="tiny", model_version=spec["version"], date=spec["date"], rec=rec)
        parts.append(part)
    return parts


@pytest.fixture(scope="module")
def committed(tiny_model, tiny_features, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    parts = _run(tiny_model, tiny_features, root / "work", shards=3)
    manifest = batch.commit_batch(parts, str(root / "recs"))
    return root, parts, manifest


def test_shard_of_is_stable_and_spreads():
    # the batch shards by the features' shopper hash (shoprec.data.shards), never Python's salted hash
    def shard_of(user_id: str, shards: int) -> int:
        return int(shards_module.shard_of([user_id], shards)[0])

    assert shard_of("u000001", 4) == shard_of("u000001", 4)
    code = "from shoprec.data.shards import shard_of; print(shard_of(['u000001'], 1000)[0])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.strip()
    assert int(other) == shard_of("u000001", 1000)
    counts = [0] * 4
    for i in range(4000):
        counts[shard_of(f"u{i:06d}", 4)] += 1
    assert min(counts) > 800


def test_every_active_shopper_gets_k_unseen_items(committed, tiny_features):
    root, _, manifest = committed
    users, histories = batch.active_shoppers(tiny_features)
    table = batch.read_batch(str(root / "recs"), DATE, "3")
    assert manifest["shoppers"] == len(users) and manifest["rows"] == table.num_rows == len(users) * K
    assert manifest["shards"] == 3 and manifest["skipped"] == 0
    assert set(table.column_names) >= {"user_id", "rank", "item_id", "score", "model_name", "model_version", "date"}
    rows = table.to_pylist()
    assert {r["model_version"] for r in rows} == {"3"} and {r["date"] for r in rows} == {DATE}
    seen = dict(zip(users, map(set, histories)))
    per_user: dict[str, list] = {}
    for r in rows:
        per_user.setdefault(r["user_id"], []).append(r)
    assert set(per_user) == set(users)
    for user, got in per_user.items():
        assert [r["rank"] for r in got] == list(range(1, K + 1))
        assert not {r["item_id"] for r in got} & seen[user], user
        assert len({r["item_id"] for r in got}) == K
        assert [r["score"] for r in got] == sorted((r["score"] for r in got), reverse=True)
    where = root / "recs" / f"date={DATE}" / "version=3"
    assert (where / "_SUCCESS").exists() and json.loads((where / "_manifest.json").read_text())["rows"] == len(rows)


def test_the_batch_equals_what_the_model_recommends_one_shopper_at_a_time(committed, tiny_model, tiny_features):
    from shoprec.seqrec.recommend import Recommender

    root, _, _ = committed
    rec = Recommender(tiny_model)
    users, histories = batch.active_shoppers(tiny_features)
    table = batch.read_batch(str(root / "recs"), DATE, "3")
    lists = dict(batch.shopper_lists(table))
    for user, history in list(zip(users, histories))[:10]:
        want = rec.recommend([rec.encode(history)[0]], k=K)[0]
        assert [i["item_id"] for i in lists[user]] == [i["item_id"] for i in want]


def test_sharded_equals_unsharded(committed, tiny_model, tiny_features, tmp_path):
    root, _, _ = committed
    one = _run(tiny_model, tiny_features, tmp_path / "work", shards=1)
    batch.commit_batch(one, str(tmp_path / "recs"))
    sharded = batch.read_batch(str(root / "recs"), DATE, "3")
    single = batch.read_batch(str(tmp_path / "recs"), DATE, "3")
    assert sharded.drop_columns(["score"]).equals(single.drop_columns(["score"]))
    assert sharded["score"].to_pylist() == pytest.approx(single["score"].to_pylist(), abs=1e-5)


def test_a_rerun_replaces_the_partition_and_duplicates_nothing(committed, tiny_model, tiny_features, tmp_path):
    root, parts, first = committed
    dest = str(tmp_path / "recs")
    batch.commit_batch(parts, dest)
    before = batch.read_batch(dest, DATE, "3")
    # the rerun has another shard count: the old parts must not survive beside the new ones
    again = _run(tiny_model, tiny_features, tmp_path / "again", shards=2)
    manifest = batch.commit_batch(again, dest)
    after = batch.read_batch(dest, DATE, "3")
    files = sorted(p.name for p in (tmp_path / "recs" / f"date={DATE}" / "version=3").iterdir())
    assert files == ["_SUCCESS", "_manifest.json", "part-00000.parquet", "part-00001.parquet"]
    assert after.num_rows == before.num_rows == first["rows"] and manifest["rows"] == first["rows"]
    assert after.drop_columns(["score"]).equals(before.drop_columns(["score"]))
    # another version of the same night is its own partition
    _run_v4 = _run(tiny_model, tiny_features, tmp_path / "v4", shards=1, version="4")
    batch.commit_batch(_run_v4, dest)
    assert batch.read_manifest(dest, DATE, "4")["version"] == "4"
    assert batch.read_batch(dest, DATE, "3").num_rows == first["rows"]


def test_commit_refuses_parts_that_do_not_make_one_batch(committed, tmp_path):
    _, parts, _ = committed
    with pytest.raises(ValueError, match="expected each of 0..2 once"):
        batch.commit_batch(parts[:2], str(tmp_path / "recs"))
    with pytest.raises(ValueError, match="no batch parts"):
        batch.commit_batch([], str(tmp_path / "recs"))
    assert batch.read_manifest(str(tmp_path / "recs"), DATE, "3") is None


def test_commit_to_s3(committed, s3_env):
    from shoprec.data.storage import s3_client

    _, parts, first = committed
    s3_client().create_bucket(Bucket="recs-batch")
    batch.commit_batch(parts, "s3://recs-batch/shop/recommendations")
    batch.commit_batch(parts, "s3://recs-batch/shop/recommendations")  # idempotent there too
    keys = sorted(o["Key"] for o in s3_client().list_objects_v2(Bucket="recs-batch")["Contents"])
    assert keys == [f"shop/recommendations/date={DATE}/version=3/{n}" for n in
                    ("_SUCCESS", "_manifest.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet")]
    assert batch.read_batch("s3://recs-batch/shop/recommendations", DATE, "3").num_rows == first["rows"]


def test_bad_dates_and_shards_are_refused(tiny_features):
    with pytest.raises(ValueError, match="not an ISO date"):
        batch.plan_batch(tiny_features, 2, date="05/12/2026")
    with pytest.raises(ValueError, match="shards must be >= 1"):
        batch.plan_batch(tiny_features, 0)
    assert len(batch.batch_date()) == 10


# ------------------------------------------------------------------ the Redis store
@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    exe = shutil.which("redis-server")
    if not exe:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    pytest.importorskip("redis")
    root = tmp_path_factory.mktemp("redis")
    port = free_port()
    proc = subprocess.Popen([exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(root)], stdout=open(root / "redis.log", "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start: {(root / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=15)


def test_store_round_trip(committed, redis_url):
    from shoprec.data.rec_store import RecStore

    root, parts, manifest = committed
    assert batch.load_into_store(parts, redis_url, ttl_s=3600) == manifest["shoppers"]
    assert batch.load_into_store(parts, redis_url) == manifest["shoppers"]  # the same keys again
    store = RecStore(redis_url, "tiny")
    lists = dict(batch.shopper_lists(batch.read_batch(str(root / "recs"), DATE, "3")))
    user = sorted(lists)[0]
    got = store.read(user)
    assert got["version"] == "3" and got["date"] == DATE
    assert got["items"] == [{"item_id": i["item_id"], "score": i["score"]} for i in lists[user]]  # titles: the server's
    assert store.read("nobody") is None
    assert store.meta()["shoppers"] == manifest["shoppers"]
    keys = list(store.client.scan_iter("shoprec:recs:tiny:*"))
    assert len(keys) == manifest["shoppers"] + 1  # one per shopper and the meta key
    assert store.client.ttl(store.key(user)) == -1  # the second load had no TTL


def test_store_errors_are_clear():
    from shoprec.data.rec_store import RecStore, RecStoreError

    store = RecStore(f"redis://:secret@127.0.0.1:{free_port()}/0", "m", timeout=0.5)
    with pytest.raises(RecStoreError, match=r"redis://\*\*\*@127.0.0.1") as err:
        store.read("u1")
    assert "secret" not in str(err.value)


def test_server_answers_from_the_store_and_falls_back_to_the_model(committed, tiny_model, redis_url, tmp_path):
    root, parts, _ = committed
    # the store keys lists by the served model's name: a model folder is served under the folder's name
    served = tmp_path / "tiny"
    shutil.copytree(tiny_model, served)
    batch.load_into_store(parts, redis_url)
    lists = dict(batch.shopper_lists(batch.read_batch(str(root / "recs"), DATE, "3")))
    in_store = sorted(lists)[0]
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(served), "--port", str(port),
                         "--rec-store", redis_url], f"http://127.0.0.1:{port}", "/healthz", tmp_path / "serve.log")
    from shoprec.data.rec_store import RecStore

    store = RecStore(redis_url, "tiny")
    try:
        assert httpx.get(f"{svc.url}/healthz").json()["rec_store"] is True
        r = httpx.post(f"{svc.url}/v1/recommend", json={"user_id": in_store, "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "store" and body["version"] == "3"
        assert body["items"] == lists[in_store][:5]
        # more than the store holds, or seen items allowed: the model answers
        for req in ({"user_id": in_store, "k": K + 1}, {"user_id": in_store, "k": 5, "exclude_seen": False}):
            r = httpx.post(f"{svc.url}/v1/recommend", json=req)
            assert r.status_code == 200 and r.json()["source"] == "model" and r.json()["version"] == "local"
        # a shopper the store does not hold: the model
        store.client.delete(store.key(in_store))
        r = httpx.post(f"{svc.url}/v1/recommend", json={"user_id": in_store, "k": 5})
        assert r.status_code == 200 and r.json()["source"] == "model"
        assert [i["item_id"] for i in r.json()["items"]] == [i["item_id"] for i in lists[in_store][:5]]
        assert httpx.post(f"{svc.url}/v1/recommend", json={"user_id": "nobody"}).status_code == 404
        metrics = httpx.get(f"{svc.url}/metrics").text
        assert 'shoprec_recommend_source_total{source="store"} 1.0' in metrics
    finally:
        svc.stop()


def test_server_falls_back_when_the_store_is_unreachable(tiny_model, tmp_path):
    pytest.importorskip("redis")
    served = tmp_path / "tiny"
    shutil.copytree(tiny_model, served)
    user = pq.read_table(tiny_model / "histories.parquet")["user_id"][0].as_py()
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(served), "--port", str(port)],
                        f"http://127.0.0.1:{port}", "/healthz", tmp_path / "serve.log",
                        env={"SHOPREC_REC_STORE_URL": f"redis://127.0.0.1:{free_port()}/0"})
    try:
        for _ in range(3):
            r = httpx.post(f"{svc.url}/v1/recommend", json={"user_id": user, "k": 5})
            assert r.status_code == 200, r.text
            assert r.json()["source"] == "model" and len(r.json()["items"]) == 5
    finally:
        svc.stop()
    assert "recommendation store failed" in (tmp_path / "serve.log").read_text()

import sys

import httpx
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port, start_service


@pytest.fixture(scope="module")
def server(tiny_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(tiny_model), "--port", str(port)],
                        f"http://127.0.0.1:{port}", "/healthz", log)
    yield svc
    svc.stop()


def test_recommend_for_a_known_user(server, tiny_model):
    hist = pq.read_table(tiny_model / "histories.parquet")
    user, seq = hist["user_id"][0].as_py(), hist["items"][0].as_py()
    item_ids = pq.read_table(tiny_model / "items.parquet")["item_id"].to_pylist()
    r = httpx.post(f"{server.url}/v1/recommend", json={"user_id": user, "k": 7})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 7 and all(i["title"] for i in items)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    seen = {item_ids[i - 1] for i in seq}
    assert not seen & {i["item_id"] for i in items}


def test_recommend_from_a_history(server, tiny_model):
    item_ids = pq.read_table(tiny_model / "items.parquet")["item_id"].to_pylist()
    r = httpx.post(f"{server.url}/v1/recommend", json={"history": item_ids[:3] + ["nope"], "k": 5})
    assert r.status_code == 200
    assert r.json()["unknown_items"] == ["nope"]
    assert len(r.json()["items"]) == 5


@pytest.mark.parametrize("body,status,words", [
    ({"user_id": "nobody"}, 404, "unknown user_id 'nobody'"),
    ({"user_id": "u1", "k": 0}, 422, "greater than or equal to 1"),
    ({"user_id": "u1", "k": 1000}, 422, "less than or equal to 100"),
    ({}, 422, "exactly one of user_id or history"),
    ({"user_id": "u1", "history": ["p1"]}, 422, "exactly one of user_id or history"),
    ({"history": ["unknown-1", "unknown-2"]}, 422, "none of the 2 history items"),
    ({"history": ["p"] * 500}, 422, "at most 200"),
])
def test_bad_requests_get_clear_4xx(server, body, status, words):
    r = httpx.post(f"{server.url}/v1/recommend", json=body)
    assert r.status_code == status
    assert words in r.text


def test_bad_json_is_a_4xx(server):
    r = httpx.post(f"{server.url}/v1/recommend", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.text.lower()


def test_healthz(server):
    assert httpx.get(f"{server.url}/healthz").json()["status"] == "ok"


# ------------------------------------------------------------------ score, search, health, metrics, limits
def _items(tiny_model):
    t = pq.read_table(tiny_model / "items.parquet")
    return t["item_id"].to_pylist(), t["title"].to_pylist()


def test_score_matches_recommend(server, tiny_model):
    hist = pq.read_table(tiny_model / "histories.parquet")
    user = hist["user_id"][1].as_py()
    top = httpx.post(f"{server.url}/v1/recommend", json={"user_id": user, "k": 5}).json()["items"]
    ids = [i["item_id"] for i in reversed(top)]
    r = httpx.post(f"{server.url}/v1/score", json={"user_id": user, "item_ids": ids})
    assert r.status_code == 200, r.text
    scores = r.json()["scores"]
    assert [s["item_id"] for s in scores] == ids
    assert [s["score"] for s in scores] == pytest.approx([i["score"] for i in reversed(top)], abs=1e-4)


@pytest.mark.parametrize("body,status,words", [
    ({"user_id": "u1", "item_ids": []}, 422, "at least 1 item"),
    ({"history": ["p"], "item_ids": ["p"] * 1001}, 422, "at most 1000"),
    ({"user_id": "nobody", "item_ids": ["x"]}, 404, "unknown user_id 'nobody'"),
])
def test_score_bad_requests(server, body, status, words):
    r = httpx.post(f"{server.url}/v1/score", json=body)
    assert r.status_code == status and words in r.text, r.text


def test_score_names_unknown_item_ids(server, tiny_model):
    ids, _ = _items(tiny_model)
    r = httpx.post(f"{server.url}/v1/score", json={"history": ids[:2], "item_ids": [ids[3], "ghost-1", "ghost-2"]})
    assert r.status_code == 422 and "unknown item_ids (2): ['ghost-1', 'ghost-2']" in r.text


def test_search_finds_an_item_by_its_title(server, tiny_model):
    ids, titles = _items(tiny_model)
    r = httpx.post(f"{server.url}/v1/search", json={"query": titles[5].upper(), "k": 5})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["items"][0]["item_id"] == ids[5] or got["items"][0]["title"] == titles[5]
    assert not got["reranked"] and len(got["items"]) <= 5
    assert [i["score"] for i in got["items"]] == sorted((i["score"] for i in got["items"]), reverse=True)
    nothing = httpx.post(f"{server.url}/v1/search", json={"query": "zzzqqq xxyyzz"})
    assert nothing.status_code == 200 and nothing.json()["items"] == []


@pytest.mark.parametrize("body,words", [
    ({"query": "   "}, "query is empty"),
    ({"query": ""}, "query is empty"),
    ({"query": "x" * 300}, "at most 256"),
    ({"query": "drill", "k": 0}, "greater than or equal to 1"),
    ({}, "Field required"),
])
def test_search_bad_requests(server, body, words):
    r = httpx.post(f"{server.url}/v1/search", json=body)
    assert r.status_code == 422 and words in r.text, r.text


def test_body_over_the_limit_is_413(server):
    big = b'{"query": "' + b"a" * 70_000 + b'"}'
    r = httpx.post(f"{server.url}/v1/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit of 65536" in r.text

    def chunks():  # no Content-Length: counted while read
        for _ in range(10):
            yield b"x" * 10_000

    r = httpx.post(f"{server.url}/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text


def test_probes_and_openapi(server):
    assert httpx.get(f"{server.url}/livez").json() == {"status": "alive"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["version"] == "local"
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/recommend", "/v1/score", "/v1/search", "/admin/reload", "/readyz", "/livez"} <= set(schema["paths"])
    ok = schema["paths"]["/v1/search"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/SearchResponse")


def test_metrics_count_requests_errors_and_latency(server):
    def value(text, prefix):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))

    before = httpx.get(f"{server.url}/metrics").text
    httpx.post(f"{server.url}/v1/search", json={"query": ""})
    httpx.post(f"{server.url}/v1/search", json={"query": "drill"})
    after = httpx.get(f"{server.url}/metrics").text
    ok = 'shoprec_requests_total{path="/v1/search",status="200"}'
    bad = 'shoprec_request_errors_total{path="/v1/search",status="422"}'
    assert value(after, ok) == value(before, ok) + 1
    assert value(after, bad) == value(before, bad) + 1
    lat = 'shoprec_request_latency_seconds_count{path="/v1/search"}'
    assert value(after, lat) >= value(before, lat) + 2
    assert 'shoprec_model_info{model="' in after and 'version="local"' in after


def test_concurrent_requests_are_batched_and_answered_like_one_by_one(server, tiny_model):
    import asyncio

    hist = pq.read_table(tiny_model / "histories.parquet")
    users = hist["user_id"].to_pylist()[:48]
    alone = {u: httpx.post(f"{server.url}/v1/recommend", json={"user_id": u, "k": 5}).json()["items"]
             for u in users[:6]}

    def batches(text):
        return {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("shoprec_batch_size_")}

    before = batches(httpx.get(f"{server.url}/metrics").text)

    async def many():
        async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=48)) as c:
            return await asyncio.gather(*(c.post("/v1/recommend", json={"user_id": u, "k": 5}) for u in users))

    answers = asyncio.run(many())
    assert all(r.status_code == 200 for r in answers)
    for u, r in zip(users, answers):
        if u in alone:
            got = r.json()["items"]
            assert [i["item_id"] for i in got] == [i["item_id"] for i in alone[u]]
            assert [i["score"] for i in got] == pytest.approx([i["score"] for i in alone[u]], abs=1e-4)
    after = batches(httpx.get(f"{server.url}/metrics").text)
    forwards = after["shoprec_batch_size_count"] - before["shoprec_batch_size_count"]
    requests = after["shoprec_batch_size_sum"] - before["shoprec_batch_size_sum"]
    assert requests == len(users)
    assert forwards < len(users), "48 concurrent requests should share forwards"

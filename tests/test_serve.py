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

"""/v1/search with a ranker: BM25 + bi-encoder candidates fused by RRF, the first rerank_depth re-ranked by the
int8 cross-encoder. Real ``shoprec serve`` processes on 127.0.0.1 with a tiny random ranker saved to disk;
the expected answers are computed here with the same SearchIndex and ranker loading code."""

from __future__ import annotations

import os
import sys

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.conftest import free_port, start_service

os.environ.setdefault("HF_HUB_OFFLINE", "1")
NONSENSE = "qqqzzx vvwyyk"  # no word of it is in any title


@pytest.fixture(scope="module")
def tiny_ranker(tmp_path_factory):
    """A ranker folder (cross-encoder + bi_encoder/) with a tiny random BERT and the real MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    from shoprec.ranker.config import LoraSettings, RankerConfig, SearchSettings, minilm_dir
    from shoprec.ranker.models import build_bi_encoder, build_cross_encoder, save_model

    def encoder(seed):
        torch.manual_seed(seed)
        return BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False)

    # the cross-encoder's order alone (rerank_weight 1), so the tests can check it; blending is tested in process
    cfg = RankerConfig(max_len=24, bi_max_len=16, aux_task="relevance", lora=LoraSettings(enabled=False),
                       search=SearchSettings(rerank_weight=1.0))
    out = tmp_path_factory.mktemp("ranker") / "ranker"
    save_model(build_cross_encoder(cfg, encoder(1)).eval(), out, cfg, tokenizer_dir=minilm_dir())
    save_model(build_bi_encoder(cfg, encoder(2)).eval(), out / "bi_encoder", cfg, tokenizer_dir=minilm_dir())
    return out


@pytest.fixture(scope="module")
def items(tiny_model):
    t = pq.read_table(tiny_model / "items.parquet")
    return t["item_id"].to_pylist(), t["title"].to_pylist()


@pytest.fixture(scope="module")
def expected(tiny_ranker, items):
    """The server's search path in this process: same loading (int8 cross-encoder, float32 bi-encoder, traced),
    same index, int8 product vectors."""
    import torch

    from shoprec.ranker.search import SearchIndex
    from shoprec.serving.search import load_search_ranker

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server on <= 2 cores
    yield SearchIndex.build(*items, load_search_ranker(str(tiny_ranker), int8=True)).quantize_vectors()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def served(tiny_model, tiny_ranker, tmp_path_factory):
    """``--ranker`` alone: the index is built from the served recommender's items."""
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(tiny_model), "--ranker",
                         str(tiny_ranker), "--port", str(port), "--poll-seconds", "0"],
                        f"http://127.0.0.1:{port}", "/readyz", tmp_path_factory.mktemp("serve-search") / "serve.log",
                        env={"HF_HUB_OFFLINE": "1"})
    yield svc
    svc.stop()


def search(svc, **body):
    r = httpx.post(f"{svc.url}/v1/search", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_bi_encoder_finds_what_bm25_cannot(served, expected):
    assert expected.bm25_topk([NONSENSE], 10) == [[]]
    got = search(served, query=NONSENSE, k=5, rerank_depth=0)
    assert got["retrievers"] == ["bm25", "bi-encoder"] and got["rerank_depth"] == 0 and not got["reranked"]
    dense = [expected.item_ids[d] for d in expected.dense_topk([NONSENSE], 5)[0]]
    assert [i["item_id"] for i in got["items"]] == dense


def test_depth_0_is_the_fused_order(served, expected, items):
    query = items[1][3].split()[-1]  # one word of a title: BM25 and the bi-encoder both answer
    lex, dense = expected.bm25_topk([query], 100)[0], expected.dense_topk([query], 100)[0]
    assert lex and set(lex) != set(dense[:len(lex)])
    cand, fused = expected.fused([query], depth=10)[0]
    got = search(served, query=query, k=10, rerank_depth=0)
    assert [i["item_id"] for i in got["items"]] == [expected.item_ids[d] for d in cand]
    assert [i["score"] for i in got["items"]] == pytest.approx(fused, abs=1e-6)
    assert not any(i["reranked"] for i in got["items"])


def test_depth_20_reranks_with_the_int8_cross_encoder(served, expected, items):
    query = " ".join(items[1][5].split()[:2])
    cand, _ = expected.fused([query], depth=30)[0]
    got = search(served, query=query, k=30)  # default depth: 20
    assert got["reranked"] and got["rerank_depth"] == 20
    ids = [i["item_id"] for i in got["items"]]
    top, tail = got["items"][:20], got["items"][20:]
    assert all(i["reranked"] for i in top) and not any(i["reranked"] for i in tail)
    # the first 20 fused candidates, re-ordered; below the depth the fused order is kept
    assert set(ids[:20]) == {expected.item_ids[d] for d in cand[:20]}
    assert ids[20:] == [expected.item_ids[d] for d in cand[20:]]
    assert ids[:20] != [expected.item_ids[d] for d in cand[:20]], "a random cross-encoder should reorder 20 items"
    scores = [i["score"] for i in got["items"]]
    assert scores[:20] == sorted(scores[:20], reverse=True), "the re-ranked head is listed by the score it is ordered by"
    assert scores[20:] == sorted(scores[20:], reverse=True)
    want = dict(zip(cand[:20], expected.score_pairs(query, cand[:20])))
    assert [i["cross_score"] for i in top] == pytest.approx([want[expected.item_ids.index(i)] for i in ids[:20]], abs=1e-5)
    assert all(i["cross_score"] is None for i in tail)
    shallow = search(served, query=query, k=30, rerank_depth=5)
    assert shallow["rerank_depth"] == 5 and sum(i["reranked"] for i in shallow["items"]) == 5


@pytest.mark.parametrize("body,field,words", [
    ({"query": "drill", "rerank_depth": 51}, "rerank_depth", "less than or equal to 50"),
    ({"query": "drill", "rerank_depth": -1}, "rerank_depth", "greater than or equal to 0"),
    ({"query": "drill", "rerank_depth": "deep"}, "rerank_depth", "valid integer"),
    ({"query": "drill", "k": 101}, "k", "less than or equal to 100"),
    ({"query": " "}, "query", "query is empty"),
])
def test_bad_search_requests_name_the_field(served, body, field, words):
    r = httpx.post(f"{served.url}/v1/search", json=body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(e["loc"][-1] == field and words in e["msg"] for e in errors), errors


def test_health_schema_and_stage_metrics(served):
    assert httpx.get(f"{served.url}/healthz").json()["search"] == ["bm25", "bi-encoder"]
    schema = httpx.get(f"{served.url}/openapi.json").json()["components"]["schemas"]
    assert {"retrievers", "rerank_depth", "reranked"} <= set(schema["SearchResponse"]["properties"])
    depth = schema["SearchRequest"]["properties"]["rerank_depth"]
    assert (depth["default"], depth["minimum"], depth["maximum"]) == (20, 0, 50)
    search(served, query="lamp", k=3)
    text = httpx.get(f"{served.url}/metrics").text
    counts = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("shoprec_search_stage_seconds_count")}
    assert counts['stage="candidates"'] >= 1 and counts['stage="rerank"'] >= 1


def test_saved_search_index_with_its_own_products(tiny_model, tiny_ranker, tmp_path):
    """``--search-index``: products other than the recommender's (here: made-up ids), loaded from disk."""
    from shoprec.ranker.search import SearchIndex
    from shoprec.serving.search import load_search_ranker

    titles = [f"{c} {w}" for c in ("red", "blue", "green") for w in ("drill", "hammer", "saw", "ladder")]
    ids = [f"hd-{i}" for i in range(len(titles))]
    ranker = load_search_ranker(str(tiny_ranker), int8=False)
    SearchIndex.build(ids, titles, ranker).save(tmp_path / "index")
    port = free_port()
    svc = start_service([sys.executable, "-m", "shoprec.cli", "serve", "--model", str(tiny_model), "--ranker",
                         str(tiny_ranker), "--search-index", str(tmp_path / "index"), "--no-int8", "--port", str(port),
                         "--poll-seconds", "0"], f"http://127.0.0.1:{port}", "/readyz", tmp_path / "serve.log",
                        env={"HF_HUB_OFFLINE": "1"})
    try:
        got = search(svc, query="blue hammer", k=12, rerank_depth=4)
        assert {i["item_id"] for i in got["items"]} == set(ids)  # 12 products: all of them are candidates
        assert got["rerank_depth"] == 4 and got["retrievers"] == ["bm25", "bi-encoder"]
        head = [ids.index(i["item_id"]) for i in got["items"][:4]]
        s = ranker.score(["blue hammer"] * 4, [titles[d] for d in head], head=ranker.rank_head)  # float32, as served
        assert [i["cross_score"] for i in got["items"][:4]] == pytest.approx(s.tolist(), abs=1e-5)
        ranked_by = [i["score"] for i in got["items"][:4]]
        assert ranked_by == sorted(ranked_by, reverse=True)
    finally:
        svc.stop()


# ------------------------------------------------------------------ fusion and re-rank blend (in process)
def _index_with(expected, **settings):
    from dataclasses import replace

    from shoprec.ranker.search import SearchIndex

    return SearchIndex(expected.item_ids, expected.titles, expected.bm25, expected.vectors, expected.ranker,
                       settings=replace(expected.settings, **settings))


def test_zscore_fusion_weights_move_between_the_two_retrievers(expected, items):
    query = items[1][3].split()[-1]
    fp32 = _index_with(expected)  # float32 product vectors, as the fusion scores them
    lex, dense = fp32.bm25_topk([query], 100)[0], fp32.dense_topk([query], 100)[0]
    union = list(dict.fromkeys(lex + dense))
    only_bm25, _ = _index_with(expected, fusion="zscore", bm25_weight=1.0).fused([query], depth=len(lex))[0]
    assert only_bm25 == lex  # BM25's own order: its hits before the products it scores 0
    only_dense, _ = _index_with(expected, fusion="zscore", bm25_weight=0.0).fused([query], depth=len(union))[0]
    assert only_dense[:len(dense)] == dense
    half, scores = _index_with(expected, fusion="zscore", bm25_weight=0.5).fused([query], depth=len(union))[0]
    assert sorted(half) == sorted(union) and half not in (only_bm25 + only_dense[len(lex):], only_dense)
    assert scores == sorted(scores, reverse=True) and abs(sum(scores)) < 1e-6  # two standardised scores: mean 0
    rrf_docs, _ = _index_with(expected, fusion="rrf").fused([query], depth=10)[0]
    from shoprec.ranker.search import rrf
    assert rrf_docs == rrf([lex, dense])[:10]


def test_rerank_weight_blends_cross_encoder_and_fused_scores(expected, items):
    from shoprec.metrics import standardised

    query = " ".join(items[1][5].split()[:2])
    cand, fused = expected.fused([query], depth=20)[0]
    cross = expected.score_pairs(query, cand)
    docs, _ = _index_with(expected, rerank_weight=1.0).rerank(query, cand, 20, fused)
    assert docs == [cand[j] for j in np.argsort(-cross, kind="stable")]
    docs, scores = _index_with(expected, rerank_weight=0.0).rerank(query, cand, 20, fused)
    assert docs == cand and scores == pytest.approx(cross.tolist(), abs=1e-6)  # order kept, cross scores reported
    key = 0.5 * standardised(cross) + 0.5 * standardised(fused)
    docs, _ = _index_with(expected, rerank_weight=0.5).rerank(query, cand, 20, fused)
    assert docs == [cand[j] for j in np.argsort(-key, kind="stable")]
    assert docs not in ([cand[j] for j in np.argsort(-cross, kind="stable")], cand)


def test_search_settings_travel_in_the_ranker_config():
    from shoprec.ranker.config import RankerConfig, SearchSettings
    from shoprec.ranker.search import SearchIndex

    cfg = RankerConfig.from_dict({"search": {"fusion": "rrf", "rerank_weight": 0.25}})
    assert cfg.search == SearchSettings(fusion="rrf", rerank_weight=0.25)
    assert RankerConfig.from_dict(cfg.to_dict()) == cfg
    built = SearchIndex.build(["a", "b"], ["red drill", "blue saw"],
                              settings=SearchSettings(bm25_method="lucene", bm25_k1=0.9, bm25_b=0.3))
    assert (built.bm25.method, built.bm25.k1, built.bm25.b) == ("lucene", 0.9, 0.3)
    default = SearchIndex.build(["a", "b"], ["red drill", "blue saw"])
    assert (default.bm25.method, default.bm25.k1, default.bm25.b) == ("lucene", 0.4, 0.5)
    with pytest.raises(ValueError, match="bm25l and bm25"):
        SearchIndex.build(["a"], ["red drill"], settings=SearchSettings(bm25_method="bm25+"))
    with pytest.raises(ValueError, match="unknown search fusion 'sum'"):
        SearchIndex([], [], type("B", (), {"vocab_dict": {}})(), None, settings=SearchSettings(fusion="sum"))

"""The pieces of benchmarks/ranker.py homedepot on tiny inputs: --keep labels carried rows with their command,
the relevant-query sets, the fusion variants and fusions, the search path's re-rank blend."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("ranker")


def test_keep_labels_every_carried_row_with_the_command_that_made_it(bench, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    out.write_text(json.dumps({"command": "old", "rerank": {"bm25": {"ndcg@10": 0.9}, "x": {"made_by": "older"}},
                               "significance": {"x - bm25": {"diff": 0.1}}, "valid": {"rerank": {"x": {}}}}))
    monkeypatch.setattr(bench.sys, "argv", ["ranker.py", "homedepot", "--keep"])
    args = argparse.Namespace(keep=True, threads=1, valid_queries=400)
    res = bench.start_results(args, out)
    assert res["command"] == "benchmarks/ranker.py homedepot --keep" and res["earlier_commands"] == ["old"]
    assert res["rerank"]["bm25"]["made_by"] == "old" and res["rerank"]["x"]["made_by"] == "older"
    assert res["significance"]["x - bm25"]["made_by"] == "old"
    assert res["valid"]["rerank"]["x"]["made_by"] == "old" and res["valid"]["retrieve"] == {}
    fresh = bench.start_results(argparse.Namespace(keep=False, threads=1, valid_queries=400), out)
    assert fresh["rerank"] == {} and "earlier_commands" not in fresh


def test_retrieve_set_keeps_queries_with_a_relevant_product(bench):
    frame = pd.DataFrame({"search_term": ["a", "a", "b"], "product_uid": [7, 8, 7], "relevance": [3.0, 1.0, 2.0]})
    assert bench.retrieve_set(frame, {7: 0, 8: 1}) == (["a"], [{0: 3.0, 1: 1.0}])


def test_fusion_variants_and_fusions(bench):
    args = argparse.Namespace(fuse_depths=[100], bi_weights=[1.0], alphas_max=[], alphas_z=[0.6])
    variants = bench.fusion_variants(args, 200)
    assert list(variants.values()) == [("rrf", 100, 1.0), ("z", 200, 0.6)]
    bl, dl = [[0, 1, 2]], [[2, 3]]
    assert bench.fuse(("rrf", 100, 1.0), ["q"], bl, dl, None, None, None)[0][0] == 2  # in both lists: first

    class FakeBM25:
        def get_scores(self, toks):
            return np.array([3.0, 2.0, 1.0, 0.0])

    vecs = np.eye(4)
    qv = np.array([0.0, 0.0, 0.0, 1.0])  # the cosine favours product 3, BM25 product 0
    out_bm25 = bench.fuse(("z", 200, 0.9), ["drill"], bl, dl, [qv], vecs, FakeBM25())[0]
    out_cos = bench.fuse(("z", 200, 0.1), ["drill"], bl, dl, [qv], vecs, FakeBM25())[0]
    assert sorted(out_bm25) == [0, 1, 2, 3] and out_bm25[0] == 0 and out_cos[0] == 3


def test_reranked_blends_only_the_first_depth(bench):
    fused = [([10, 11, 12], np.array([3.0, 2.0, 1.0]))]
    cross = [np.array([0.0, 5.0])]
    assert bench.reranked(fused, cross, 1.0, 2) == [[11, 10, 12]]  # cross-encoder order alone on the first 2
    assert bench.reranked(fused, cross, 0.0, 2) == [[10, 11, 12]]  # fused order alone

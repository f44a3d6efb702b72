"""The pieces of benchmarks/search_depth.py that need no models: variants, model paths, the table and its target."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.fixture(scope="module")
def sd(load_benchmark):
    return load_benchmark("search_depth")


def test_variants_are_int8_at_every_depth_then_fp32_and_short_pairs_at_20(sd):
    assert sd.variants_of([0, 20], [24]) == [("int8", 0, []), ("int8", 20, []), ("fp32", 20, ["--no-int8"]),
                                             ("int8-len24", 20, ["--pair-max-len", "24"])]


def test_model_paths_prefer_saved_folders_then_checkpoints(sd, tmp_path):
    args = sd.parse_args(["--from-work", str(tmp_path)])
    cross, bi, vectors = sd.model_paths(args)
    assert (cross, bi, vectors) == (tmp_path / "lora-cross" / "cross", tmp_path / "lora-bi" / "bi",
                                    tmp_path / "lora-bi-vectors.npy")  # nothing there: the last candidate
    (tmp_path / "lora-cross").mkdir()
    (tmp_path / "lora-cross" / "config.json").write_text("{}")
    assert sd.model_paths(args)[0] == tmp_path / "lora-cross"
    (tmp_path / "ranker" / "bi_encoder").mkdir(parents=True)
    assert sd.model_paths(args)[:2] == (tmp_path / "ranker", tmp_path / "ranker" / "bi_encoder")
    given = sd.parse_args(["--from-work", str(tmp_path), "--cross", "x", "--bi", "y", "--vectors", "z.npy"])
    assert sd.model_paths(given) == (sd.Path("x"), sd.Path("y"), sd.Path("z.npy"))


def test_test_queries_keep_those_with_a_relevant_product(sd):
    df = pd.DataFrame({"split": ["test", "test", "test", "train"], "search_term": ["a", "a", "b", "c"],
                       "product_uid": [10, 11, 10, 11], "relevance": [3.0, 1.0, 2.0, 3.0]})
    assert sd.relevant_test_queries(df, [10, 11]) == (["a"], [{0: 3.0, 1: 1.0}])


def test_table_joins_quality_and_latency_and_checks_p99_at_20(sd):
    res = {"quality": {"int8@20": {"ndcg@10": 0.42, "recall@100": 0.8, "mrr@10": 0.48}},
           "latency": {"int8@20": {"p50_ms": 38.9, "p99_ms": 44.3, "server_cpu_ms_per_request": 37.8}}}
    table, target = sd.results_table(res, sd.variants_of([20], []))
    assert table[0] == {"cross_encoder": "int8", "rerank_depth": 20, "ndcg@10": 0.42, "recall@100": 0.8,
                        "mrr@10": 0.48, "p50_ms": 38.9, "p99_ms": 44.3, "server_cpu_ms_per_request": 37.8}
    assert table[1]["cross_encoder"] == "fp32" and table[1]["ndcg@10"] is None
    assert target == {"check": "p99_ms at depth 20 (int8, concurrency 1) <= 60", "p99_ms": 44.3, "met": True}
    assert sd.results_table({"quality": {}, "latency": {}}, [])[1]["met"] is None


def test_serve_json_gets_the_depth_20_row(sd, tmp_path):
    path = tmp_path / "serve.json"
    path.write_text(json.dumps({"endpoints": {"recommend": {}}}))
    res = {"command": "cmd", "latency": {"int8@20": {"p50_ms": 1.0, "p99_ms": 2.0}}}
    sd.update_serve_json(res, {"search": {"fusion": "zscore"}}, path)
    row = json.loads(path.read_text())["endpoints"]["search"]["shoprec-homedepot-rerank20"]
    assert row["p99_ms"] == 2.0 and row["rps_c1"] is None and row["command"] == "cmd"

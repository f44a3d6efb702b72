"""The LoRA MiniLM ranker, on a tiny randomly initialised BERT (fast) plus one short run on the real MiniLM."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from shoprec.metrics import ndcg_at_k  # noqa: E402
from shoprec.ranker import RankerConfig, SearchIndex, evaluate_ranker, load_ranker, train_ranker  # noqa: E402
from shoprec.ranker.config import LoraSettings, minilm_dir  # noqa: E402
from shoprec.ranker.models import (  # noqa: E402
    Ranker,
    build_bi_encoder,
    build_cross_encoder,
    load_model,
    merged_copy,
    quantize_int8,
    save_model,
)
from shoprec.ranker.search import light_stem, rrf, rrf_scores  # noqa: E402
from shoprec.ranker.train import Pair, fit_cross_encoder, listwise_loss, split_keys  # noqa: E402

WORDS = ["hose", "drill", "kettle", "mug", "tent", "lamp", "pen", "saddle", "mouse", "blanket"]


def tiny_encoder(seed=0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    return BertModel(cfg, add_pooling_layer=False)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> str:
    """A folder with a tiny random BERT and the real MiniLM tokenizer files, usable as ``base_model``."""
    import shutil

    d = tmp_path_factory.mktemp("tiny")
    tiny_encoder().save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if os.path.exists(os.path.join(minilm_dir(), f)):
            shutil.copy(os.path.join(minilm_dir(), f), d / f)
    return str(d)


@pytest.fixture(scope="module")
def tokenizer(tiny_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base)


def test_lora_trains_only_adapters_and_heads(tiny_base):
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(r=4, alpha=8))
    m = build_cross_encoder(cfg)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "_head" in n for n in trainable)
    # adapters on q, k, v, attention output and both FFN layers of both layers
    assert sum("lora_A" in n for n in trainable) == 2 * 6
    full = build_cross_encoder(RankerConfig(base_model=tiny_base, lora=LoraSettings(enabled=False)))
    assert all(p.requires_grad for p in full.parameters())


def test_lora_on_top_layers_only_skips_backward_below(tiny_base, tokenizer):
    """``LoraSettings.layers``: adapters only in the named layers; nothing below them gets a gradient."""
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(r=4, alpha=8, layers=[1]))
    cfg = RankerConfig.from_dict(cfg.to_dict())  # the field survives a config round trip
    assert cfg.lora.layers == [1]
    m = build_cross_encoder(cfg)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert sum("lora_A" in n for n in trainable) == 6 and all("layer.1." in n for n in trainable if "lora_" in n)
    seen = []
    layer0 = [mod for n, mod in m.named_modules() if n.endswith("encoder.layer.0")][0]
    layer0.register_full_backward_hook(lambda mod, gi, go: seen.append(1))
    enc = tokenizer(["red drill"], ["cordless drill"], return_tensors="pt")
    m(**enc)[1].sum().backward()
    assert not seen  # autograd stopped at layer 1
    assert all(p.grad is not None for n, p in m.named_parameters() if p.requires_grad and "lora_B" in n)


def test_segments_pooling_starts_at_the_cosine_and_round_trips(tiny_base, tokenizer, tmp_path):
    """``cross_pooling="segments"``: the untrained relevance is the cosine of the two texts' mean states; save/load keeps it."""
    cfg = RankerConfig(base_model=tiny_base, aux_task="relevance", cross_pooling="segments",
                       lora=LoraSettings(r=4, alpha=8, layers=[1]))
    m = build_cross_encoder(cfg).eval()
    a, b = ["red drill", "mug"], ["cordless drill", "garden hose with a long name"]
    enc = tokenizer(a, b, return_tensors="pt", padding=True)
    with torch.no_grad():
        states = m.encoder(**enc).last_hidden_state
    tt, am = enc["token_type_ids"].float(), enc["attention_mask"].float()
    seg_a = (1 - tt) * am
    seg_a[:, 0] = 0
    mean = [torch.nn.functional.normalize((states * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True), dim=-1)
            for w in (seg_a, tt * am)]
    cos = (mean[0] * mean[1]).sum(-1)
    with torch.no_grad():
        m.aux_head.weight[:, :32].zero_()
    got = Ranker(m, tokenizer, cfg).score(a, b, head="aux")
    np.testing.assert_allclose(got, cos.numpy(), atol=1e-5)
    save_model(m, tmp_path, cfg)
    np.testing.assert_allclose(load_ranker(tmp_path).score(a, b, head="aux"), got, atol=1e-5)


def test_score_keeps_the_given_order_with_length_sorted_batches(tiny_base, tokenizer):
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(enabled=False))
    r = Ranker(build_cross_encoder(cfg).eval(), tokenizer, cfg)
    a = ["drill", "a much longer query about garden hoses", "mug", "tent"]
    b = ["cordless drill with two batteries and a case", "hose", "mug", "tent for four people"]
    together = r.score(a, b, batch_size=2)
    one_by_one = np.concatenate([r.score([x], [y]) for x, y in zip(a, b)])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_bi_collate_masks_false_negatives_and_takes_hard_negatives(tokenizer):
    from shoprec.ranker.train import bi_collate

    coll = bi_collate(tokenizer, 16)
    b = coll([("drill", "drill a"), ("drill", "drill b"), ("mug", "drill a")])
    # same product for two queries, or two positives of the same query: not negatives of each other
    assert b["same"].tolist() == [[False, True, True], [True, False, False], [True, False, False]]
    b = coll([("drill", "drill a", "hose"), ("mug", "mug a", "drill a")])
    assert b["input_ids"].shape[0] == 6 and b["same"].shape == (2, 4)
    assert b["same"].tolist() == [[False, False, False, True], [False, False, False, False]]


def test_save_merges_lora_and_loads_without_pickle(tiny_base, tokenizer, tmp_path):
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(r=4, alpha=8))
    m = build_cross_encoder(cfg).eval()
    with torch.no_grad():  # make the adapters non-zero so merging matters
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    a, b = ["red drill"] * 3, ["cordless drill 18v", "garden hose", "mug"]
    before = Ranker(m, tokenizer, cfg).score(a, b)
    save_model(m, tmp_path, cfg)
    assert {p.name for p in tmp_path.iterdir()} >= {"model.safetensors", "config.json", "vocab.txt"}
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.bin"))
    loaded, meta = load_model(tmp_path)
    assert meta["kind"] == "cross" and not any("lora" in k for k in loaded.state_dict())
    r = load_ranker(tmp_path)
    np.testing.assert_allclose(r.score(a, b), before, atol=1e-5)
    assert r.score(a, b, head="aux").shape == (3,)
    # the trained (unmerged) model was left alone
    assert any("lora_" in n for n, _ in m.named_parameters())
    np.testing.assert_allclose(Ranker(merged_copy(m), tokenizer, cfg).score(a, b), before, atol=1e-5)


def test_int8_quantisation_keeps_scores_close(tiny_base, tokenizer):
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(enabled=False))
    m = build_cross_encoder(cfg).eval()
    q = quantize_int8(m)
    assert any("quantized" in type(mod).__module__ for mod in q.modules())
    # the score heads stay float: int8 rounding of a one-output head is the ranking signal's own noise
    assert type(q.click_head) is nn.Linear and type(q.aux_head) is nn.Linear
    assert q.aux_head.weight.dtype == torch.float32
    a, b = ["drill"] * 8, [f"{w} pro" for w in WORDS[:8]]
    np.testing.assert_allclose(Ranker(q, tokenizer, cfg).score(a, b), Ranker(m, tokenizer, cfg).score(a, b),
                               atol=0.02)


def test_cross_encoder_learns_query_title_match(tiny_base, tokenizer, tmp_path):
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    def groups(n):
        out = []
        for _ in range(n):
            q = str(rng.choice(WORDS))
            others = [w for w in WORDS if w != q]
            out.append([Pair(q, f"acme {q} pro", 1.0, 1.0)] +
                       [Pair(q, f"acme {w} pro", 0.0, 0.0) for w in rng.choice(others, 3, replace=False)])
        return out

    train, valid = groups(160), groups(20)
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(enabled=False), listwise_weight=0.5,
                       fit=dict(epochs=10, batch_size=8, lr=3e-3, warmup_ratio=0.1, metric="auc", mode="max",
                                patience=10, progress=False, fgm_epsilon=0.1))
    cfg = RankerConfig.from_dict(cfg.to_dict())
    model, summary = fit_cross_encoder(cfg, train, valid, tmp_path, tokenizer=tokenizer)
    assert summary["best_auc"] > 0.9, summary["history"]
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]


def test_metrics_and_helpers():
    assert ndcg_at_k(np.array([3.0, 2, 1]), np.array([1.0, 0, 0])) == pytest.approx(1.0)
    assert ndcg_at_k(np.array([1.0, 2, 3]), np.array([1.0, 0, 0])) == pytest.approx(0.5)
    # 3: 1/63 + 1/61; 1: 1/61; 2 and 4: 1/62 each, tied, so in the order first seen
    assert rrf_scores([[1, 2, 3], [3, 4]]) == pytest.approx({1: 1 / 61, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 62})
    assert rrf([[1, 2, 3], [3, 4]]) == [3, 1, 2, 4]
    assert rrf([[9, 2], [5, 7]]) == [9, 5, 2, 7]  # ties by first sight, not by id
    # k=0: 1 and 2 score 1 + 1/2 each (tie: first seen first); then 2 (1/2 + 1) before 1 (1)
    assert rrf([[1, 2], [2, 1]], k=0) == [1, 2] and rrf([[1, 2], [2]], k=0) == [2, 1]
    assert light_stem(["drills", "boxes", "batteries", "glass", "hose"]) == ["drill", "box", "battery", "glass", "hose"]
    s1 = split_keys(list("abcdefghij") * 2, 0, 0.2, 0.2)
    assert s1 == split_keys(list("jihgfedcba"), 0, 0.2, 0.2)
    assert sorted(s1.values()).count("test") == 2 and sorted(s1.values()).count("valid") == 2
    loss = listwise_loss(torch.tensor([2.0, 0.0, 5.0, 1.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]),
                         torch.tensor([0, 0, 1, 1]))
    assert float(loss) < 0.2


def test_search_index_fuses_and_reranks(tiny_base, tokenizer, tmp_path):
    cfg = RankerConfig(base_model=tiny_base, lora=LoraSettings(enabled=False))
    ranker = Ranker(build_cross_encoder(cfg).eval(), tokenizer, cfg, build_bi_encoder(cfg).eval())
    titles = [f"{b} {w}" for b in ("acme", "orca", "vega") for w in WORDS]
    ids = [f"p{i}" for i in range(len(titles))]
    idx = SearchIndex.build(ids, titles, ranker)
    assert idx.vectors.shape == (len(titles), 32)
    np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-5)
    assert set(idx.bm25_topk(["drills"], 5)[0]) == {titles.index(f"{b} drill") for b in ("acme", "orca", "vega")}
    hits = idx.search("drills", k=5, rerank_depth=4)
    assert len(hits) == 5 and all(h["cross"] is not None for h in hits[:4]) and hits[4]["cross"] is None
    assert [h["score"] for h in hits[:4]] == sorted((h["score"] for h in hits[:4]), reverse=True)
    assert hits[4]["score"] == hits[4]["fused"]
    idx.save(tmp_path / "search")
    again = SearchIndex.load(tmp_path / "search", ranker)
    assert again.candidates(["orca mug"], 6) == idx.candidates(["orca mug"], 6)


def shop_features(folder: Path, n_queries: int = 60) -> Path:
    """A small features folder in shoprec.data.features' format: clicks go to titles containing the query word."""
    rng = np.random.default_rng(0)
    titles = [f"{b} {w} {s}" for b in ("acme", "orca") for w in WORDS for s in ("s", "xl")]
    items = pd.DataFrame({"idx": np.arange(1, len(titles) + 1, dtype=np.int32),
                          "item_id": [f"i{i}" for i in range(len(titles))], "title": titles})
    rows, samples = [], []
    for s in range(n_queries):
        q = str(rng.choice(WORDS))
        for pos, j in enumerate(rng.choice(len(titles), 6, replace=False)):
            click = q in titles[j] or rng.random() < 0.05
            rows.append((f"s{s}", q, f"i{j}", int(j) + 1, titles[j], float(pos), click, click and rng.random() < 0.3))
        h = " ; ".join(rng.choice(titles, 3))
        samples += [(h, 1, titles[0], 1), (h, 2, titles[1], 0)]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["session_id", "query", "item_id", "item_idx", "title", "position", "clicked",
                                "purchased"]).to_parquet(folder / "search_pairs.parquet")
    pd.DataFrame(samples, columns=["history", "item_idx", "title", "clicked"]).to_parquet(folder / "click_samples.parquet")
    items.to_parquet(folder / "items.parquet")
    return folder


def test_train_ranker_end_to_end_api(tiny_base, tmp_path):
    feats = shop_features(tmp_path / "features")
    cfg = {"base_model": tiny_base, "max_len": 16, "bi_max_len": 12, "lora": {"r": 4, "alpha": 8},
           "fit": {"epochs": 2, "batch_size": 4, "lr": 2e-3, "progress": False},
           "bi_fit": {"epochs": 1, "batch_size": 8, "progress": False}}
    summary = train_ranker(feats, tmp_path / "model", cfg)
    out = tmp_path / "model"
    assert summary["cross"]["trainable_params"] < summary["cross"]["total_params"]
    for f in ("model.safetensors", "config.json", "tokenizer.json", "bi_encoder/model.safetensors",
              "search/items.json", "search/vectors.npy", "metrics.json"):
        assert (out / f).exists(), f
    assert not (out / "work").exists()  # resume checkpoints are dropped after a successful run
    metrics = evaluate_ranker(out, feats)
    assert set(metrics) >= {"auc", "logloss", "search_ndcg@10"}
    # the same figures from the saved model's scores on the test split: sklearn's AUC/log-loss, NDCG@10 by hand
    from sklearn.metrics import log_loss, roc_auc_score

    from shoprec.ranker.train import shop_groups, subsample

    ranker = load_ranker(out)
    test = subsample(shop_groups(feats, ranker.cfg)["test"], ranker.cfg.max_eval_pairs, ranker.cfg.seed)
    pairs = [p for g in test for p in g]
    prob = np.clip(ranker.score([p.a for p in pairs], [p.b for p in pairs]).astype(np.float64), 1e-6, 1 - 1e-6)
    clicked = np.array([p.click for p in pairs])
    assert metrics["pairs"] == len(pairs) and 0 < clicked.sum() < len(pairs)
    assert metrics["auc"] == pytest.approx(roc_auc_score(clicked, prob), abs=1e-6)
    assert metrics["logloss"] == pytest.approx(log_loss(clicked, prob), rel=1e-5)
    ndcgs, i = [], 0
    for g in test:
        s, y = prob[i:i + len(g)], clicked[i:i + len(g)]
        i += len(g)
        if not np.isnan(g[0].aux) and y.sum() > 0:  # search impressions with a click
            ranked = [y[j] for j in sorted(range(len(g)), key=lambda j: -s[j])][:10]
            dcg = sum(gain / math.log2(r + 2) for r, gain in enumerate(ranked))
            ndcgs.append(dcg / sum(gain / math.log2(r + 2) for r, gain in enumerate(sorted(y, reverse=True)[:10])))
    assert metrics["search_impressions"] == sum(not np.isnan(g[0].aux) for g in test) and ndcgs
    assert metrics["search_ndcg@10"] == pytest.approx(np.mean(ndcgs), abs=1e-6)
    assert json.loads((out / "metrics.json").read_text())["test"]["auc"] == pytest.approx(metrics["auc"])
    idx = SearchIndex.load(out / "search", ranker)
    assert [h["item_id"] for h in idx.search("kettle", k=3, rerank_depth=3)]
    int8 = load_ranker(out, int8=True)
    assert int8.score(["kettle"], ["acme kettle s"]).shape == (1,)


def test_real_minilm_lora_few_steps(tmp_path):
    """The one test on the real pretrained MiniLM: a few LoRA steps, then merge + save + reload give the same scores."""
    from transformers import AutoTokenizer

    cfg = RankerConfig(max_len=24, lora=LoraSettings(r=8, alpha=16),
                       fit=dict(epochs=1, batch_size=2, lr=5e-4, max_steps_per_epoch=3, progress=False, threads=1))
    tok = AutoTokenizer.from_pretrained(minilm_dir())
    groups = [[Pair("cordless drill", "18v cordless drill kit", 1.0, 1.0), Pair("cordless drill", "garden hose", 0.0, 0.0)],
              [Pair("coffee mug", "ceramic coffee mug", 1.0, 0.0), Pair("coffee mug", "tent 4 person", 0.0, 0.0)]] * 3
    model, summary = fit_cross_encoder(cfg, groups, groups[:2], tmp_path, tokenizer=tok)
    assert summary["trainable_params"] / summary["total_params"] < 0.02
    a, b = [p.a for g in groups[:2] for p in g], [p.b for g in groups[:2] for p in g]
    before = Ranker(model, tok, cfg).score(a, b)
    save_model(model, tmp_path / "m", cfg)
    np.testing.assert_allclose(load_ranker(tmp_path / "m").score(a, b), before, atol=1e-4)


@pytest.mark.slow
def test_train_ranker_under_torchrun_two_processes(tiny_base, tmp_path):
    """The ranker trains with 2 gloo DDP workers through the shared trainer (python -m shoprec.ranker.train)."""
    import subprocess
    import sys

    feats = shop_features(tmp_path / "features", n_queries=30)
    cfg = {"base_model": tiny_base, "max_len": 16, "bi_max_len": 12, "lora": {"r": 4, "alpha": 8}, "threads": 1,
           "fit": {"epochs": 1, "batch_size": 4, "progress": False}, "bi_fit": {"epochs": 1, "batch_size": 8, "progress": False}}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "shoprec.ranker.train", "--features", str(feats), "--out", str(tmp_path / "m"), "--overrides", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert summary["cross"]["world_size"] == 2 and summary["bi"]["world_size"] == 2
    assert load_ranker(tmp_path / "m").score(["kettle"], ["acme kettle s"]).shape == (1,)


# ------------------------------------------------------------------ weighted losses
def test_pair_weights_scale_the_click_and_listwise_losses():
    from shoprec.ranker.train import _masked, listwise_loss

    # all-ones weights give the plain mean; a zero weight removes a pair from the loss
    pred, target = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.0, 0.0, float("nan")])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    assert float(_masked(bce, pred, target, torch.ones(3))) == pytest.approx(float(_masked(bce, pred, target)))
    assert float(_masked(bce, pred, target, torch.tensor([1.0, 0.0, 1.0]))) == pytest.approx(float(bce(pred[:1], target[:1])))
    s, y, g = torch.tensor([2.0, 0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0, 0, 1, 1])
    one = listwise_loss(s[:2], y[:2], g[:2])
    assert float(listwise_loss(s, y, g, weight=torch.tensor([1.0, 1.0, 0.0, 0.0]))) == pytest.approx(float(one))

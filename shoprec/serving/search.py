"""Product search as served: BM25 over the served titles, or the ranker's search index re-ranked by its cross-encoder."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from shoprec.serving.model_uri import resolve_model

if TYPE_CHECKING:
    from shoprec.serving.metrics import Metrics

log = logging.getLogger(__name__)


class TitleSearch:
    """BM25 over the served items' titles, tokenised and scored exactly as the ranker's search index does
    (:func:`shoprec.ranker.search.bm25_index`); row r of the index is vocabulary index r + 1."""

    def __init__(self, titles: list[str]):
        from shoprec.ranker.search import bm25_index

        self.bm25 = bm25_index(titles)

    def top(self, query: str, depth: int) -> list[tuple[int, float]]:
        from shoprec.ranker.search import bm25_tokenize

        words = bm25_tokenize([query])[0]
        if not words:
            return []
        scores = np.asarray(self.bm25.get_scores(words))
        depth = min(depth, len(scores))
        idx = np.argpartition(-scores, depth - 1)[:depth]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [(int(i) + 1, float(scores[i])) for i in idx if scores[i] > 0]


def load_search_ranker(ranker_dir: str, int8: bool = True, pair_max_len: int | None = None, jit: bool = True):
    """The ranker for /v1/search: the cross-encoder int8-quantised (``int8``), the bi-encoder kept in float32
    so query vectors match the product vectors it made offline. ``pair_max_len`` overrides the pair length.

    ``jit``: both encoders traced and frozen with TorchScript (less per-op overhead: at a few hundred
    tokens per request it matters), kept only where they give the eager model's outputs on test batches.
    """
    from shoprec.ranker.models import load_ranker, quantize_int8  # only with --ranker: torch + transformers

    ranker = load_ranker(resolve_model(ranker_dir)[0], int8=False)  # a folder or models:/shoprec-ranker@champion
    if int8:
        ranker.cross = quantize_int8(ranker.cross)
    if pair_max_len:
        ranker.cfg.max_len = int(pair_max_len)
    if jit:
        ranker.cross = traced(ranker.cross, ranker.tokenizer, ranker.cfg.max_len, pairs=True)
        if ranker.bi is not None:
            ranker.bi = traced(ranker.bi, ranker.tokenizer, ranker.cfg.bi_max_len, pairs=False)
    return ranker


class _Traced:
    """A frozen TorchScript encoder called like the eager one (keyword arguments, ``token_type_ids`` optional)."""

    def __init__(self, module, eager, pairs: bool):
        self.module, self.eager, self.pairs = module, eager, pairs

    def __call__(self, input_ids, attention_mask, token_type_ids=None):
        if not self.pairs:
            return self.module(input_ids, attention_mask)
        if token_type_ids is None:
            import torch

            token_type_ids = torch.zeros_like(input_ids)
        return self.module(input_ids, attention_mask, token_type_ids)

    def eval(self):
        return self

    def __getattr__(self, name):  # config, encoder, ...: the eager model's
        return getattr(self.eager, name)


def traced(model, tokenizer, max_len: int, pairs: bool):
    """``model`` traced + frozen, or ``model`` itself if tracing fails or changes any output on batches of other
    shapes than the one traced (the graph must not have baked in a size)."""
    import torch

    def batch(n: int, words: int):
        a = [" ".join(["drill"] * (1 + i % 3)) for i in range(n)]
        b = [" ".join(["cordless hammer drill kit"] * (1 + (i * words) % 7)) for i in range(n)]
        kw = dict(truncation=True if not pairs else "longest_first", max_length=max_len, padding=True,
                  return_tensors="pt")
        enc = tokenizer(a, b, **kw) if pairs else tokenizer(b, **kw)
        keys = ("input_ids", "attention_mask", "token_type_ids") if pairs else ("input_ids", "attention_mask")
        return tuple(enc[k] for k in keys)

    try:
        with torch.inference_mode():
            module = torch.jit.freeze(torch.jit.trace(model.eval(), batch(4, 2), check_trace=False, strict=False))
            for n, w in ((1, 1), (7, 3), (20, 5)):
                x = batch(n, w)
                want, got = model(*x), module(*x)
                want = want if isinstance(want, tuple) else (want,)
                got = got if isinstance(got, tuple) else (got,)
                if any(float((g - e).abs().max()) > 1e-4 for g, e in zip(got, want)):
                    log.warning("traced %s differs from eager on a %d x %d batch: not traced", type(model).__name__,
                                *x[0].shape)
                    return model
    except Exception as e:  # noqa: BLE001 - fall back to the eager model
        log.warning("could not trace %s (%s): eager", type(model).__name__, e)
        return model
    return _Traced(module, model, pairs)


def index_factory(ranker, ranker_dir: str | None, search_index: str | None, int8: bool = True):
    """``make_index(rec) -> SearchIndex`` for each loaded recommender version.

    ``search_index``: one saved index (its own products), loaded once and shared by all versions.
    Otherwise the served items: the ranker's own ``search/`` index when it holds exactly those items,
    else one built now (BM25 + the bi-encoder's vectors of the titles). ``int8``: int8 product vectors.
    """
    from shoprec.ranker.search import SearchIndex

    if search_index:
        fixed = SearchIndex.load(search_index, ranker)
        if int8:
            fixed.quantize_vectors()
        if fixed.vectors is not None and not fixed.has_dense:
            log.warning("%s has product vectors but the ranker has no bi-encoder: BM25 candidates only", search_index)
        log.info("search index %s: %d products, retrievers %s", search_index, len(fixed.item_ids), fixed.retrievers)
        return lambda rec: fixed
    saved = resolve_model(ranker_dir)[0] / "search" if ranker_dir else None

    def make(rec):
        ids, titles = list(rec.item_ids[1:]), list(rec.titles[1:])
        if saved is not None and (saved / "items.json").exists():
            if json.loads((saved / "items.json").read_text()).get("item_ids") == ids:
                index = SearchIndex.load(saved, ranker)
                return index.quantize_vectors() if int8 else index
        t0 = time.perf_counter()
        index = SearchIndex.build(ids, titles, ranker)
        log.info("search index of %d served items built in %.1f s (retrievers %s)", len(ids),
                 time.perf_counter() - t0, index.retrievers)
        return index.quantize_vectors() if int8 else index

    return make


def index_search(index, query: str, k: int, rerank_depth: int, metrics: Metrics | None = None) -> dict:
    """Fused candidates for ``query``, the first ``rerank_depth`` re-ranked: the /v1/search answer's items."""
    depth = rerank_depth if index.has_cross else 0
    t0 = time.perf_counter()
    cand, fused = index.fused([query], depth=max(k, depth))[0]
    t1 = time.perf_counter()
    depth = min(depth, len(cand))
    docs, scores, cross = index.rerank_scored(query, cand, depth, fused)
    if metrics is not None:
        metrics.search_stage.labels("candidates").observe(t1 - t0)
        if depth:
            metrics.search_stage.labels("rerank").observe(time.perf_counter() - t1)
    items = [{"item_id": index.item_ids[d], "title": index.titles[d], "score": round(sc, 6),
              "cross_score": None if cr is None else round(cr, 6), "reranked": cr is not None}
             for d, sc, cr in zip(docs[:k], scores[:k], cross[:k])]
    return {"items": items, "reranked": depth > 0, "retrievers": index.retrievers, "rerank_depth": depth}

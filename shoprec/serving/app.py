"""HTTP JSON server for the recommender and product search (FastAPI + uvicorn).

    shoprec serve --model models:/shoprec-seqrec@champion --port 8080 [--ranker DIR] [--search-index DIR]
                  [--int8/--no-int8] [--poll-seconds 30]

Endpoints (schema at ``/openapi.json``, docs at ``/docs``):

- ``POST /v1/recommend`` ``{"user_id": "u000001", "k": 10}`` or ``{"history": ["p00001", ...], "k": 10}``
  -> ``{"items": [{"item_id", "title", "score"}, ...], "model", "version", "unknown_items"}``
- ``POST /v1/score`` ``{"user_id" | "history", "item_ids": [...]}`` -> the model's score of each given item
- ``POST /v1/search`` ``{"query": "red drill", "k": 10, "rerank_depth": 20}`` -> products. Without a ranker:
  BM25 over the served items' titles. With ``--ranker``: BM25 top 100 and bi-encoder top 100 (query
  embedded by the ranker's bi-encoder, dot product with the product vectors) fused as the ranker's
  ``search`` settings say (standardised-score sum or reciprocal rank), the first ``rerank_depth`` (default
  20, 0..50) re-ranked by the cross-encoder (int8 unless ``--no-int8``), optionally blended with the fused
  score. The products are the served items (vectors computed at load), or those of a saved
  :class:`~shoprec.ranker.search.SearchIndex` given with ``--search-index``. The answer names the
  retrievers and the depth used. Each item's ``score`` is what the list is ordered by (re-ranked items first),
  ``cross_score`` the cross-encoder's own score (null where it did not score the item).
- ``POST /admin/reload`` -> look the alias up now and swap in the version it points at
- ``GET /livez`` (process up), ``/readyz`` and ``/healthz`` (a model is loaded), ``/metrics`` (Prometheus)

Bad requests get a 4xx that says what is wrong: unknown user (404), bad JSON, unknown item ids, empty
query, both or neither of user_id/history, k outside 1..100, oversize lists (422), a body over the
size limit (413). With ``SHOPREC_API_TOKEN`` set, ``/v1/*`` and ``/admin/*`` need
``Authorization: Bearer <token>`` (401 without, 403 with a wrong one); health and metrics stay open.

Serving a ``models:/NAME@ALIAS`` URI, the server polls the alias every ``poll_seconds`` and swaps the
new version in atomically: a request runs start to end on the model it started with, so none is
dropped. Concurrent requests are micro-batched (:mod:`shoprec.serving.batching`) into one forward.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoprec.seqrec.recommend import UnknownUser
from shoprec.serving.batching import Job
from shoprec.serving.guard import MAX_BODY_BYTES, TOKEN_ENV, Guard
from shoprec.serving.loading import Loaded, ModelHolder
from shoprec.serving.metrics import Metrics
from shoprec.serving.model_uri import resolve_model
from shoprec.serving.schemas import (
    DEFAULT_RERANK,
    RecommendRequest,
    RecommendResponse,
    ScoreRequest,
    ScoreResponse,
    SearchRequest,
    SearchResponse,
    _UserOrHistory,
)

log = logging.getLogger(__name__)


def _json(obj) -> Response:
    return Response(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), media_type="application/json")


# ------------------------------------------------------------------ search with the ranker


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


# ------------------------------------------------------------------ the app


def create_app(model_uri: str, ranker_dir: str | None = None, poll_seconds: float = 0.0, max_batch: int = 64,
               max_wait_ms: float = 0.0, max_body: int = MAX_BODY_BYTES, token: str | None = None,
               infer_thread: bool | None = None, search_index: str | None = None, int8: bool = True,
               pair_max_len: int | None = None) -> FastAPI:
    """The server for ``model_uri``; loads it before returning (a bad URI raises here, not at the first request).

    ``infer_thread``: run batched forwards and ranker searches on their own thread (default: only with
    more than 2 cores; with 2, the event loop runs them and no request pays a thread hop).
    ``ranker_dir`` / ``search_index`` / ``int8`` / ``pair_max_len``: see the module docstring.
    """
    token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    metrics = Metrics()
    if infer_thread is None:
        infer_thread = (os.cpu_count() or 1) > 2
    executor = ThreadPoolExecutor(1, thread_name_prefix="shoprec-infer") if infer_thread else None
    ranker = None
    make_index = None
    if ranker_dir:
        ranker = load_search_ranker(ranker_dir, int8=int8, pair_max_len=pair_max_len)
        log.info("search re-ranks with the ranker in %s (cross-encoder %s, pairs of at most %d tokens)", ranker_dir,
                 "int8" if int8 else "float32", ranker.cfg.max_len)
    if ranker is not None or search_index:
        make_index = index_factory(ranker, ranker_dir, search_index, int8=int8)
    holder = ModelHolder(model_uri, executor, max_batch=max_batch, max_wait_ms=max_wait_ms, on_batch=metrics.on_batch,
                         make_index=make_index)
    holder.load()
    metrics.set_model(holder.current, model_uri)
    if holder.current.index is not None:  # first calls of the tokenizer and the quantised kernels are slow
        for depth in (0, DEFAULT_RERANK):
            index_search(holder.current.index, "warm up", 10, depth)
    search_pool = ThreadPoolExecutor(1, thread_name_prefix="shoprec-search") if infer_thread else None
    reload_lock = asyncio.Lock()

    async def reload(force: bool) -> dict:
        async with reload_lock:
            try:
                result = await asyncio.to_thread(holder.load, force)
            except Exception:
                metrics.reloads.labels("error").inc()
                raise
            metrics.reloads.labels("changed" if result["changed"] else "unchanged").inc()
            if result["changed"]:
                metrics.set_model(holder.current, model_uri)
            return result

    async def poll() -> None:
        while True:
            await asyncio.sleep(poll_seconds)
            try:
                await reload(False)
            except Exception as e:  # noqa: BLE001 - keep serving the model we have
                log.warning("alias poll of %s failed, still serving v%s: %s", model_uri, holder.current.version, e)

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(poll()) if poll_seconds > 0 and holder.alias else None
        yield
        if task:
            task.cancel()
        if executor:
            executor.shutdown(wait=False)
        if search_pool:
            search_pool.shutdown(wait=False)

    app = FastAPI(title="shoprec", version=holder.current.version, lifespan=lifespan,
                  description="Recommendations and product search from the shop's champion model.")
    bearer = HTTPBearer(auto_error=False, description=f"Needed when the server has {TOKEN_ENV} set.")

    async def documented_auth(_: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        """Checked by the Guard middleware; declared here so the schema shows the bearer scheme."""

    protected = [Depends(documented_auth)] if token else []

    def history_for(m: Loaded, req: _UserOrHistory) -> tuple[list[int], list[str]]:
        if req.user_id is not None:
            try:
                return m.rec.history_of(req.user_id), []
            except UnknownUser:
                raise HTTPException(404, f"unknown user_id {req.user_id!r}: send a history instead") from None
        history, unknown = m.rec.encode(req.history or [])
        if req.history and not history:
            raise HTTPException(422, f"none of the {len(req.history)} history items is known to the model")
        return history, unknown

    @app.get("/livez", tags=["health"])
    async def livez() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        m = holder.current
        if m is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "model": m.name, "version": m.version}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        m = holder.current
        return {"status": "ok", "model": m.name, "version": m.version, "items": m.rec.n_items,
                "uri": model_uri, "loaded_at": m.loaded_at, "ranker": bool(ranker),
                "search": m.index.retrievers if m.index is not None else ["bm25"]}

    @app.get("/metrics", tags=["health"])
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/recommend", response_model=RecommendResponse, dependencies=protected, tags=["v1"])
    async def recommend(req: RecommendRequest):
        m = holder.current
        history, unknown = history_for(m, req)
        picked = await m.batcher.submit(Job("recommend", history, req.k, req.exclude_seen))
        ids, titles = m.rec.item_ids, m.rec.titles
        return _json({"items": [{"item_id": ids[j], "title": titles[j], "score": round(v, 5)} for j, v in picked],
                      "model": m.name, "version": m.version, "unknown_items": unknown})

    @app.post("/v1/score", response_model=ScoreResponse, dependencies=protected, tags=["v1"])
    async def score(req: ScoreRequest):
        m = holder.current
        history, unknown = history_for(m, req)
        index = m.rec.index
        missing = [i for i in req.item_ids if i not in index]
        if missing:
            raise HTTPException(422, f"unknown item_ids ({len(missing)}): {missing[:10]}")
        scores = await m.batcher.submit(Job("score", history, candidates=[index[i] for i in req.item_ids]))
        return _json({"scores": [{"item_id": i, "score": round(s, 5)} for i, s in zip(req.item_ids, scores)],
                      "model": m.name, "version": m.version, "unknown_items": unknown})

    def run_search(m: Loaded, req: SearchRequest) -> dict:
        if m.index is not None:
            out = index_search(m.index, req.query, req.k, req.rerank_depth, metrics)
        else:  # BM25 over the served titles only
            ids, titles = m.rec.item_ids, m.rec.titles
            out = {"items": [{"item_id": ids[j], "title": titles[j], "score": round(v, 5), "cross_score": None,
                              "reranked": False}
                             for j, v in m.search.top(req.query, req.k)],
                   "reranked": False, "retrievers": ["bm25"], "rerank_depth": 0}
        return {**out, "model": m.name, "version": m.version}

    @app.post("/v1/search", response_model=SearchResponse, dependencies=protected, tags=["v1"])
    async def search(req: SearchRequest):
        m = holder.current
        if search_pool is None or m.index is None:  # BM25 alone is cheaper than a thread hop
            return _json(run_search(m, req))
        return _json(await asyncio.get_running_loop().run_in_executor(search_pool, run_search, m, req))

    @app.post("/admin/reload", dependencies=protected, tags=["admin"])
    async def admin_reload(force: bool = False) -> dict:
        """Look up the alias now and serve the version it points at (``force``: reload even if unchanged)."""
        try:
            return await reload(force)
        except Exception as e:  # noqa: BLE001
            raise HTTPException(502, f"reload of {model_uri} failed, still serving v{holder.current.version}: {e}") from e

    app.state.holder, app.state.metrics = holder, metrics
    app.add_middleware(Guard, metrics=metrics, max_body=max_body, token=token)
    return app


def run_server(model_uri: str, host: str = "127.0.0.1", port: int = 8080, ranker_dir: str | None = None,
               poll_seconds: float = 30.0, max_batch: int = 64, max_wait_ms: float = 0.0,
               torch_threads: int | None = None, max_body: int = MAX_BODY_BYTES, infer_thread: bool | None = None,
               search_index: str | None = None, int8: bool = True, pair_max_len: int | None = None) -> None:
    import torch
    import uvicorn

    # Forwards run on one inference thread while the event loop parses requests on another core:
    # with few cores, one intra-op thread each leaves room for both.
    cpus = os.cpu_count() or 1
    torch.set_num_threads(torch_threads or max(1, min(4, cpus // 2)))
    torch.set_num_interop_threads(1)
    app = create_app(model_uri, ranker_dir=ranker_dir, poll_seconds=poll_seconds, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, max_body=max_body, infer_thread=infer_thread,
                     search_index=search_index, int8=int8, pair_max_len=pair_max_len)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                loop="auto", http="auto", timeout_keep_alive=30)

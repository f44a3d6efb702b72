"""HTTP JSON server for the recommender and product search (FastAPI + uvicorn).

    shoprec serve --model models:/shoprec-seqrec@champion --port 8080 [--ranker DIR] [--search-index DIR]
                  [--int8/--no-int8] [--poll-seconds 30] [--rec-store redis://HOST:6379/0]

Endpoints (schema at ``/openapi.json``, docs at ``/docs``):

- ``POST /v1/recommend`` ``{"user_id": "u000001", "k": 10}`` or ``{"history": ["p00001", ...], "k": 10}``
  -> ``{"items": [{"item_id", "title", "score"}, ...], "model", "version", "unknown_items", "source"}``.
  With a recommendation store (``--rec-store`` or ``SHOPREC_REC_STORE_URL``: the night's batch lists in Redis,
  :mod:`shoprec.data.rec_store`), a known ``user_id`` is answered from the store (``"source": "store"``, the
  ``version`` of the batch's model) when it holds at least ``k`` items for the shopper and ``exclude_seen`` is
  on; otherwise, and whenever the store fails (logged; it is skipped for a few seconds after a failure), the
  model answers (``"source": "model"``). A store never turns a request into a 500.
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shoprec.data.rec_store import URL_ENV as REC_STORE_ENV
from shoprec.data.rec_store import RecStore
from shoprec.seqrec.recommend import UnknownUser
from shoprec.serving.batching import Job
from shoprec.serving.guard import MAX_BODY_BYTES, TOKEN_ENV, Guard
from shoprec.serving.loading import Loaded, ModelHolder
from shoprec.serving.metrics import Metrics
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
from shoprec.serving.search import index_factory, index_search, load_search_ranker

log = logging.getLogger(__name__)


def _json(obj) -> Response:
    return Response(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), media_type="application/json")


# ------------------------------------------------------------------ the app


def create_app(model_uri: str, ranker_dir: str | None = None, poll_seconds: float = 0.0, max_batch: int = 64,
               max_wait_ms: float = 0.0, max_body: int = MAX_BODY_BYTES, token: str | None = None,
               infer_thread: bool | None = None, search_index: str | None = None, int8: bool = True,
               pair_max_len: int | None = None, rec_store: str | None = None) -> FastAPI:
    """The server for ``model_uri``; loads it before returning (a bad URI raises here, not at the first request).

    ``infer_thread``: run batched forwards and ranker searches on their own thread (default: only with
    more than 2 cores; with 2, the event loop runs them and no request pays a thread hop).
    ``ranker_dir`` / ``search_index`` / ``int8`` / ``pair_max_len``: see the module docstring.
    ``rec_store``: a Redis URL with the night's lists (default: ``SHOPREC_REC_STORE_URL``; empty: none).
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
    store = StoreReader(rec_store if rec_store is not None else os.environ.get(REC_STORE_ENV, ""))

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
                "search": m.index.retrievers if m.index is not None else ["bm25"], "rec_store": bool(store.url)}

    @app.get("/metrics", tags=["health"])
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/recommend", response_model=RecommendResponse, dependencies=protected, tags=["v1"])
    async def recommend(req: RecommendRequest):
        m = holder.current
        if store.url and req.user_id is not None and req.exclude_seen:
            stored = await store.lookup(m.name, req.user_id)
            if stored is not None and len(stored["items"]) >= req.k:
                metrics.rec_source.labels("store").inc()
                index, titles = m.rec.index, m.rec.titles  # titles from the served model ("" for an item it lacks)
                items = [{"item_id": i["item_id"], "title": titles[index[i["item_id"]]] if i["item_id"] in index else "",
                          "score": i["score"]} for i in stored["items"][:req.k]]
                return _json({"items": items, "model": m.name, "version": stored["version"], "unknown_items": [],
                              "source": "store"})
        history, unknown = history_for(m, req)
        picked = await m.batcher.submit(Job("recommend", history, req.k, req.exclude_seen))
        ids, titles = m.rec.item_ids, m.rec.titles
        metrics.rec_source.labels("model").inc()
        return _json({"items": [{"item_id": ids[j], "title": titles[j], "score": round(v, 5)} for j, v in picked],
                      "model": m.name, "version": m.version, "unknown_items": unknown, "source": "model"})

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


class StoreReader:
    """Reads shoppers' batch lists from the store without ever failing a request: an error is logged, the caller
    falls back to the model, and the store is left alone for ``backoff_s`` so a store that is down costs one
    timeout, not one per request."""

    def __init__(self, url: str, timeout: float = 0.25, backoff_s: float = 5.0):
        self.url, self.timeout, self.backoff_s = url, timeout, backoff_s
        self.stores: dict[str, RecStore] = {}
        self.down_until = 0.0
        if url:
            RecStore(url, "check")  # the client is installed (raises saying how to install it); no connection yet

    async def lookup(self, model_name: str, user_id: str) -> dict | None:
        loop = asyncio.get_running_loop()
        if loop.time() < self.down_until:
            return None
        store = self.stores.get(model_name)
        if store is None:
            store = self.stores[model_name] = RecStore(self.url, model_name, timeout=self.timeout)
        try:
            return await asyncio.to_thread(store.read, user_id)
        except Exception as e:  # noqa: BLE001 - the model answers instead
            self.down_until = loop.time() + self.backoff_s
            log.warning("recommendation store failed, the model answers for %.0f s: %s", self.backoff_s, e)
            return None


def run_server(model_uri: str, host: str = "127.0.0.1", port: int = 8080, ranker_dir: str | None = None,
               poll_seconds: float = 30.0, max_batch: int = 64, max_wait_ms: float = 0.0,
               torch_threads: int | None = None, max_body: int = MAX_BODY_BYTES, infer_thread: bool | None = None,
               search_index: str | None = None, int8: bool = True, pair_max_len: int | None = None,
               rec_store: str | None = None) -> None:
    import torch
    import uvicorn

    # Forwards run on one inference thread while the event loop parses requests on another core:
    # with few cores, one intra-op thread each leaves room for both.
    cpus = os.cpu_count() or 1
    torch.set_num_threads(torch_threads or max(1, min(4, cpus // 2)))
    torch.set_num_interop_threads(1)
    app = create_app(model_uri, ranker_dir=ranker_dir, poll_seconds=poll_seconds, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, max_body=max_body, infer_thread=infer_thread,
                     search_index=search_index, int8=int8, pair_max_len=pair_max_len, rec_store=rec_store)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                loop="auto", http="auto", timeout_keep_alive=30)

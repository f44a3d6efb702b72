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
  retrievers and the depth used; each item says whether the cross-encoder scored it.
- ``POST /admin/reload`` -> look the alias up now and swap in the version it points at
- ``GET /livez`` (process up), ``/readyz`` and ``/healthz`` (a model is loaded), ``/metrics`` (Prometheus)

Bad requests get a 4xx that says what is wrong: unknown user (404), bad JSON, unknown item ids, empty
query, both or neither of user_id/history, k outside 1..100, oversize lists (422), a body over the
size limit (413). With ``SHOPREC_API_TOKEN`` set, ``/v1/*`` and ``/admin/*`` need
``Authorization: Bearer <token>`` (401 without, 403 with a wrong one); health and metrics stay open.

Serving a ``models:/NAME@ALIAS`` URI, the server polls the alias every ``poll_seconds`` and swaps the
new version in atomically: a request runs start to end on the model it started with, so none is
dropped. Concurrent requests are micro-batched (:mod:`shoprec.batching`) into one forward.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, field_validator, model_validator

from shoprec.batching import Job, MicroBatcher, run_jobs
from shoprec.recommend import Recommender, UnknownUser
from shoprec.text import light_stem

log = logging.getLogger(__name__)

MAX_K = 100
MAX_HISTORY = 200
MAX_SCORE_ITEMS = 1000
MAX_QUERY = 256
MAX_RERANK = 50
DEFAULT_RERANK = 20
MAX_BODY_BYTES = 64 * 1024
TOKEN_ENV = "SHOPREC_API_TOKEN"
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics")


# ------------------------------------------------------------------ request and response bodies
class _UserOrHistory(BaseModel):
    user_id: str | None = Field(None, max_length=128, description="A shopper the model knows.")
    history: list[str] | None = Field(None, max_length=MAX_HISTORY, description="Item ids, oldest first.")

    @model_validator(mode="after")
    def one_of_user_or_history(self):
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id or history")
        return self


class RecommendRequest(_UserOrHistory):
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return.")
    exclude_seen: bool = Field(True, description="Leave out items already in the history.")


class ScoreRequest(_UserOrHistory):
    item_ids: list[str] = Field(..., min_length=1, max_length=MAX_SCORE_ITEMS, description="Items to score.")


class SearchRequest(BaseModel):
    query: str = Field(..., max_length=MAX_QUERY, description="What the shopper typed.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return.")
    rerank_depth: int = Field(DEFAULT_RERANK, ge=0, le=MAX_RERANK,
                              description="Fused candidates the cross-encoder re-scores (0: none; needs --ranker).")

    @field_validator("query")
    @classmethod
    def not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is empty")
        return v


class Item(BaseModel):
    item_id: str
    title: str
    score: float


class RecommendResponse(BaseModel):
    items: list[Item]
    model: str
    version: str
    unknown_items: list[str] = []


class ItemScore(BaseModel):
    item_id: str
    score: float


class ScoreResponse(BaseModel):
    scores: list[ItemScore]
    model: str
    version: str
    unknown_items: list[str] = []


class SearchItem(BaseModel):
    item_id: str
    title: str
    score: float = Field(description="Cross-encoder score if reranked, else the fused retrieval score.")
    reranked: bool = Field(False, description="Scored by the cross-encoder (among the first rerank_depth).")


class SearchResponse(BaseModel):
    items: list[SearchItem]
    reranked: bool
    retrievers: list[str] = Field(description="Candidate sources: bm25, and bi-encoder when the index has vectors.")
    rerank_depth: int = Field(description="Candidates the cross-encoder actually re-scored.")
    model: str
    version: str


# ------------------------------------------------------------------ models
def resolve_model(uri: str) -> tuple[Path, str, str]:
    """A local model folder for ``uri`` (a folder, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``)."""
    if uri.startswith("models:/"):
        from shoprec.registry import download_model_dir

        name, alias = parse_models_uri(uri)
        found = download_model_dir(name, alias)
        if found is None:
            raise RuntimeError(f"no model version at {uri} in {os.environ.get('MLFLOW_TRACKING_URI', 'the local store')}")
        folder, version = found
        return folder, name, version
    folder = Path(uri)
    from shoprec.models.seqrec import ENSEMBLE_FILE

    if not any((folder / f).exists() for f in ("model.safetensors", ENSEMBLE_FILE)):
        raise RuntimeError(f"{uri} is neither a models:/ URI nor a model folder with model.safetensors "
                           "(or an ensemble's ensemble.json)")
    return folder, folder.name, "local"


def model_created_at(uri: str, folder: Path, name: str, version: str) -> float:
    """When the served version was made, Unix seconds: its registry creation time for a ``models:/`` URI,
    else the newest mtime of the folder's weights (``model.safetensors`` or an ensemble's ``ensemble.json``)."""
    if uri.startswith("models:/") and version.isdigit():
        from shoprec.registry import client

        return client().get_model_version(name, version).creation_timestamp / 1000
    from shoprec.models.seqrec import ENSEMBLE_FILE

    return max((folder / f).stat().st_mtime for f in ("model.safetensors", ENSEMBLE_FILE) if (folder / f).exists())


def parse_models_uri(uri: str) -> tuple[str, str]:
    ref = uri[len("models:/"):]
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, alias = ref.partition("/")
    return name, alias


_WORD = re.compile(r"\w\w+")
_STOP = frozenset("a an and are as at be by for from in is it of on or the to with".split())


def tokenize(text: str) -> list[str]:
    """Lower-case words of 2+ characters, English plurals stripped (drills -> drill)."""
    return light_stem([w for w in _WORD.findall(text.lower()) if w not in _STOP])


class TitleSearch:
    """BM25 (bm25s) over the served items' titles; row r of the index is vocabulary index r + 1."""

    def __init__(self, titles: list[str]):
        import bm25s

        self.bm25 = bm25s.BM25()
        self.bm25.index([tokenize(t) or ["_"] for t in titles], show_progress=False)

    def top(self, query: str, depth: int) -> list[tuple[int, float]]:
        words = tokenize(query)
        if not words:
            return []
        scores = np.asarray(self.bm25.get_scores(words))
        depth = min(depth, len(scores))
        idx = np.argpartition(-scores, depth - 1)[:depth]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        return [(int(i) + 1, float(scores[i])) for i in idx if scores[i] > 0]


class Loaded:
    """One model version being served: recommender, search index and its batcher."""

    def __init__(self, folder: Path, name: str, version: str, executor, max_batch: int, max_wait_ms: float,
                 on_batch=None, make_index=None, created_at: float = 0.0):
        self.folder, self.name, self.version, self.created_at = folder, name, version, created_at
        self.rec = Recommender(folder)
        self.index = make_index(self.rec) if make_index else None  # SearchIndex: fused retrieval + re-rank
        self.search = None if self.index is not None else TitleSearch(self.rec.titles[1:])
        self.batcher = MicroBatcher(lambda jobs: run_jobs(self.rec, jobs), executor, max_batch=max_batch,
                                    max_wait_ms=max_wait_ms, on_batch=on_batch)
        some = next(iter(self.rec.histories.values()), [1])
        for n in (1, min(16, max_batch)):  # warm up so the first requests are not slow
            run_jobs(self.rec, [Job("recommend", some, 10)] * n)
        self.loaded_at = time.time()


class ModelHolder:
    """The model being served and how to reload it; ``current`` is swapped atomically."""

    def __init__(self, uri: str, executor, max_batch: int = 64, max_wait_ms: float = 0.0, on_batch=None,
                 make_index=None):
        self.uri, self.executor, self.make_index = uri, executor, make_index
        self.max_batch, self.max_wait_ms, self.on_batch = max_batch, max_wait_ms, on_batch
        self.current: Loaded | None = None
        self._lock = threading.Lock()
        self.alias = parse_models_uri(uri) if uri.startswith("models:/") and "@" in uri else None

    def load(self, force: bool = False) -> dict:
        """Load the version ``uri`` points at now, unless it is already served (blocking; call off the loop)."""
        with self._lock:
            old = self.current
            if old is not None and self.alias and not force:
                from shoprec.registry import version_by_alias

                mv = version_by_alias(*self.alias)
                if mv is None:
                    raise RuntimeError(f"{self.uri}: alias no longer set; still serving v{old.version}")
                if str(mv.version) == old.version:
                    return {"changed": False, "version": old.version}
            folder, name, version = resolve_model(self.uri)
            new = Loaded(folder, name, version, self.executor, self.max_batch, self.max_wait_ms, self.on_batch,
                         self.make_index, created_at=model_created_at(self.uri, folder, name, version))
            self.current = new
            log.info("serving %s v%s from %s (%d items, %d known shoppers)%s", name, version, folder,
                     new.rec.n_items, len(new.rec.histories), f"; was v{old.version}" if old else "")
            return {"changed": True, "version": version, "previous": old.version if old else None}


# ------------------------------------------------------------------ metrics and the ASGI guard
class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("shoprec_requests", "HTTP requests.", ["path", "status"], registry=r)
        self.errors = Counter("shoprec_request_errors", "HTTP requests answered 4xx or 5xx.", ["path", "status"],
                              registry=r)
        self.latency = Histogram("shoprec_request_latency_seconds", "Time from request to last byte.", ["path"],
                                 registry=r, buckets=(.0005, .001, .002, .003, .005, .0075, .01, .015, .025, .05,
                                                      .1, .25, .5, 1, 2.5))
        self.batch = Histogram("shoprec_batch_size", "Requests per model forward.", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.forward = Histogram("shoprec_batch_seconds", "Time of one batched forward.", registry=r,
                                 buckets=(.0005, .001, .002, .005, .01, .025, .05, .1))
        self.version = Gauge("shoprec_model_version", "Registered version being served (0: a local folder).",
                             ["model"], registry=r)
        self.info = Gauge("shoprec_model_info", "The model being served.", ["model", "version", "uri"], registry=r)
        self.created = Gauge("shoprec_model_created_timestamp_seconds", "When the served version was registered "
                             "(a local folder: its weights' mtime), Unix seconds.", ["model"], registry=r)
        self.reloads = Counter("shoprec_model_reloads", "Model reloads.", ["result"], registry=r)
        for result in ("changed", "unchanged", "error"):  # at 0 from the start, so the first error is an increase
            self.reloads.labels(result)
        self.search_stage = Histogram("shoprec_search_stage_seconds", "Time of one /v1/search stage.", ["stage"],
                                      registry=r, buckets=(.001, .0025, .005, .01, .02, .03, .04, .06, .1, .25, 1))

    def on_batch(self, n: int, seconds: float) -> None:
        self.batch.observe(n)
        self.forward.observe(seconds)

    def set_model(self, loaded: Loaded, uri: str) -> None:
        self.info.clear()
        self.info.labels(loaded.name, loaded.version, uri).set(1)
        self.version.labels(loaded.name).set(int(loaded.version) if loaded.version.isdigit() else 0)
        self.created.clear()
        self.created.labels(loaded.name).set(loaded.created_at)


KNOWN_PATHS = frozenset({"/v1/recommend", "/v1/score", "/v1/search", "/admin/reload", "/livez", "/readyz", "/healthz",
                         "/metrics", "/openapi.json", "/docs"})


class Guard:
    """Pure ASGI middleware: request metrics, body size limit (413) and the bearer token (401/403)."""

    def __init__(self, app, metrics: Metrics, max_body: int, token: str | None):
        self.app, self.metrics, self.max_body = app, metrics, max_body
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        label = path if path in KNOWN_PATHS else "other"
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            denied = self._check(scope, path)
            if denied:
                await _send_json(send_wrapper, *denied)
            else:
                await self.app(scope, self._limited(receive), send_wrapper)
        finally:
            code = status[0]
            m = self.metrics
            m.requests.labels(label, code).inc()
            if code >= 400:
                m.errors.labels(label, code).inc()
            m.latency.labels(label).observe(time.perf_counter() - t0)

    def _check(self, scope, path: str):
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return 413, {"detail": f"request body of {int(length)} bytes is over the limit of {self.max_body}"}, {}
        if self.token and (path.startswith("/v1/") or path.startswith("/admin/")):
            auth = headers.get(b"authorization", b"")
            scheme, _, given = auth.partition(b" ")
            if scheme.lower() != b"bearer" or not given:
                return 401, {"detail": "missing bearer token: send Authorization: Bearer <token>"}, {
                    b"www-authenticate": b"Bearer"}
            if not hmac.compare_digest(given.strip(), self.token):
                return 403, {"detail": "wrong bearer token"}, {}
        return None

    def _limited(self, receive):
        seen = [0]
        limit = self.max_body

        async def wrapped():
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise BodyTooLarge(limit)
            return message

        return wrapped


class BodyTooLarge(HTTPException):
    """Raised while FastAPI reads a body without Content-Length that outgrows the limit (it re-raises HTTPExceptions)."""

    def __init__(self, limit: int):
        super().__init__(413, f"request body is over the limit of {limit} bytes")


async def _send_json(send, status: int, body: dict, headers: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers.items()]})
    await send({"type": "http.response.body", "body": data})


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
    docs, scores = index.rerank(query, cand, depth, fused)
    if metrics is not None:
        metrics.search_stage.labels("candidates").observe(t1 - t0)
        if depth:
            metrics.search_stage.labels("rerank").observe(time.perf_counter() - t1)
    by_doc = dict(zip(cand, fused))
    items = [{"item_id": index.item_ids[d], "title": index.titles[d],
              "score": round(sc if sc is not None else by_doc[d], 6), "reranked": sc is not None}
             for d, sc in zip(docs[:k], scores[:k])]
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
            out = {"items": [{"item_id": ids[j], "title": titles[j], "score": round(v, 5), "reranked": False}
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

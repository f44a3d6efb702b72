"""HTTP JSON server for the recommender (FastAPI + uvicorn).

    shoprec serve --model models:/shoprec-seqrec@champion --port 8080

- ``POST /v1/recommend`` ``{"user_id": "u000001", "k": 10}`` or ``{"history": ["p00001", ...], "k": 10}``
  -> ``{"items": [{"item_id", "title", "score"}, ...], "model": ..., "version": ...}``
- ``GET /healthz`` -> model name and version once loaded.

Bad requests get a 4xx that says what is wrong: unknown user (404), bad JSON, both or neither of
user_id/history, k outside 1..100, oversize history (422).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, model_validator

from shoprec.recommend import Recommender, UnknownUser

log = logging.getLogger(__name__)

MAX_K = 100
MAX_HISTORY = 200


class RecommendRequest(BaseModel):
    user_id: str | None = Field(None, max_length=128, description="A shopper the model knows.")
    history: list[str] | None = Field(None, max_length=MAX_HISTORY, description="Item ids, oldest first.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return.")
    exclude_seen: bool = Field(True, description="Leave out items already in the history.")

    @model_validator(mode="after")
    def one_of_user_or_history(self):
        if (self.user_id is None) == (self.history is None):
            raise ValueError("give exactly one of user_id or history")
        return self


class Item(BaseModel):
    item_id: str
    title: str
    score: float


class RecommendResponse(BaseModel):
    items: list[Item]
    model: str
    version: str
    unknown_items: list[str] = []


def resolve_model(uri: str) -> tuple[Path, str, str]:
    """A local model folder for ``uri`` (a folder, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``)."""
    if uri.startswith("models:/"):
        from shoprec.registry import download_model_dir

        ref = uri[len("models:/"):]
        name, sep, alias = ref.partition("@")
        if not sep:
            name, _, alias = ref.partition("/")
        found = download_model_dir(name, alias)
        if found is None:
            raise RuntimeError(f"no model version at {uri} in {os.environ.get('MLFLOW_TRACKING_URI', 'the local store')}")
        folder, version = found
        return folder, name, version
    folder = Path(uri)
    if not (folder / "model.safetensors").exists():
        raise RuntimeError(f"{uri} is neither a models:/ URI nor a model folder with model.safetensors")
    return folder, folder.name, "local"


def create_app(model_uri: str) -> FastAPI:
    folder, name, version = resolve_model(model_uri)
    rec = Recommender(folder)
    log.info("serving %s v%s from %s (%d items, %d known shoppers)", name, version, folder, rec.n_items,
             len(rec.histories))
    app = FastAPI(title="shoprec", version=version, description="Recommendations from the shop's champion model.")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "model": name, "version": version, "items": rec.n_items}

    @app.post("/v1/recommend", response_model=RecommendResponse)
    def recommend(req: RecommendRequest) -> RecommendResponse:
        unknown: list[str] = []
        if req.user_id is not None:
            try:
                history = rec.history_of(req.user_id)
            except UnknownUser:
                raise HTTPException(404, f"unknown user_id {req.user_id!r}: send a history instead") from None
        else:
            history, unknown = rec.encode(req.history or [])
            if req.history and not history:
                raise HTTPException(422, f"none of the {len(req.history)} history items is known to the model")
        items = rec.recommend([history], k=req.k, exclude_seen=req.exclude_seen)[0]
        return RecommendResponse(items=items, model=name, version=version, unknown_items=unknown)

    return app


def run_server(model_uri: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    import torch
    import uvicorn

    # One process answers requests one at a time per thread; a few intra-op threads are plenty.
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    uvicorn.run(create_app(model_uri), host=host, port=port, log_level="info")

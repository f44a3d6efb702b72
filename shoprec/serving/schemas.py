"""Request and response bodies of the server's JSON API (pydantic), with the limits they enforce."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field, field_validator, model_validator

log = logging.getLogger(__name__)

MAX_K = 100
MAX_HISTORY = 200
MAX_SCORE_ITEMS = 1000
MAX_QUERY = 256
MAX_RERANK = 50
DEFAULT_RERANK = 20


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
    version: str = Field(description="The model version that made the list (for source=store: the batch's).")
    unknown_items: list[str] = []
    source: str = Field("model", description="'store': the night's batch list from the recommendation store; "
                        "'model': scored now by the served model.")


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
    score: float = Field(description="What the list is ordered by: for re-ranked items (which come first) the blend "
                         "of the cross-encoder's and the retrieval scores, below them the fused retrieval score.")
    cross_score: float | None = Field(None, description="The cross-encoder's own score; null if it did not score the item.")
    reranked: bool = Field(False, description="Scored by the cross-encoder (among the first rerank_depth).")


class SearchResponse(BaseModel):
    items: list[SearchItem]
    reranked: bool
    retrievers: list[str] = Field(description="Candidate sources: bm25, and bi-encoder when the index has vectors.")
    rerank_depth: int = Field(description="Candidates the cross-encoder actually re-scored.")
    model: str
    version: str

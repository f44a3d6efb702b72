"""Product search: BM25 (bm25s) + bi-encoder candidates, fused by reciprocal rank, re-ranked by the cross-encoder.

The index is built offline from the product titles and saved next to the ranker (``search/``):
the bm25s index files, ``vectors.npy`` (bi-encoder product vectors, float32, L2-normalised) and
``items.json`` (product ids and titles, in index order).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from shoprec.text import light_stem

RRF_K = 60
_WORD = re.compile(r"(?u)\b\w\w+\b")


def bm25_tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=light_stem, return_ids=False, show_progress=False)


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal rank fusion: document order by sum over rankings of 1 / (k + rank), rank from 1."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for r, d in enumerate(ranking, start=1):
            score[d] = score.get(d, 0.0) + 1.0 / (k + r)
    return sorted(score, key=lambda d: -score[d])


class SearchIndex:
    def __init__(self, item_ids: list[str], titles: list[str], bm25, vectors: np.ndarray | None, ranker=None):
        self.item_ids, self.titles, self.bm25, self.vectors, self.ranker = list(item_ids), list(titles), bm25, vectors, ranker

    @classmethod
    def build(cls, item_ids: list[str], titles: list[str], ranker=None, vectors: np.ndarray | None = None) -> SearchIndex:
        """BM25 over ``titles``; product vectors from ``ranker.encode`` unless given (None without a bi-encoder)."""
        import bm25s

        bm25 = bm25s.BM25()
        bm25.index(bm25_tokenize(titles), show_progress=False)
        if vectors is None and ranker is not None and getattr(ranker, "bi", None) is not None:
            vectors = ranker.encode(list(titles))
        return cls(item_ids, titles, bm25, vectors, ranker)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder / "bm25"), show_progress=False)
        if self.vectors is not None:
            np.save(folder / "vectors.npy", self.vectors.astype(np.float32), allow_pickle=False)
        (folder / "items.json").write_text(json.dumps({"item_ids": self.item_ids, "titles": self.titles}))
        return folder

    @classmethod
    def load(cls, folder: str | Path, ranker=None) -> SearchIndex:
        import bm25s

        folder = Path(folder)
        items = json.loads((folder / "items.json").read_text())
        bm25 = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
        vec = np.load(folder / "vectors.npy", allow_pickle=False) if (folder / "vectors.npy").exists() else None
        return cls(items["item_ids"], items["titles"], bm25, vec, ranker)

    # -------------------------------------------------------------- candidates
    def bm25_topk(self, queries: list[str], k: int) -> list[list[int]]:
        k = min(k, len(self.titles))
        toks = bm25_tokenize(queries)
        known = set(self.bm25.vocab_dict) if getattr(self.bm25, "vocab_dict", None) else None
        toks = [[t for t in q if known is None or t in known] for q in toks]
        out: list[list[int]] = [[] for _ in queries]
        ask = [i for i, q in enumerate(toks) if q]  # bm25s cannot take a query with no known word
        if ask:
            docs, scores = self.bm25.retrieve([toks[i] for i in ask], k=k, show_progress=False, n_threads=1)
            for i, dr, sr in zip(ask, docs, scores):
                out[i] = [int(d) for d, s in zip(dr, sr) if s > 0]
        return out

    def dense_topk(self, queries: list[str], k: int) -> list[list[int]]:
        if self.vectors is None or self.ranker is None:
            return [[] for _ in queries]
        q = self.ranker.encode(list(queries))
        k = min(k, len(self.titles))
        out = []
        for i in range(0, len(q), 256):
            s = q[i:i + 256] @ self.vectors.T
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            for row, cand in zip(s, top):
                out.append([int(d) for d in cand[np.argsort(-row[cand], kind="stable")]])
        return out

    def candidates(self, queries: list[str], depth: int = 50, per_retriever: int = 100) -> list[list[int]]:
        """Fused (RRF) BM25 + bi-encoder candidates, ``depth`` per query, as index positions."""
        lex = self.bm25_topk(queries, per_retriever)
        dense = self.dense_topk(queries, per_retriever)
        return [rrf([a, b])[:depth] for a, b in zip(lex, dense)]

    def search(self, query: str, k: int = 10, rerank_depth: int = 50) -> list[dict]:
        """Top ``k`` products for ``query``: fused candidates, the first ``rerank_depth`` re-ranked by the cross-encoder."""
        cand = self.candidates([query], depth=max(rerank_depth, k))[0]
        head, tail = cand[:rerank_depth], cand[rerank_depth:]
        if self.ranker is not None and head:
            s = self.ranker.score([query] * len(head), [self.titles[d] for d in head], head=self.ranker.rank_head)
            order = np.argsort(-s, kind="stable")
            head = [head[j] for j in order]
            scores = [float(s[j]) for j in order]
        else:
            scores = [1.0 / (RRF_K + r) for r in range(1, len(head) + 1)]
        rows = [{"item_id": self.item_ids[d], "title": self.titles[d], "score": sc} for d, sc in zip(head, scores)]
        rows += [{"item_id": self.item_ids[d], "title": self.titles[d], "score": None} for d in tail]
        return rows[:k]

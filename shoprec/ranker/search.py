"""Product search: BM25 (bm25s) + bi-encoder candidates, fused, re-ranked by the cross-encoder.

Fusion and re-ranking follow the ranker's :class:`~shoprec.ranker.config.SearchSettings`: by default the
standardised BM25 score and cosine are averaged over the union of both top-100 lists (on Home Depot this
beat reciprocal rank fusion on the validation queries), and the re-ranked head may blend the
cross-encoder's score with the fused one.

The index is built offline from the product titles and saved next to the ranker (``search/``):
the bm25s index files, ``vectors.npy`` (bi-encoder product vectors, float32, L2-normalised) and
``items.json`` (product ids and titles, in index order).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from shoprec import metrics
from shoprec.ranker.config import SearchSettings
from shoprec.text import light_stem

RRF_K = 60
_WORD = re.compile(r"(?u)\b\w\w+\b")


def bm25_tokenize(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=light_stem, return_ids=False, show_progress=False)


def bm25_index(titles: list[str], settings: SearchSettings | None = None):
    """A bm25s index of ``titles`` with the settings' BM25 variant and parameters."""
    import bm25s

    settings = settings or SearchSettings()
    if settings.bm25_method not in ("lucene", "robertson", "atire"):
        raise ValueError(f"bm25_method must be lucene, robertson or atire, not {settings.bm25_method!r} "
                         "(bm25l and bm25+ score products that contain no query word)")
    bm25 = bm25s.BM25(method=settings.bm25_method, k1=settings.bm25_k1, b=settings.bm25_b)
    bm25.index(bm25_tokenize(titles), show_progress=False)
    return bm25


def rrf_scores(rankings: list[list[int]], k: int = RRF_K) -> dict[int, float]:
    """Reciprocal rank fusion score of each document: sum over rankings of 1 / (k + rank), rank from 1."""
    score: dict[int, float] = {}
    for ranking in rankings:
        for r, d in enumerate(ranking, start=1):
            score[d] = score.get(d, 0.0) + 1.0 / (k + r)
    return score


def blend(cross: np.ndarray, fused, weight: float) -> np.ndarray:
    """Sort key of a re-ranked head: ``weight * z(cross) + (1 - weight) * z(fused)``; the cross scores alone at 1."""
    if fused is None or weight >= 1.0:
        return np.asarray(cross)
    return weight * metrics.standardised(cross) + (1.0 - weight) * metrics.standardised(np.asarray(fused)[:len(cross)])


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[int]:
    """Reciprocal rank fusion: documents by :func:`rrf_scores`, best first (ties: first seen first)."""
    score = rrf_scores(rankings, k)
    return sorted(score, key=lambda d: -score[d])


class SearchIndex:
    """BM25 + bi-encoder candidates, fused; the first ``rerank_depth`` re-scored by the cross-encoder.

    ``ranker`` supplies the cross-encoder (``ranker.cross``) and, unless ``encoder`` is given, the
    bi-encoder that embeds queries (``ranker.bi``); ``encoder`` is any object with ``bi``, ``tokenizer``
    and ``cfg.bi_max_len`` (a :class:`~shoprec.ranker.models.Ranker`), for a bi-encoder saved apart.
    Query vectors must come from the same bi-encoder as ``vectors``. ``settings``: fusion and re-rank
    blend (default: the ranker's ``cfg.search``).
    """

    def __init__(self, item_ids: list[str], titles: list[str], bm25, vectors: np.ndarray | None, ranker=None,
                 encoder=None, settings: SearchSettings | None = None):
        self.item_ids, self.titles, self.bm25, self.vectors, self.ranker = list(item_ids), list(titles), bm25, vectors, ranker
        self.encoder = encoder if encoder is not None else ranker
        if settings is None:
            settings = getattr(getattr(ranker, "cfg", None), "search", None) or SearchSettings()
        if settings.fusion not in ("zscore", "rrf"):
            raise ValueError(f"unknown search fusion {settings.fusion!r} (zscore or rrf)")
        self.settings = settings
        self._tvec = None  # torch view of ``vectors``, made on first use
        self._qvec = None  # int8 product vectors (quantize_vectors), used instead when set
        self._vocab = set(bm25.vocab_dict) if getattr(bm25, "vocab_dict", None) else None

    @classmethod
    def build(cls, item_ids: list[str], titles: list[str], ranker=None, vectors: np.ndarray | None = None,
              encoder=None, settings: SearchSettings | None = None) -> SearchIndex:
        """BM25 over ``titles``; product vectors from the bi-encoder unless given (None without a bi-encoder)."""
        settings = settings or getattr(getattr(ranker, "cfg", None), "search", None) or SearchSettings()
        bm25 = bm25_index(titles, settings)
        enc = encoder if encoder is not None else ranker
        if vectors is None and enc is not None and getattr(enc, "bi", None) is not None:
            vectors = enc.encode(list(titles))
        return cls(item_ids, titles, bm25, vectors, ranker, encoder, settings)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.bm25.save(str(folder / "bm25"), show_progress=False)
        if self.vectors is not None:
            np.save(folder / "vectors.npy", self.vectors.astype(np.float32), allow_pickle=False)
        (folder / "items.json").write_text(json.dumps({"item_ids": self.item_ids, "titles": self.titles}))
        return folder

    @classmethod
    def load(cls, folder: str | Path, ranker=None, encoder=None) -> SearchIndex:
        import bm25s

        folder = Path(folder)
        items = json.loads((folder / "items.json").read_text())
        bm25 = bm25s.BM25.load(str(folder / "bm25"), show_progress=False)
        vec = np.load(folder / "vectors.npy", allow_pickle=False) if (folder / "vectors.npy").exists() else None
        return cls(items["item_ids"], items["titles"], bm25, vec, ranker, encoder)

    # -------------------------------------------------------------- what it can do
    @property
    def has_dense(self) -> bool:
        return self.vectors is not None and self.encoder is not None and getattr(self.encoder, "bi", None) is not None

    @property
    def has_cross(self) -> bool:
        return self.ranker is not None and getattr(self.ranker, "cross", None) is not None

    @property
    def retrievers(self) -> list[str]:
        return ["bm25", "bi-encoder"] if self.has_dense else ["bm25"]

    # -------------------------------------------------------------- candidates
    def _known_tokens(self, queries: list[str]) -> list[list[str]]:
        known = self._vocab
        return [[t for t in q if known is None or t in known] for q in bm25_tokenize(queries)]

    def bm25_topk(self, queries: list[str], k: int) -> list[list[int]]:
        k = min(k, len(self.titles))
        toks = self._known_tokens(queries)
        out: list[list[int]] = [[] for _ in queries]
        ask = [i for i, q in enumerate(toks) if q]  # bm25s cannot take a query with no known word
        if ask:
            docs, scores = self.bm25.retrieve([toks[i] for i in ask], k=k, show_progress=False, n_threads=1)
            for i, dr, sr in zip(ask, docs, scores):
                out[i] = [int(d) for d, s in zip(dr, sr) if s > 0]
        return out

    def encode_queries(self, queries: list[str]):
        """Bi-encoder vectors of ``queries`` (torch, (Q, hidden)): one forward per 256 queries, no sorting."""
        import torch

        from shoprec.ranker.models import tokenize_texts

        enc = self.encoder
        out = []
        with torch.inference_mode():
            for i in range(0, len(queries), 256):
                batch = tokenize_texts(enc.tokenizer, queries[i:i + 256], enc.cfg.bi_max_len)
                out.append(enc.bi(**batch).float())
        return torch.cat(out)

    def quantize_vectors(self) -> SearchIndex:
        """Score products with int8 copies of their vectors (per-product scale; a quarter of the memory traffic
        of the float32 dot products, which dominates with tens of thousands of products)."""
        import torch

        if self.vectors is not None:
            lin = torch.nn.Linear(self.vectors.shape[1], self.vectors.shape[0], bias=False)
            lin.weight.data = torch.from_numpy(np.array(self.vectors, dtype=np.float32))
            self._qvec = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(lin).eval(), {torch.nn.Linear},
                                                                dtype=torch.qint8)
        return self

    def dense_topk(self, queries: list[str], k: int) -> list[list[int]]:
        """Top ``k`` products by dot product with the query vectors (torch matmul: torch's thread setting holds)."""
        if not self.has_dense:
            return [[] for _ in queries]
        return self._dense(queries, k)[1]

    def _dense(self, queries: list[str], k: int):
        """(query vectors, top ``k`` products per query)."""
        import torch

        if self._tvec is None and self._qvec is None:
            self._tvec = torch.from_numpy(np.ascontiguousarray(self.vectors, dtype=np.float32))
        q = self.encode_queries(list(queries))
        k = min(k, len(self.titles))
        out = []
        with torch.inference_mode():
            for i in range(0, len(q), 256):
                s = self._qvec(q[i:i + 256]) if self._qvec is not None else q[i:i + 256] @ self._tvec.T
                top = torch.topk(s, k, dim=1, sorted=True).indices
                out.extend(row.tolist() for row in top)
        return q, out

    def fused(self, queries: list[str], depth: int = 50, per_retriever: int | None = None
              ) -> list[tuple[list[int], list[float]]]:
        """Per query: BM25's top ``per_retriever`` and the bi-encoder's, fused (``settings.fusion``), the first
        ``depth``, as (index positions, fused scores). Without a bi-encoder: BM25's list, by RRF score."""
        n = per_retriever or self.settings.per_retriever
        lex = self.bm25_topk(queries, n)
        if not self.has_dense:
            return [(a[:depth], [1.0 / (RRF_K + r) for r in range(1, len(a[:depth]) + 1)]) for a in lex]
        qvecs, dense = self._dense(queries, n)
        if self.settings.fusion == "rrf":
            out = []
            for a, b in zip(lex, dense):
                score = rrf_scores([a, b])
                docs = sorted(score, key=lambda d: -score[d])[:depth]
                out.append((docs, [score[d] for d in docs]))
            return out
        w = self.settings.bm25_weight
        qvecs = qvecs.numpy()
        out = []
        for toks, a, b, qv in zip(self._known_tokens(queries), lex, dense, qvecs):
            cand = np.array(list(dict.fromkeys(a + b)), dtype=np.int64)  # BM25's order first, for stable ties
            if not len(cand):
                out.append(([], []))
                continue
            lexical = self.bm25.get_scores(toks)[cand] if toks else np.zeros(len(cand))
            cosine = self.vectors[cand] @ qv
            score = w * metrics.standardised(lexical) + (1.0 - w) * metrics.standardised(cosine)
            order = np.argsort(-score, kind="stable")[:depth]
            out.append(([int(d) for d in cand[order]], [float(x) for x in score[order]]))
        return out

    def candidates(self, queries: list[str], depth: int = 50, per_retriever: int | None = None) -> list[list[int]]:
        """Fused BM25 + bi-encoder candidates, ``depth`` per query, as index positions."""
        return [docs for docs, _ in self.fused(queries, depth, per_retriever)]

    # -------------------------------------------------------------- re-ranking
    def score_pairs(self, query: str, docs: list[int], buckets: int = 1) -> np.ndarray:
        """Cross-encoder scores of (query, title) for ``docs``, in the given order, with the ranker's rank head.

        The pairs are tokenised once (``cfg.max_len``, longest first cut, as in training), sorted by
        length and run in ``buckets`` forwards padded only to their own longest pair.
        """
        import torch

        r = self.ranker
        if not docs:
            return np.zeros(0, dtype=np.float32)
        enc = r.tokenizer([query] * len(docs), [self.titles[d] for d in docs], truncation="longest_first",
                          max_length=r.cfg.max_len, padding=False)
        order = np.argsort([len(x) for x in enc["input_ids"]], kind="stable")
        out = np.zeros(len(docs), dtype=np.float32)
        head = r.rank_head
        with torch.inference_mode():
            for part in np.array_split(order, max(1, min(buckets, len(docs)))):
                batch = r.tokenizer.pad({k: [enc[k][j] for j in part] for k in enc.keys()}, return_tensors="pt")
                click, aux = r.cross(**{k: v.to(getattr(r, "device", "cpu")) for k, v in batch.items()})
                out[part] = r.head_scores(click, aux, head).cpu().numpy()
        return out

    def rerank(self, query: str, cand: list[int], rerank_depth: int, fused: list[float] | None = None
               ) -> tuple[list[int], list[float | None]]:
        """``cand`` with its first ``rerank_depth`` re-ordered (see :meth:`rerank_scored`); the cross-encoder's
        scores, None below the depth."""
        docs, _, cross = self.rerank_scored(query, cand, rerank_depth, fused)
        return docs, cross

    def rerank_scored(self, query: str, cand: list[int], rerank_depth: int, fused: list[float] | None = None
                      ) -> tuple[list[int], list[float], list[float | None]]:
        """``cand`` with its first ``rerank_depth`` re-ordered by the cross-encoder, blended with the ``fused``
        scores by ``settings.rerank_weight`` when they are given. Returns the documents, the score each is
        ordered by (the blend in the re-ranked head, the fused score below it), and the cross-encoder's own
        score (None below the depth)."""
        fused_of = dict(zip(cand, fused)) if fused is not None else {}
        if not self.has_cross or rerank_depth <= 0 or not cand:
            return list(cand), [fused_of.get(d, 0.0) for d in cand], [None] * len(cand)
        head, tail = cand[:rerank_depth], cand[rerank_depth:]
        s = self.score_pairs(query, head)
        by = blend(s, fused, self.settings.rerank_weight)
        order = np.argsort(-by, kind="stable")
        return ([head[j] for j in order] + list(tail), [float(by[j]) for j in order] + [fused_of.get(d, 0.0) for d in tail],
                [float(s[j]) for j in order] + [None] * len(tail))

    def search(self, query: str, k: int = 10, rerank_depth: int = 50) -> list[dict]:
        """Top ``k`` products for ``query``: fused candidates, the first ``rerank_depth`` re-ranked by the cross-encoder.

        ``score``: what the list is ordered by (the blend of cross-encoder and fused scores for re-ranked
        products, which come first; the fused score below the depth); ``cross``: the cross-encoder's own score
        (None where it did not score the product); ``fused``: the fused retrieval score.
        """
        cand, fused = self.fused([query], depth=max(rerank_depth, k))[0]
        by_doc = dict(zip(cand, fused))
        docs, scores, cross = self.rerank_scored(query, cand, rerank_depth, fused)
        return [{"item_id": self.item_ids[d], "title": self.titles[d], "score": sc, "cross": cr, "fused": by_doc[d]}
                for d, sc, cr in zip(docs[:k], scores[:k], cross[:k])]

